// Package server runs the sidecar: it loads the policy, serves Check over
// gRPC (TCP or a Unix socket) and health over HTTP and gRPC, and stops
// gracefully.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"

	"github.com/extauthz/extauthz/internal/check"
	"github.com/extauthz/extauthz/internal/clientip"
	"github.com/extauthz/extauthz/internal/engine"
	"github.com/extauthz/extauthz/internal/policy"
	"github.com/extauthz/extauthz/policies"
)

// Config is the process configuration.
type Config struct {
	GRPCAddr       string        // host:port or unix:///path
	AdminAddr      string        // host:port for /healthz, /readyz
	PolicyDir      string        // empty: the embedded policy and demo data
	XFFTrustedHops int           // must equal Envoy's xff_num_trusted_hops
	DrainTimeout   time.Duration // graceful stop budget
}

// Defaults.
const (
	DefaultGRPCAddr  = "127.0.0.1:9001"
	DefaultAdminAddr = "127.0.0.1:9002"
)

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.GRPCAddr == "" {
		errs = append(errs, errors.New("grpc-addr: required"))
	}
	if c.XFFTrustedHops < 0 || c.XFFTrustedHops > 16 {
		errs = append(errs, fmt.Errorf("xff-trusted-hops: %d is outside 0..16", c.XFFTrustedHops))
	}
	if c.PolicyDir != "" {
		if st, err := os.Stat(c.PolicyDir); err != nil || !st.IsDir() {
			errs = append(errs, fmt.Errorf("policy-dir: %q is not a readable directory", c.PolicyDir))
		}
	}
	return errors.Join(errs...)
}

// LoadSource reads the configured policy source.
func LoadSource(dir string) (*policy.Source, error) {
	if dir == "" {
		return policy.LoadFS(policies.FS, "embedded:policies")
	}
	return policy.LoadDir(dir)
}

// BuildEngine loads and compiles the policy with JWT support.
func BuildEngine(ctx context.Context, dir string) (*engine.Engine, error) {
	src, err := LoadSource(dir)
	if err != nil {
		return nil, err
	}
	return engine.Build(ctx, src, engine.Options{BuildTokens: BuildTokens})
}

// Listen opens host:port or unix:///path.
func Listen(addr string) (net.Listener, error) {
	if p, ok := strings.CutPrefix(addr, "unix://"); ok {
		_ = os.Remove(p)
		return net.Listen("unix", p)
	}
	return net.Listen("tcp", addr)
}

// NewGRPCServer builds the gRPC server with deliberate limits.
func NewGRPCServer(chk *check.Server, hs *health.Server) *grpc.Server {
	g := grpc.NewServer(
		grpc.MaxRecvMsgSize(4<<20), // a CheckRequest with a buffered body stays far below
		grpc.MaxConcurrentStreams(1024),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	)
	authv3.RegisterAuthorizationServer(g, chk)
	healthpb.RegisterHealthServer(g, hs)
	return g
}

// Run serves until ctx is cancelled, then drains.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	eng, err := BuildEngine(ctx, cfg.PolicyDir)
	if err != nil {
		return fmt.Errorf("load policy: %w", err)
	}
	var holder engine.Holder
	holder.Store(eng)
	log.Info("policy loaded", "origin", eng.Origin, "version", eng.Version, "routes", eng.Routes.Len(), "api_keys", eng.Keys.Len(), "profiles", len(eng.Profiles.Names()))

	chk := check.NewServer(&holder, clientip.Resolver{TrustedHops: cfg.XFFTrustedHops})
	chk.Log = log
	hs := health.NewServer()
	g := NewGRPCServer(chk, hs)

	lis, err := Listen(cfg.GRPCAddr)
	if err != nil {
		return fmt.Errorf("grpc-addr: %w", err)
	}
	ready := func() bool {
		e := holder.Current()
		return e != nil && (e.Tokens == nil || e.Tokens.Ready())
	}
	admin := &http.Server{Handler: AdminHandler(ready), ReadHeaderTimeout: 5 * time.Second}
	var adminLis net.Listener
	if cfg.AdminAddr != "" {
		if adminLis, err = net.Listen("tcp", cfg.AdminAddr); err != nil {
			lis.Close()
			return fmt.Errorf("admin-addr: %w", err)
		}
		go func() { _ = admin.Serve(adminLis) }()
	}
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("envoy.service.auth.v3.Authorization", healthpb.HealthCheckResponse_SERVING)
	log.Info("serving", "grpc", lis.Addr().String(), "admin", cfg.AdminAddr)

	errc := make(chan error, 1)
	go func() { errc <- g.Serve(lis) }()
	select {
	case err = <-errc:
	case <-ctx.Done():
		log.Info("shutting down: draining in-flight checks")
		hs.Shutdown()
		drain := cfg.DrainTimeout
		if drain <= 0 {
			drain = 10 * time.Second
		}
		done := make(chan struct{})
		go func() { g.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-time.After(drain):
			log.Warn("drain timeout; stopping")
			g.Stop()
		}
		err = nil
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = admin.Shutdown(sctx)
	if e := holder.Current(); e != nil {
		e.Close()
	}
	return err
}

// AdminHandler serves /healthz (live) and /readyz (ready once a policy has
// compiled and every JWKS source had its first fetch attempt).
func AdminHandler(ready func() bool) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}`))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if !ready() {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"status":"not ready"}`))
			return
		}
		_, _ = w.Write([]byte(`{"status":"ready"}`))
	})
	return mux
}
