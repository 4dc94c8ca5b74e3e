// Package server runs the sidecar: it loads and hot-reloads the policy,
// serves Check over gRPC (TCP, Unix socket, TLS/mTLS) and health, metrics and
// readiness over HTTP, and stops gracefully.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/extauthz/extauthz/internal/authn/rediskeys"
	"github.com/extauthz/extauthz/internal/check"
	"github.com/extauthz/extauthz/internal/clientip"
	"github.com/extauthz/extauthz/internal/config"
	"github.com/extauthz/extauthz/internal/decisionlog"
	"github.com/extauthz/extauthz/internal/engine"
	"github.com/extauthz/extauthz/internal/grpcopts"
	"github.com/extauthz/extauthz/internal/logthrottle"
	"github.com/extauthz/extauthz/internal/metrics"
	"github.com/extauthz/extauthz/internal/policy"
	"github.com/extauthz/extauthz/internal/ratelimit"
	"github.com/extauthz/extauthz/internal/source"
)

// authService is the gRPC health service name of Check.
const authService = "envoy.service.auth.v3.Authorization"

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

// Check deadline: WithDeadline bounds a whole Check, not only the policy
// evaluation (--eval-timeout): resolving the request, evaluating, the
// rate-limit backend and rendering all run under one context deadline, the
// earlier of the caller's (Envoy's grpc-timeout) and the check timeout. The
// check package fails closed on a context that is done, so a check that runs
// out of time is denied internal_error rather than answered late. The
// deadline's timer is made only when a check waits (deadline.go).

// WithDeadline wraps chk so that every Check runs under a context deadline
// of at most d. A chk that answers pre-encoded responses (CheckWire) keeps
// doing so.
func WithDeadline(chk authv3.AuthorizationServer, d time.Duration) authv3.AuthorizationServer {
	if d <= 0 {
		return chk
	}
	if wc, ok := chk.(wireChecker); ok {
		return deadlineWireChecker{deadlineChecker{chk, d}, wc}
	}
	return deadlineChecker{chk, d}
}

type deadlineChecker struct {
	authv3.AuthorizationServer
	d time.Duration
}

func (c deadlineChecker) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	cc := withCheckDeadline(ctx, c.d)
	defer cc.release()
	return c.AuthorizationServer.Check(cc, req)
}

type deadlineWireChecker struct {
	deadlineChecker
	wc wireChecker
}

func (c deadlineWireChecker) CheckWire(ctx context.Context, req *authv3.CheckRequest) any {
	cc := withCheckDeadline(ctx, c.d)
	defer cc.release()
	return c.wc.CheckWire(cc, req)
}

// ExposureWarnings names each listener that is reachable beyond this host
// and should not be: plaintext gRPC, the admin port (metrics, readiness)
// and, worse, /debug/pprof on a non-loopback address.
func ExposureWarnings(cfg config.Config) []string {
	var w []string
	if cfg.TLSCert == "" && !loopbackAddr(cfg.GRPCAddr) {
		w = append(w, fmt.Sprintf("grpc-addr %s is not a loopback address and serves plaintext gRPC: anyone who reaches it can ask for decisions; use TLS (mTLS) or bind to loopback or a unix socket", cfg.GRPCAddr))
	}
	if cfg.AdminAddr != "" && !loopbackAddr(cfg.AdminAddr) {
		w = append(w, fmt.Sprintf("admin-addr %s is not a loopback address: /metrics and /readyz (policy version, reload errors) are reachable from the network; keep the port private", cfg.AdminAddr))
		if cfg.Pprof {
			w = append(w, fmt.Sprintf("pprof is on and admin-addr %s is not a loopback address: /debug/pprof (heap contents, CPU profiles) is reachable from the network", cfg.AdminAddr))
		}
	}
	return w
}

