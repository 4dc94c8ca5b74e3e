// Package server runs the sidecar: it loads and hot-reloads the policy,
// serves Check over gRPC (TCP, Unix socket, TLS/mTLS) and health, metrics and
// readiness over HTTP, and stops gracefully.
package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/extauthz/extauthz/internal/check"
	"github.com/extauthz/extauthz/internal/clientip"
	"github.com/extauthz/extauthz/internal/config"
	"github.com/extauthz/extauthz/internal/decisionlog"
	"github.com/extauthz/extauthz/internal/engine"
	"github.com/extauthz/extauthz/internal/grpcopts"
	"github.com/extauthz/extauthz/internal/metrics"
	"github.com/extauthz/extauthz/internal/policy"
	"github.com/extauthz/extauthz/internal/ratelimit"
	"github.com/extauthz/extauthz/internal/source"
)

// authService is the gRPC health service name of Check.
const authService = "envoy.service.auth.v3.Authorization"

// Build compiles a policy source with JWT support.
func Build(ctx context.Context, src *policy.Source) (*engine.Engine, error) {
	return engine.Build(ctx, src, engine.Options{BuildTokens: BuildTokens})
}

// BuildEngine loads and compiles a policy directory ("" = embedded).
func BuildEngine(ctx context.Context, dir string) (*engine.Engine, error) {
	src, _, err := source.New(dir, "", "", nil).Load(ctx)
	if err != nil {
		return nil, err
	}
	return Build(ctx, src)
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
func NewGRPCServer(chk authv3.AuthorizationServer, hs *health.Server, extra ...grpc.ServerOption) *grpc.Server {
	g := grpc.NewServer(append(grpcopts.Server(), extra...)...)
	registerAuthorization(g, chk)
	healthpb.RegisterHealthServer(g, hs)
	return g
}

// wireChecker answers a Check with a *authv3.CheckResponse or with one
// already encoded (wire.Encoded), as check.Server.CheckWire does.
type wireChecker interface {
	CheckWire(ctx context.Context, req *authv3.CheckRequest) any
}

// registerAuthorization registers chk as the Authorization service. A
// wireChecker is registered through a copy of the generated service
// description whose Check handler returns what CheckWire returns; the
// server's codec (grpcopts, internal/wire) sends encoded responses as they are.
func registerAuthorization(g *grpc.Server, chk authv3.AuthorizationServer) {
	wc, ok := chk.(wireChecker)
	if !ok {
		authv3.RegisterAuthorizationServer(g, chk)
		return
	}
	desc := authv3.Authorization_ServiceDesc
	desc.Methods = []grpc.MethodDesc{{
		MethodName: "Check",
		Handler: func(_ any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
			in := new(authv3.CheckRequest)
			if err := dec(in); err != nil {
				return nil, err
			}
			if interceptor == nil {
				return wc.CheckWire(ctx, in), nil
			}
			info := &grpc.UnaryServerInfo{Server: chk, FullMethod: authv3.Authorization_Check_FullMethodName}
			return interceptor(ctx, in, info, func(ctx context.Context, req any) (any, error) {
				return wc.CheckWire(ctx, req.(*authv3.CheckRequest)), nil
			})
		},
	}}
	g.RegisterService(&desc, chk)
}

// TLSConfig builds the gRPC server TLS config; with a client CA it requires
// and verifies client certificates (mTLS).
func TLSConfig(certFile, keyFile, clientCA string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("tls-cert/tls-key: %w", err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if clientCA != "" {
		pem, err := os.ReadFile(clientCA)
		if err != nil {
			return nil, fmt.Errorf("tls-client-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls-client-ca: %s holds no PEM certificate", clientCA)
		}
		tc.ClientCAs, tc.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return tc, nil
}

// Run serves until ctx is cancelled, then drains.
func Run(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	verify, err := source.ReadVerify(cfg.BundlePubKey)
	if err != nil {
		return err
	}
	var holder engine.Holder
	m := metrics.New(func() metrics.Cache {
		if e := holder.Current(); e != nil {
			if c, ok := e.Tokens.(metrics.Cache); ok {
				return c
			}
		}
		return nil
	})
	rl := &source.Reloader{
		Loader: source.New(cfg.PolicyDir, cfg.BundleFile, cfg.BundleURL, verify),
		Build: func(ctx context.Context, src *policy.Source) (*engine.Engine, error) {
			return engine.Build(ctx, src, engine.Options{BuildTokens: buildTokens(m.JWKSFetched)})
		},
		Holder: &holder, Log: log,
	}
	rl.OnResult = func(ok bool) { m.Reloaded(ok, rl.Status().Version) }
	// The first version must load, except from a bundle service, which may
	// come up later: until then the sidecar is not ready and denies with 500.
	if err := rl.Reload(ctx); err != nil && cfg.BundleURL == "" {
		return fmt.Errorf("load policy: %w", err)
	}

	chk := check.NewServer(&holder, clientip.Resolver{TrustedHops: cfg.XFFTrustedHops})
	chk.Log, chk.Timeout = log, cfg.EvalTimeout
	chk.Observers = []check.Observer{m, decisionlog.New(log, cfg.DecisionLog, cfg.AllowSampleRate)}
	chk.LimiterOptions = ratelimit.Options{Metrics: m.RateLimit(), Logger: log}

	extra := grpcopts.Limit(cfg.MaxRequestBytes)
	if cfg.TLSCert != "" {
		tc, err := TLSConfig(cfg.TLSCert, cfg.TLSKey, cfg.TLSClientCA)
		if err != nil {
			return err
		}
		extra = append(extra, grpc.Creds(credentials.NewTLS(tc)))
	}
	hs := health.NewServer()
	g := NewGRPCServer(chk, hs, extra...)
	lis, err := Listen(cfg.GRPCAddr)
	if err != nil {
		return fmt.Errorf("grpc-addr: %w", err)
	}
	ready := func() (bool, string) {
		e := holder.Current()
		switch {
		case e == nil:
			return false, "no policy loaded yet"
		case e.Tokens != nil && !e.Tokens.Ready():
			return false, "waiting for the first JWKS fetch"
		}
		return true, ""
	}
	adminMux := AdminHandler(ready, rl.Status, m)
	if cfg.Pprof {
		mux := http.NewServeMux()
		mux.Handle("/", adminMux)
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		adminMux = mux
	}
	admin := &http.Server{Handler: adminMux, ReadHeaderTimeout: 5 * time.Second}
	if cfg.AdminAddr != "" {
		adminLis, err := net.Listen("tcp", cfg.AdminAddr)
		if err != nil {
			lis.Close()
			return fmt.Errorf("admin-addr: %w", err)
		}
		go func() { _ = admin.Serve(adminLis) }()
	}

	// Readiness also drives the gRPC health service.
	setHealth := func() {
		st := healthpb.HealthCheckResponse_NOT_SERVING
		if ok, _ := ready(); ok {
			st = healthpb.HealthCheckResponse_SERVING
		}
		hs.SetServingStatus("", st)
		hs.SetServingStatus(authService, st)
	}
	setHealth()
	hup := make(chan struct{}, 1)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGHUP)
	defer signal.Stop(sig)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-sig:
				select {
				case hup <- struct{}{}:
				default:
				}
			}
		}
	}()
	interval := cfg.ReloadInterval
	if cfg.BundleURL != "" {
		interval = cfg.BundlePoll
	}
	if cfg.PolicyDir == "" && cfg.BundleFile == "" && cfg.BundleURL == "" {
		interval = 0 // the embedded policy never changes
	}
	go rl.Run(ctx, interval, hup)
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				setHealth()
			}
		}
	}()
	log.Info("serving", "grpc", lis.Addr().String(), "admin", cfg.AdminAddr, "tls", cfg.TLSCert != "", "mtls", cfg.TLSClientCA != "")

	errc := make(chan error, 1)
	go func() { errc <- g.Serve(lis) }()
	select {
	case err = <-errc:
	case <-ctx.Done():
		err = drain(g, hs, cfg.DrainTimeout, log)
	}
	sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = admin.Shutdown(sctx)
	if e := holder.Current(); e != nil {
		e.Close()
	}
	log.Info("stopped")
	return err
}

// drain stops accepting, lets in-flight checks finish within budget, then stops.
func drain(g *grpc.Server, hs *health.Server, budget time.Duration, log *slog.Logger) error {
	log.Info("shutting down: draining in-flight checks", "budget", budget.String())
	hs.Shutdown()
	done := make(chan struct{})
	go func() { g.GracefulStop(); close(done) }()
	select {
	case <-done:
		return nil
	case <-time.After(budget):
		log.Warn("drain budget exceeded; stopping")
		g.Stop()
		return errors.New("drain budget exceeded")
	}
}

// AdminHandler serves /healthz (live), /readyz (ready once a policy has
// compiled and every JWKS source had its first fetch attempt; the body shows
// the serving version and the last reload error) and /metrics.
func AdminHandler(ready func() (bool, string), status func() source.Status, m *metrics.Metrics) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}`))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		ok, why := ready()
		body := struct {
			Status string        `json:"status"`
			Reason string        `json:"reason,omitempty"`
			Policy source.Status `json:"policy"`
		}{Status: "ready", Reason: why, Policy: status()}
		w.Header().Set("Content-Type", "application/json")
		if !ok {
			body.Status = "not ready"
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(body)
	})
	if m != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	}
	return mux
}
