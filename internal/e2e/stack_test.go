package e2e

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/authn"
	"github.com/extauthz/extauthz/internal/engine"
	"github.com/extauthz/extauthz/internal/envoysim"
	"github.com/extauthz/extauthz/internal/server"
)

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

// stack is client -> harness (from envoy/envoy.yaml) -> in-process extauthz
// gRPC server -> echo upstream, all on 127.0.0.1.
type stack struct {
	sidecar *Sidecar
	filter  *envoysim.Filter
	echo    *Echo
	srv     *httptest.Server
	client  *http.Client
}

func newStack(t testing.TB) *stack {
	t.Helper()
	ctx := context.Background()
	eng, err := server.BuildEngine(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(eng.Close)
	if eng.Tokens == nil {
		t.Fatal("demo engine has no JWT verifier")
	}
	eng.Tokens = faultyTokens{eng.Tokens}

	sc, err := StartSidecar(eng, SidecarOptions{Now: func() time.Time { return testNow }, Timeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sc.Close)

	cfg, err := HarnessConfig(shippedEnvoyYAML)
	if err != nil {
		t.Fatal(err)
	}
	// The shipped 250ms deadline (pinned in TestHarnessConfigShipped) would
	// turn a slow -race evaluation into a 503; these tests are about what a
	// decision looks like, not about the deadline.
	cfg.Timeout = 10 * time.Second
	cfg.Target = sc.Addr
	s := &stack{sidecar: sc, echo: &Echo{}}
	cfg.Upstream = s.echo
	if s.filter, err = envoysim.New(cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.filter.Close() })

	s.srv = newHTTPTestServer(s.filter)
	t.Cleanup(s.srv.Close)
	s.client = &http.Client{Timeout: 15 * time.Second}
	t.Cleanup(s.client.CloseIdleConnections)
	return s
}

// newHTTPTestServer serves h on 127.0.0.1 with HTTP/1.1 and cleartext
// HTTP/2 (so gRPC clients can use the front too).
func newHTTPTestServer(h http.Handler) *httptest.Server {
	srv := httptest.NewUnstartedServer(h)
	// Envoy routes "OPTIONS *" like any request; net/http would answer it.
	srv.Config.DisableGeneralOptionsHandler = true
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetHTTP1(true)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	return srv
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
	var body io.Reader
	if r.body != "" {
		body = strings.NewReader(r.body)
	}
	method := r.method
	if method == "" {
		method = http.MethodGet
	}
	req, err := http.NewRequest(method, s.srv.URL+r.path, body)
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
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

// requestID is the x-request-id the harness generated for the last request
// that reached the sidecar ("" when Envoy answered before the check).
func (s *stack) requestID() string {
	return s.filter.LastDecision().CheckRequest.GetAttributes().GetRequest().GetHttp().GetHeaders()["x-request-id"]
}