// loopbackAddr tells whether a listen address stays on this host: a unix
// socket, localhost, or a loopback IP. An empty host (":9001"), 0.0.0.0 and
// :: listen on every interface.
func loopbackAddr(addr string) bool {
	if strings.HasPrefix(addr, "unix://") {
		return true
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// hooks let tests observe and drive the shutdown sequence without sleeping.
type hooks struct {
	// after returns a channel that fires after d (the prestop delay and the
	// drain budget); default time.After.
	after func(step string, d time.Duration) <-chan time.Time
	// event is told each shutdown step as it happens.
	event func(step string)
}

func (h hooks) wait(step string, d time.Duration) <-chan time.Time {
	if h.after != nil {
		return h.after(step, d)
	}
	return time.After(d)
}

func (h hooks) note(step string) {
	if h.event != nil {
		h.event(step)
	}
}

// Shutdown steps, in order (hooks.event).
const (
	stepNotReady = "not_ready" // health NOT_SERVING, /readyz 503; still serving
	stepPrestop  = "prestop"   // waiting for the prestop delay (hooks.after)
	stepDrain    = "drain"     // listener closed, in-flight checks finishing (hooks.after: the budget)
	stepStopped  = "stopped"   // the gRPC server has stopped
)

// Server is the sidecar: everything New builds from the configuration, and
// Run brings to life.
type Server struct {
	cfg       config.Config
	log       *slog.Logger
	faultLog  *slog.Logger // fault lines, throttled (logthrottle)
	adminAddr string       // the admin listener's address once bound
	throttle  *logthrottle.Handler
	metrics   *metrics.Metrics
	holder    engine.Holder
	reloader  *source.Reloader
	check     *check.Server
	// The candidate policy (nil without one): its own versions, compared
	// on a sample of live checks.
	candidate       *check.Candidate
	candidateLoader *source.Reloader
	quotas          *ratelimit.Quotas
	uploader        *decisionlog.Uploader // decision logs to a decision-log service; nil without one
	health          *health.Server
	grpc            *grpc.Server
	admin           *http.Server
	serving         atomic.Bool // the gRPC listener is up
	stopping        atomic.Bool
	healthMu        sync.Mutex // one readiness computed and published at a time
	hooks           hooks
}

// New builds the server from cfg: nothing listens and no policy is loaded
// until Run.
func New(cfg config.Config, log *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	verify, err := source.ReadVerify(cfg.BundlePubKey)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: log, health: health.NewServer()}
	s.metrics = metrics.New(func() metrics.Cache {
		if e := s.holder.Current(); e != nil {
			if c, ok := e.Tokens.(metrics.Cache); ok {
				return c
			}
		}
		return nil
	})
	// Fault logs (a Redis outage, checks failing closed, rejected TLS
	// clients, go-redis's own lines) repeat per request under a fault: they
	// are written once per message per interval, with the count dropped.
	// Decision logs and reload outcomes are not throttled.
	s.throttle = logthrottle.New(log.Handler(), logthrottle.Options{Interval: cfg.FaultLogInterval, Level: slog.LevelWarn, OnSuppress: s.metrics.LogSuppressed})
	s.faultLog = slog.New(s.throttle)

	s.quotas = ratelimit.NewQuotas(ratelimit.Options{Metrics: s.metrics.RateLimit(), Logger: s.faultLog})
	s.reloader = &source.Reloader{
		Loader: source.New(cfg.PolicyDir, cfg.BundleFile, cfg.BundleURL, verify),
		Build: func(ctx context.Context, src *policy.Source) (*engine.Engine, error) {
			return engine.Build(ctx, src, engine.Options{OnJWKSFetch: s.metrics.JWKSFetched, KeyStore: rediskeys.Options{Log: s.faultLog, Metrics: s.metrics.KeyStore()}, KeysProgress: func(keys, offset, total int) {
				// A million keys take a second or two: say how far it got.
				log.Info("loading API keys", "keys", keys, "bytes_read", offset, "bytes_total", total)
			}})
		},
		Holder: &s.holder, Log: log,
	}
	s.reloader.OnResult = func(ok bool) {
		s.metrics.Reloaded(ok, s.reloader.Status().Version)
		if e := s.holder.Current(); ok && e != nil {
			s.quotas.For(e.Limits) // the new version's plans, on the same counters
		}
	}

	s.check = check.NewServer(&s.holder, clientip.Resolver{TrustedHops: cfg.XFFTrustedHops})
	s.check.Log, s.check.Timeout, s.check.Quotas = s.faultLog, cfg.EvalTimeout, s.quotas
	dlog := decisionlog.New(log, cfg.DecisionLog, cfg.AllowSampleRate)
	dlog.Facts = cfg.DecisionLogFacts
	s.check.FullMetadata = cfg.ReplyMetadata == "full"
	s.check.Observers = []check.Observer{s.metrics, dlog}
	if cfg.DecisionLogServiceConfig != "" {
		b, err := decisionlog.ReadUploaderConfig(cfg.DecisionLogServiceConfig)
		if err != nil {
			return nil, err
		}
		opts := decisionlog.UploaderOptions{Config: b, Log: s.faultLog, Facts: cfg.DecisionLogFacts}
		if cfg.DecisionLogPolicy != "" {
			opts.Policies = []string{cfg.DecisionLogPolicy}
		}
		if s.uploader, err = decisionlog.NewUploader(opts); err != nil {
			return nil, err
		}
		s.metrics.SetDecisionLogUpload(func() metrics.DecisionLogUpload {
			st := s.uploader.Stats()
			return metrics.DecisionLogUpload{QueueFull: st.QueueFull, BufferFull: st.BufferFull, RateLimited: st.RateLimited,
				EncodingFailed: st.EncodingFailed, ChunksUploaded: st.ChunksUploaded, ChunksFailed: st.ChunksFailed}
		})
		s.check.Observers = append(s.check.Observers, s.uploader)
	}

	if cfg.CandidateDir != "" || cfg.CandidateBundleFile != "" || cfg.CandidateBundleURL != "" {
		var holder engine.Holder
		s.candidateLoader = &source.Reloader{
			Loader: source.New(cfg.CandidateDir, cfg.CandidateBundleFile, cfg.CandidateBundleURL, verify),
			Build: func(ctx context.Context, src *policy.Source) (*engine.Engine, error) {
				return engine.Build(ctx, src, engine.Options{})
			},
			Holder: &holder, Log: log.With("policy", "candidate"),
		}
		s.candidate = check.NewCandidate(&holder, clientip.Resolver{TrustedHops: cfg.XFFTrustedHops}, cfg.CandidateSampleRate, cfg.CandidateQueue)
		s.candidate.Log, s.candidate.Result, s.candidate.Dropped = log, s.metrics.CandidateCompared, s.metrics.CandidateDropped
		s.check.Candidate = s.candidate
	}

	extra := grpcopts.Limit(cfg.MaxRequestBytes)
	if cfg.TLSCert != "" {
		files, err := NewTLSFiles(cfg.TLSCert, cfg.TLSKey, cfg.TLSClientCA)
		if err != nil {
			return nil, err
		}
		files.Log = s.faultLog
		creds := ObserveHandshakes(credentials.NewTLS(files.Config()), func(reason string, remote net.Addr, err error) {
			s.metrics.TLSRejected(reason)
			s.faultLog.Warn("tls handshake rejected: "+reason, "remote", remote.String(), "error", err.Error())
		})
		extra = append(extra, grpc.Creds(creds))
	}
	s.grpc = NewGRPCServer(WithDeadline(s.check, cfg.CheckTimeout), s.health, extra...)
	s.admin = &http.Server{Handler: s.adminHandler(), ReadHeaderTimeout: 5 * time.Second}
	return s, nil
}

// Run serves until ctx is cancelled, then stops: not ready first (for
// --prestop-delay, still serving), then drains. Liveness (/healthz) is up
// before the first policy version loads; readiness follows it.
func Run(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	s, err := New(cfg, log)
	if err != nil {
		return err
	}
	return s.Run(ctx)
}

// Run runs s; see the package function Run.
func (s *Server) Run(ctx context.Context) error {
	flushCtx, stopFlush := context.WithCancel(context.WithoutCancel(ctx))
	flushed := make(chan struct{})
	go func() { s.throttle.Run(flushCtx); close(flushed) }()
	defer func() { stopFlush(); <-flushed }()
	ratelimit.SetClientLogger(s.faultLog)
	defer s.quotas.Close()
	for _, w := range ExposureWarnings(s.cfg) {
		s.log.Warn("exposed listener", "warning", w)
	}
	if limit, from := softMemoryLimit(os.Getenv, os.ReadFile); limit > 0 {
		debug.SetMemoryLimit(limit)
		s.log.Info("soft memory limit set to 90% of the container's (GOMEMLIMIT overrides)", "bytes", limit, "from", from)
	}

	if s.uploader != nil {
		if err := s.uploader.Start(ctx); err != nil {
			return err
		}
		// Stopped after the gRPC server (deferred first, run last): what
		// the last checks decided is uploaded within the drain budget.
		defer func() {
			c, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.DrainTimeout)
			defer cancel()
			s.uploader.Stop(c)
		}()
	}

	stopAdmin, err := s.serveAdmin()
	if err != nil {
		return err
	}
	defer stopAdmin()
	// The first version must load, except from a bundle service, which may
	// come up later: until then the sidecar is not ready and denies with 500.
	if err := s.reloader.Reload(ctx); err != nil && s.cfg.BundleURL == "" {
		return fmt.Errorf("load policy: %w", err)
	}
	defer func() {
		if e := s.holder.Current(); e != nil {
			e.Close()
		}
	}()
	if s.candidate != nil {
		// A candidate never holds up serving: until a version of it loads,
		// nothing is compared.
		if err := s.candidateLoader.Reload(ctx); err != nil {
			s.log.Warn("candidate policy not loaded", "error", err.Error())
		}
		defer func() {
			s.candidate.Close()
			if e := s.candidateLoader.Holder.Current(); e != nil {
				e.Close()
			}
		}()
	}
	lis, err := Listen(s.cfg.GRPCAddr)
	if err != nil {
		return fmt.Errorf("grpc-addr: %w", err)
	}
	s.serving.Store(true)
	s.setHealth()
	go s.watch(ctx)
	s.log.Info("serving", "grpc", lis.Addr().String(), "admin", s.adminAddr, "tls", s.cfg.TLSCert != "", "mtls", s.cfg.TLSClientCA != "")

	errc := make(chan error, 1)
	go func() { errc <- s.grpc.Serve(lis) }()
	select {
	case err = <-errc:
	case <-ctx.Done():
		err = s.shutdown(errc)
	}
	s.hooks.note(stepStopped)
	s.log.Info("stopped")
	return err
}

