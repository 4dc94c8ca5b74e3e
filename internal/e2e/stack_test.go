package e2e

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/extauthz/extauthz/internal/authn"
	"github.com/extauthz/extauthz/internal/check"
	"github.com/extauthz/extauthz/internal/clientip"
	"github.com/extauthz/extauthz/internal/engine"
	"github.com/extauthz/extauthz/internal/envoybin"
	"github.com/extauthz/extauthz/internal/envoytest"
	"github.com/extauthz/extauthz/internal/server"
	"github.com/extauthz/extauthz/internal/source"
)

const shippedEnvoyYAML = "../../envoy/envoy.yaml"

// Demo credentials from policies/data.json (the same as internal/check's tests).
const (
	demoKey      = "xa_demo_7Qm2vK9pL4sT8wZ1"
	readonlyKey  = "xa_demo_readonly_K3n8Vb"
	expiredKey   = "xa_demo_expired_P5r2Qd"
	revokedKey   = "xa_demo_revoked_T9w4Lm"
	suspendedKey = "xa_demo_suspended_H2c7Rf"
	tenant7Key   = "xa_demo_tenant7_A1b2Zy"
	aidellyKey   = "xa_demo_aidelly_W6x3Nq"
)

// Bearer tokens the faulty verifier answers itself. They have the JWT shape
// (three dot-separated parts) so the sidecar hands them to the verifier.
const (
	unavailableToken = "e2e.auth-unavailable.token"
	panicToken       = "e2e.internal-error.token"
)

// testNow is check.Server.Now in every e2e test.
var testNow = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

var (
	demoJWT    = mustRead("../../testdata/demo.jwt")
	expiredJWT = mustRead("../../testdata/demo_expired.jwt")
)

func mustRead(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		panic(err)
	}
	return strings.TrimSpace(string(b))
}

// faultyTokens wraps the engine's JWT verifier: one magic token reports the
// verifier unavailable, another panics (the check server turns a panic into
// internal_error); every other token is verified for real.
type faultyTokens struct{ engine.Tokens }

func (f faultyTokens) Verify(ctx context.Context, raw string) (authn.Status, *authn.Identity) {
	switch raw {
	case unavailableToken:
		return authn.Unavailable, nil
	case panicToken:
		panic("e2e: injected token verifier panic")
	}
	return f.Tokens.Verify(ctx, raw)
}

// stack is client -> real Envoy (envoy/envoy.yaml) -> in-process extauthz
// gRPC server -> echo upstream, all on 127.0.0.1.
//
// One Envoy serves the whole package (sharedFront): its ext_authz cluster
// points at a gRPC server whose Authorization service forwards to the
// current stack's check.Server, and its upstream cluster at an HTTP server
// forwarding to the current stack's Echo. newStack swaps in a fresh engine
// (fresh rate-limit counters) and a fresh Echo, so tests stay independent
// without paying for an Envoy start each. Tests in this package do not run
// in parallel.
type stack struct {
	sidecar *Sidecar     // the real StartSidecar server (dedicated stacks only)
	authz   *switchAuthz // the shared front's recorder (shared stacks only)
	echo    *Echo
	url     string // http://127.0.0.1:port of Envoy's listener
	envoy   *envoytest.Envoy
	client  *http.Client
}

// newEngine is the demo policy with the faulty token verifier.
func newEngine(t testing.TB) *engine.Engine {
	t.Helper()
	eng, err := source.Engine(context.Background(), "", engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(eng.Close)
	if eng.Tokens == nil {
		t.Fatal("demo engine has no JWT verifier")
	}
	eng.Tokens = faultyTokens{eng.Tokens}
	return eng
}

// newCheckServer is what StartSidecar serves, for the shared front.
func newCheckServer(eng *engine.Engine) *check.Server {
	var holder engine.Holder
	holder.Store(eng)
	chk := check.NewServer(&holder, clientip.Resolver{})
	chk.Now = func() time.Time { return testNow }
	chk.Timeout = 10 * time.Second
	chk.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	return chk
}

func newStack(t testing.TB) *stack { t.Helper(); return newStackOn(t, shippedFront) }

// newStackOn is newStack on the shared Envoy of one config variant.
func newStackOn(t testing.TB, v frontVariant) *stack {
	t.Helper()
	f := sharedFront(t, v)
	chk := newCheckServer(newEngine(t))
	echo := &Echo{}
	// A stack made inside a subtest of another test's stack (TestGolden's
	// primed cases) hands the front back to the outer one when it ends.
	prevChk, prevEcho := f.authz.set(chk), f.upstream.set(echo)
	t.Cleanup(func() { f.authz.set(prevChk); f.upstream.set(prevEcho) })
	s := &stack{authz: f.authz, echo: echo, url: "http://" + f.envoy.Addr("ingress_http"), envoy: f.envoy}
	s.client = &http.Client{Timeout: 15 * time.Second}
	t.Cleanup(s.client.CloseIdleConnections)
	return s
}

// useH2C makes the stack's client speak HTTP/2 with prior knowledge over
// cleartext (h2c), as gRPC clients and some proxies do.
func (s *stack) useH2C(t testing.TB) {
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	s.client = &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{Protocols: p}}
	t.Cleanup(s.client.CloseIdleConnections)
}

