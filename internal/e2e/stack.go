package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/extauthz/extauthz/internal/check"
	"github.com/extauthz/extauthz/internal/clientip"
	"github.com/extauthz/extauthz/internal/engine"
	"github.com/extauthz/extauthz/internal/server"
)

// SidecarOptions tune StartSidecar. Zero values keep check.Server's defaults.
type SidecarOptions struct {
	Addr           string           // listen address; default "127.0.0.1:0"
	Now            func() time.Time // check.Server.Now
	Timeout        time.Duration    // check.Server.Timeout (evaluation budget)
	XFFTrustedHops int              // must equal the harness's xff_num_trusted_hops
	Log            *slog.Logger     // default: discard
}

// Sidecar is the real extauthz gRPC server (server.NewGRPCServer over a
// check.Server) serving one engine on a loopback port.
type Sidecar struct {
	Addr   string // host:port the gRPC server listens on
	Check  *check.Server
	Engine *engine.Engine

	grpc   *grpc.Server
	health *health.Server
	done   chan struct{}
	once   sync.Once
}

// StartSidecar serves eng until Close. The engine stays owned by the caller.
func StartSidecar(eng *engine.Engine, opts SidecarOptions) (*Sidecar, error) {
	var holder engine.Holder
	holder.Store(eng)
	chk := check.NewServer(&holder, clientip.Resolver{TrustedHops: opts.XFFTrustedHops})
	chk.Now = opts.Now
	chk.Timeout = opts.Timeout
	chk.Log = opts.Log
	if chk.Log == nil {
		chk.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	addr := opts.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("sidecar listen: %w", err)
	}
	hs := health.NewServer()
	s := &Sidecar{
		Addr: lis.Addr().String(), Check: chk, Engine: eng,
		grpc: server.NewGRPCServer(chk, hs), health: hs, done: make(chan struct{}),
	}
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("envoy.service.auth.v3.Authorization", healthpb.HealthCheckResponse_SERVING)
	go func() {
		defer close(s.done)
		_ = s.grpc.Serve(lis)
	}()
	return s, nil
}

// Close stops the server: gracefully within 2s, then hard.
func (s *Sidecar) Close() {
	s.once.Do(func() {
		s.health.Shutdown()
		stopped := make(chan struct{})
		go func() { s.grpc.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(2 * time.Second):
			s.grpc.Stop()
		}
		<-s.done
	})
}

// EchoRequest is what the upstream received.
type EchoRequest struct {
	Method string
	Path   string // request-target as received (path and query)
	Host   string
	Header http.Header
	Body   []byte
}

// Echo is the upstream behind the harness. It records every request and
// answers 200 with a compact JSON document naming the method, the path and
// the identity headers the sidecar set (x-auth-*).
type Echo struct {
	mu   sync.Mutex
	reqs []EchoRequest
}

// ServeHTTP implements http.Handler.
func (e *Echo) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	e.mu.Lock()
	e.reqs = append(e.reqs, EchoRequest{Method: r.Method, Path: r.RequestURI, Host: r.Host, Header: r.Header.Clone(), Body: body})
	e.mu.Unlock()

	identity := map[string]string{}
	for k, vs := range r.Header {
		if lk := strings.ToLower(k); strings.HasPrefix(lk, "x-auth-") {
			identity[lk] = strings.Join(vs, ",")
		}
	}
	out, _ := json.Marshal(struct {
		Upstream string            `json:"upstream"`
		Method   string            `json:"method"`
		Path     string            `json:"path"`
		Identity map[string]string `json:"identity"`
	}{"echo", r.Method, r.RequestURI, identity})
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(out)
}

// Requests returns a copy of everything received so far.
func (e *Echo) Requests() []EchoRequest {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.reqs)
}

// Count is the number of requests received.
func (e *Echo) Count() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.reqs)
}

// Last returns the most recent request; ok is false when there was none.
func (e *Echo) Last() (EchoRequest, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.reqs) == 0 {
		return EchoRequest{}, false
	}
	return e.reqs[len(e.reqs)-1], true
}