// ready is the readiness of /readyz and the gRPC health service.
func (s *Server) ready() (bool, string) {
	e := s.holder.Current()
	switch {
	case s.stopping.Load():
		return false, "shutting down"
	case e == nil:
		return false, "no policy loaded yet"
	case !s.serving.Load():
		return false, "gRPC listener not up yet"
	case e.Tokens != nil && !e.Tokens.Ready():
		return false, "waiting for the first JWKS fetch"
	}
	return true, ""
}

// setHealth publishes readiness on the gRPC health service.
func (s *Server) setHealth() {
	s.healthMu.Lock()
	defer s.healthMu.Unlock()
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if ok, _ := s.ready(); ok {
		st = healthpb.HealthCheckResponse_SERVING
	}
	s.health.SetServingStatus("", st)
	s.health.SetServingStatus(authService, st)
}

func (s *Server) adminHandler() http.Handler {
	h := AdminHandler(s.ready, s.reloader.Status, s.metrics)
	if !s.cfg.Pprof {
		return h
	}
	mux := http.NewServeMux()
	mux.Handle("/", h)
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// serveAdmin starts the admin listener (none when --admin-addr is empty);
// the returned func stops it.
func (s *Server) serveAdmin() (func(), error) {
	stop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = s.admin.Shutdown(ctx)
	}
	if s.cfg.AdminAddr == "" {
		return stop, nil
	}
	lis, err := net.Listen("tcp", s.cfg.AdminAddr)
	if err != nil {
		return nil, fmt.Errorf("admin-addr: %w", err)
	}
	s.adminAddr = lis.Addr().String() // the port bound, where the flag says :0
	go func() { _ = s.admin.Serve(lis) }()
	return stop, nil
}