// newDedicatedStack runs its own Envoy on envoy/envoy.yaml (after mutate)
// in front of a real StartSidecar server and an Echo, for tests that stop
// the sidecar or change the Envoy config.
func newDedicatedStack(t testing.TB, mutate func(envoytest.Bootstrap)) *stack {
	t.Helper()
	bin := envoytest.Require(t)
	sc, err := StartSidecar(newEngine(t), SidecarOptions{Now: func() time.Time { return testNow }, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sc.Close)
	echo := &Echo{}
	up := httptest.NewServer(echo)
	t.Cleanup(up.Close)
	b := envoytest.Shipped(t, "envoy/envoy.yaml", map[string]string{"extauthz": sc.Addr, "upstream": strings.TrimPrefix(up.URL, "http://")})
	relaxTimeout(b)
	if mutate != nil {
		mutate(b)
	}
	e := envoytest.Start(t, bin, b)
	s := &stack{sidecar: sc, echo: echo, url: "http://" + e.Addr("ingress_http"), envoy: e, client: &http.Client{Timeout: 15 * time.Second}}
	t.Cleanup(s.client.CloseIdleConnections)
	return s
}

// relaxTimeout raises the shipped 250ms Check deadline to 10s: a slow
// -race evaluation on a loaded machine would otherwise be a 503. These
// tests are about what a decision looks like; the deadline itself is
// tested with the shipped value (TestSidecarSlowerThanEnvoyTimeout).
func relaxTimeout(b envoytest.Bootstrap) {
	for _, l := range b.Listeners() {
		if a := envoybin.HTTPFilter(envoybin.HCM(l), ".ExtAuthz"); a != nil {
			a["grpc_service"].(map[string]any)["timeout"] = "10s"
		}
	}
}

// frontVariant is a config the shared Envoys run: envoy/envoy.yaml,
// optionally edited.
type frontVariant struct {
	name   string
	mutate func(envoybin.Bootstrap)
}

// extAuthzSetting sets one field of the ext_authz filter's config.
func extAuthzSetting(key string, value any) func(envoybin.Bootstrap) {
	return func(b envoybin.Bootstrap) {
		for _, l := range b.Listeners() {
			envoybin.HTTPFilter(envoybin.HCM(l), ".ExtAuthz")[key] = value
		}
	}
}

var (
	shippedFront = frontVariant{name: "shipped"}
	// Envoy sends the headers as header_map (raw bytes) instead of the
	// headers string map.
	rawHeadersFront = frontVariant{"encode_raw_headers", extAuthzSetting("encode_raw_headers", true)}
	// Every checked request's body (up to 8 KiB, else 413) goes to the
	// sidecar, not only POST /v1/orders'.
	withBodyFront = frontVariant{"with_request_body", extAuthzSetting("with_request_body", map[string]any{"max_request_bytes": 8192, "allow_partial_message": false})}
)

// shadowedTenantsFront: every virtual host records, instead of enforcing,
// the tenant and missing-credential denials (context_extensions.shadow), as
// a team rolling tenant checks out would.
var shadowedTenantsFront = frontVariant{"shadowed_tenants", func(b envoybin.Bootstrap) {
	for _, l := range b.Listeners() {
		rc := envoybin.HCM(l)["route_config"].(map[string]any)
		for _, vh := range rc["virtual_hosts"].([]any) {
			cfg := vh.(map[string]any)["typed_per_filter_config"].(map[string]any)["envoy.filters.http.ext_authz"].(map[string]any)
			ce := cfg["check_settings"].(map[string]any)["context_extensions"].(map[string]any)
			ce["shadow"] = "tenant_forbidden,tenant_header_invalid,credentials_missing"
		}
	}
}}

// front is one shared Envoy.
type front struct {
	envoy    *envoytest.Envoy
	authz    *switchAuthz
	upstream *switchUpstream
}

var shared struct {
	sync.Mutex
	f       map[string]*front
	cleanup []func()
}

// sharedFront starts the Envoy of variant v on first use (stopped by TestMain).
func sharedFront(t testing.TB, v frontVariant) *front {
	t.Helper()
	bin := envoytest.Require(t)
	shared.Lock()
	defer shared.Unlock()
	if f := shared.f[v.name]; f != nil {
		return f
	}
	f := &front{authz: &switchAuthz{}, upstream: &switchUpstream{}}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := server.NewGRPCServer(f.authz, health.NewServer())
	go func() { _ = g.Serve(lis) }()
	shared.cleanup = append(shared.cleanup, g.Stop)
	up := httptest.NewServer(f.upstream)
	shared.cleanup = append(shared.cleanup, up.Close)

	b, err := envoybin.LoadBootstrap(shippedEnvoyYAML)
	if err == nil {
		err = b.Loopback("127.0.0.1:0", map[string]string{"extauthz": lis.Addr().String(), "upstream": strings.TrimPrefix(up.URL, "http://")})
	}
	if err != nil {
		t.Fatal(err)
	}
	relaxTimeout(b)
	if v.mutate != nil {
		v.mutate(b)
	}
	p, err := envoybin.Run(bin, b, envoybin.RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	shared.cleanup = append(shared.cleanup, p.Close)
	f.envoy = &envoytest.Envoy{Process: p}
	if shared.f == nil {
		shared.f = map[string]*front{}
	}
	shared.f[v.name] = f
	return f
}

func TestMain(m *testing.M) {
	code := m.Run()
	shared.Lock()
	for i := len(shared.cleanup) - 1; i >= 0; i-- {
		shared.cleanup[i]()
	}
	shared.Unlock()
	os.Exit(code)
}

// switchAuthz is the shared front's Authorization service: it records
// every CheckRequest and answers with the current check.Server (through
// CheckWire, the path the real gRPC server takes). Without one it fails
// the call (Envoy then answers status_on_error).
type switchAuthz struct {
	authv3.UnimplementedAuthorizationServer
	mu    sync.Mutex
	cur   *check.Server
	last  *authv3.CheckRequest
	calls int
}

// set installs c (counters reset) and returns the one it replaces.
func (s *switchAuthz) set(c *check.Server) *check.Server {
	s.mu.Lock()
	defer s.mu.Unlock()
	prev := s.cur
	s.cur, s.last, s.calls = c, nil, 0
	return prev
}

func (s *switchAuthz) current(req *authv3.CheckRequest) *check.Server {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.last = proto.Clone(req).(*authv3.CheckRequest)
	s.calls++
	return s.cur
}

func (s *switchAuthz) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	c := s.current(req)
	if c == nil {
		return nil, status.Error(codes.Unavailable, "e2e: no sidecar installed")
	}
	return c.Check(ctx, req)
}

// CheckWire makes switchAuthz a wire checker for server.NewGRPCServer.
func (s *switchAuthz) CheckWire(ctx context.Context, req *authv3.CheckRequest) any {
	c := s.current(req)
	if c == nil {
		return status.Error(codes.Unavailable, "e2e: no sidecar installed")
	}
	return c.CheckWire(ctx, req)
}

func (s *switchAuthz) lastCheck() *authv3.CheckRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

func (s *switchAuthz) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

// switchUpstream forwards to the current Echo.
type switchUpstream struct {
	mu  sync.Mutex
	cur *Echo
}

func (u *switchUpstream) set(e *Echo) *Echo {
	u.mu.Lock()
	defer u.mu.Unlock()
	prev := u.cur
	u.cur = e
	return prev
}

func (u *switchUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.mu.Lock()
	e := u.cur
	u.mu.Unlock()
	if e == nil {
		http.Error(w, "e2e: no upstream installed", http.StatusTeapot)
		return
	}
	e.ServeHTTP(w, r)
}

// request describes one client request. Headers keep their order and may
// repeat a name (each entry is sent as its own header line).
type request struct {
	method  string
	host    string
	path    string
	headers [][2]string
	body    string
}

// response is what the client received.
type response struct {
	status int
	header http.Header
	body   []byte
}

func (s *stack) do(t testing.TB, r request) response {
	t.Helper()
	resp, err := s.try(t, r)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// try is do that returns the transport error (a reset stream, a closed
// connection) instead of failing the test.
func (s *stack) try(t testing.TB, r request) (response, error) {
	t.Helper()
	var body io.Reader
	if r.body != "" {
		body = strings.NewReader(r.body)
	}
	method := r.method
	if method == "" {
		method = http.MethodGet
	}
	req, err := http.NewRequest(method, s.url+r.path, body)
	if err != nil {
		t.Fatal(err)
	}
	if got := req.URL.RequestURI(); got != r.path {
		t.Fatalf("net/http would send %q, not %q", got, r.path)
	}
	if r.host != "" {
		req.Host = r.host
	}
	for _, h := range r.headers {
		// Set the map directly: no canonicalisation, repeated names stay
		// separate lines.
		req.Header[h[0]] = append(req.Header[h[0]], h[1])
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, err
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}, nil
}

// lastCheck is the CheckRequest Envoy sent for the last checked request on
// the shared front (nil when none since the stack started).
func (s *stack) lastCheck() *authv3.CheckRequest {
	if s.authz == nil {
		return nil
	}
	return s.authz.lastCheck()
}

// checks is how many Check calls the shared front's sidecar received.
func (s *stack) checks() int {
	if s.authz == nil {
		return -1
	}
	return s.authz.count()
}

// requestID is the x-request-id Envoy generated for the last request that
// reached the sidecar ("" when Envoy answered before the check).
func (s *stack) requestID() string {
	h := s.lastCheck().GetAttributes().GetRequest().GetHttp()
	if id := h.GetHeaders()["x-request-id"]; id != "" {
		return id
	}
	for _, hv := range h.GetHeaderMap().GetHeaders() { // encode_raw_headers
		if hv.GetKey() == "x-request-id" {
			return string(hv.GetRawValue())
		}
	}
	return ""
}