// watch reloads the policy (interval, SIGHUP) and refreshes the health
// status until ctx is done.
func (s *Server) watch(ctx context.Context) {
	hup := make(chan struct{}, 1)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGHUP)
	defer signal.Stop(sig)
	interval := s.cfg.ReloadInterval
	if s.cfg.BundleURL != "" {
		interval = s.cfg.BundlePoll
	}
	if s.cfg.PolicyDir == "" && s.cfg.BundleFile == "" && s.cfg.BundleURL == "" {
		interval = 0 // the embedded policy never changes
	}
	go s.reloader.Run(ctx, interval, hup)
	if s.candidateLoader != nil {
		candidateInterval := s.cfg.ReloadInterval
		if s.cfg.CandidateBundleURL != "" {
			candidateInterval = s.cfg.BundlePoll
		}
		go s.candidateLoader.Run(ctx, candidateInterval, nil)
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-sig:
			select {
			case hup <- struct{}{}:
			default:
			}
		case <-t.C:
			s.setHealth()
		}
	}
}

// shutdown: not ready first, while still serving, so Envoy (gRPC health)
// and Kubernetes (/readyz) stop sending before the listener closes; then
// the prestop delay; then the drain.
func (s *Server) shutdown(errc <-chan error) error {
	s.stopping.Store(true)
	s.setHealth()
	s.hooks.note(stepNotReady)
	if d := s.cfg.PrestopDelay; d > 0 {
		s.log.Info("shutting down: not ready, still serving for the prestop delay", "prestop_delay", d.String())
		s.hooks.note(stepPrestop)
		select {
		case <-s.hooks.wait(stepPrestop, d):
		case err := <-errc:
			return err
		}
	}
	s.hooks.note(stepDrain)
	return drain(s.grpc, s.health, s.cfg.DrainTimeout, s.hooks.wait(stepDrain, s.cfg.DrainTimeout), s.log)
}

// run is Run with test hooks.
func run(ctx context.Context, cfg config.Config, log *slog.Logger, hk hooks) error {
	s, err := New(cfg, log)
	if err != nil {
		return err
	}
	s.hooks = hk
	return s.Run(ctx)
}

// drain stops accepting, lets in-flight checks finish until expired fires
// (the budget, for the log), then stops.
func drain(g *grpc.Server, hs *health.Server, budget time.Duration, expired <-chan time.Time, log *slog.Logger) error {
	log.Info("shutting down: draining in-flight checks", "budget", budget.String())
	hs.Shutdown()
	done := make(chan struct{})
	go func() { g.GracefulStop(); close(done) }()
	select {
	case <-done:
		return nil
	case <-expired:
		log.Warn("drain budget exceeded; stopping")
		g.Stop()
		<-done
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
