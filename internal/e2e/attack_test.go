package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"

	"github.com/extauthz/extauthz/internal/engine"
	"github.com/extauthz/extauthz/internal/envoytest"
	"github.com/extauthz/extauthz/internal/source"
)

// Attack classes through real Envoy running the shipped config: each
// request is refused (by Envoy or by the sidecar) and never reaches the
// upstream, or is allowed with exactly what the policy approved.

// refused sends r and checks that it was not forwarded and got an error
// status; it returns the response.
func refused(t *testing.T, s *stack, r request) response {
	t.Helper()
	before := s.echo.Count()
	resp := s.do(t, r)
	if resp.status < 400 {
		t.Errorf("%s %s %v: status %d: %s", r.method, r.path, r.headers, resp.status, resp.body)
	}
	if s.echo.Count() != before {
		t.Errorf("%s %s %v: reached the upstream", r.method, r.path, r.headers)
	}
	return resp
}

// checkedPath is the path the sidecar was asked about for the last request.
func checkedPath(s *stack) string {
	return s.lastCheck().GetAttributes().GetRequest().GetHttp().GetPath()
}

// TestDotSegments: ".." and its percent-encodings are resolved by Envoy
// (normalize_path) before routing and the check; the sidecar sees the
// resolved path, which is the JWT-only admin route, and refuses the key.
func TestDotSegments(t *testing.T) {
	s := newStack(t)
	for _, p := range []string{
		"/v1/calls/../admin/users",
		"/v1/calls/%2e%2e/admin/users",
		"/v1/calls/%2E%2E/admin/users",
		"/v1/calls/.%2e/admin/users",
		"/v1/calls/./../admin/users",
		"/v1/calls/x/../../admin/users",
	} {
		resp := refused(t, s, request{path: p, headers: [][2]string{{"X-API-Key", demoKey}}})
		if got := checkedPath(s); got != "/v1/admin/users" {
			t.Errorf("%s: the sidecar saw %q, want /v1/admin/users", p, got)
		}
		if resp.status != http.StatusForbidden || !strings.Contains(string(resp.body), `"wrong_auth_mode"`) {
			t.Errorf("%s: %d %s", p, resp.status, resp.body)
		}
	}
}

// TestEscapedSlashesRejected: %2F and %5C in the path are refused by Envoy
// (path_with_escaped_slashes_action: REJECT_REQUEST) without a check.
func TestEscapedSlashesRejected(t *testing.T) {
	s := newStack(t)
	for _, p := range []string{"/v1/orders%2F17", "/v1/orders%2f17", "/v1/orders%5C17", "/v1/orders%5c17", "/v1%2Fadmin%2Fusers"} {
		resp := refused(t, s, request{path: p, headers: withKey(demoKey)})
		if resp.status != http.StatusBadRequest {
			t.Errorf("%s: status %d, want 400", p, resp.status)
		}
	}
	if n := s.checks(); n != 0 {
		t.Errorf("the sidecar was asked %d times", n)
	}
}

// TestMergedSlashes: //admin cannot dodge a rule written for /admin.
func TestMergedSlashes(t *testing.T) {
	s := newStack(t)
	for _, p := range []string{"//v1//admin//users", "/v1///admin/users", "//v1/admin/users/"} {
		refused(t, s, request{path: p, headers: [][2]string{{"X-API-Key", demoKey}}})
		if got := checkedPath(s); !strings.HasPrefix(got, "/v1/admin/users") || strings.Contains(got, "//") {
			t.Errorf("%s: the sidecar saw %q", p, got)
		}
	}
}

// TestSemicolonPaths: ";" survives Envoy's normalisation; the sidecar
// refuses it (path_invalid) on every route.
func TestSemicolonPaths(t *testing.T) {
	s := newStack(t)
	for _, p := range []string{"/v1/orders;x=1", "/v1/orders/17;jsessionid=1", "/v1/..;/admin/users", "/healthz;x"} {
		refused(t, s, request{path: p, headers: withKey(demoKey)})
	}
}

// TestUnderscoreHeaderNames: headers_with_underscores_action REJECT_REQUEST
// refuses any header name with "_" (HTTP/1.1: 400; HTTP/2: stream reset).
func TestUnderscoreHeaderNames(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		s := newStack(t)
		if h2 {
			s.useH2C(t)
		}
		for _, name := range []string{"X_Tenant_Id", "X_API_Key", "x_auth_subject", "Authorization_"} {
			r := request{path: "/v1/orders", headers: append(withKey(demoKey), [2]string{name, "43"})}
			resp, err := s.try(t, r)
			switch {
			case h2 && err == nil:
				t.Errorf("h2 %s: status %d, want a stream reset", name, resp.status)
			case !h2 && (err != nil || resp.status != http.StatusBadRequest):
				t.Errorf("h1 %s: %v %d, want 400", name, err, resp.status)
			}
		}
		if s.echo.Count() != 0 || s.checks() != 0 {
			t.Errorf("h2=%v: upstream %d, checks %d", h2, s.echo.Count(), s.checks())
		}
	}
}

// TestCredentialHeaderSmuggling: two credentials in one request, as
// repeated header lines (Envoy joins them with ",") or joined by the
// client, are refused, whichever of them is valid.
func TestCredentialHeaderSmuggling(t *testing.T) {
	s := newStack(t)
	tenant := [2]string{"X-Tenant-Id", "42"}
	for _, h := range [][][2]string{
		{{"X-API-Key", demoKey}, {"X-API-Key", demoKey}, tenant},
		{{"X-API-Key", "xa_not_a_key"}, {"X-API-Key", demoKey}, tenant},
		{{"X-API-Key", demoKey + "," + readonlyKey}, tenant},
		{{"X-API-Key", demoKey + ", " + demoKey}, tenant},
		{{"Authorization", "Bearer " + demoJWT}, {"Authorization", "Bearer " + demoJWT}, tenant},
		{{"Authorization", "Bearer " + demoJWT + ", Bearer " + demoJWT}, tenant},
		{{"Authorization", "Bearer a.b.c"}, {"Authorization", "Bearer " + demoJWT}, tenant},
		{{"X-API-Key", demoKey}, {"Authorization", "Bearer " + demoJWT}, tenant},
		{{"X-API-Key", demoKey}, {"X-Tenant-Id", "42,43"}},
	} {
		refused(t, s, request{path: "/v1/orders", headers: h})
	}
}

// TestForgedIdentityHeadersNeverReachUpstream: identity headers sent by the
// client are replaced (allow) or never forwarded (deny).
func TestForgedIdentityHeadersNeverReachUpstream(t *testing.T) {
	s := newStack(t)
	refused(t, s, request{path: "/v1/orders", headers: append([][2]string{{"X-Tenant-Id", "42"}}, spoofed...)})
	resp := s.do(t, request{path: "/v1/orders", headers: append(withKey(demoKey), spoofed...)})
	if resp.status != http.StatusOK {
		t.Fatalf("allow: %d %s", resp.status, resp.body)
	}
	up, _ := s.echo.Last()
	for _, h := range spoofed {
		if vs := up.Header.Values(h[0]); len(vs) != 1 || vs[0] == h[1] {
			t.Errorf("upstream %s = %q (forged %q)", h[0], vs, h[1])
		}
	}
	// A tenant header on a route that does not verify it (the key holds
	// tenant 42 only): the upstream gets the verified tenant, not the
	// client's claim.
	resp = s.do(t, request{path: "/v1/calls", headers: [][2]string{{"X-API-Key", demoKey}, {"X-Tenant-Id", "7"}, {"X-Workspace-Id", "ws_9"}}})
	if resp.status != http.StatusOK {
		t.Fatalf("calls: %d %s", resp.status, resp.body)
	}
	up, _ = s.echo.Last()
	if up.Header.Get("X-Tenant-Id") != "" || up.Header.Get("X-Workspace-Id") != "" {
		t.Errorf("upstream got unverified tenant headers: x-tenant-id %q, x-workspace-id %q", up.Header.Get("X-Tenant-Id"), up.Header.Get("X-Workspace-Id"))
	}
}

// TestShadowedTenantDenialsPassNoTenant: with tenant denials shadowed, a
// request for a tenant the key does not hold, or with no credential at all,
// is served, but its tenant header does not reach the upstream (nor does a
// repeated one naming a held and an unheld tenant): the upstream only ever
// gets a tenant header whose value the verified identity holds.
func TestShadowedTenantDenialsPassNoTenant(t *testing.T) {
	s := newStackOn(t, shadowedTenantsFront)
	for _, c := range []struct {
		name    string
		headers [][2]string
		want    string // the upstream's X-Tenant-Id
	}{
		{"held tenant", [][2]string{{"X-API-Key", demoKey}, {"X-Tenant-Id", "42"}}, "42"},
		{"tenant the key does not hold", [][2]string{{"X-API-Key", demoKey}, {"X-Tenant-Id", "7"}}, ""},
		{"held and unheld in two lines", [][2]string{{"X-API-Key", demoKey}, {"X-Tenant-Id", "42"}, {"X-Tenant-Id", "7"}}, ""},
		{"invalid tenant", [][2]string{{"X-API-Key", demoKey}, {"X-Tenant-Id", "abc"}}, ""},
		{"no credential", [][2]string{{"X-Tenant-Id", "9"}}, ""},
	} {
		resp := s.do(t, request{path: "/v1/orders", headers: c.headers})
		if resp.status != http.StatusOK {
			t.Errorf("%s: %d %s, want the shadowed denial served", c.name, resp.status, resp.body)
			continue
		}
		up, _ := s.echo.Last()
		if got := up.Header.Values("X-Tenant-Id"); strings.Join(got, ",") != c.want {
			t.Errorf("%s: upstream X-Tenant-Id %q, want %q", c.name, got, c.want)
		}
		if c.want == "" && up.Header.Get("X-Auth-Tenant") != "" {
			t.Errorf("%s: upstream x-auth-tenant %q", c.name, up.Header.Get("X-Auth-Tenant"))
		}
	}
}

// TestNonUTF8HeaderBytes: Envoy 1.40 accepts header values with bytes that
// are not UTF-8 (obs-text) and, since a CheckRequest is protobuf strings,
// sends them to the sidecar with each invalid byte replaced by "!" (the
// upstream still gets the original bytes). A header the policy reads
// (credential, tenant) therefore arrives malformed and is refused; one it
// does not read is irrelevant to the decision.
func TestNonUTF8HeaderBytes(t *testing.T) {
	s := newStack(t)
	for _, c := range []struct {
		h      [][2]string
		status int
	}{
		{[][2]string{{"X-API-Key", demoKey + "\xff"}, {"X-Tenant-Id", "42"}}, http.StatusUnauthorized},
		{[][2]string{{"X-API-Key", demoKey}, {"X-Tenant-Id", "4\xff2"}}, http.StatusBadRequest},
		{[][2]string{{"Authorization", "Bearer " + demoJWT + "\xe9"}, {"X-Tenant-Id", "42"}}, http.StatusUnauthorized},
	} {
		resp := refused(t, s, request{path: "/v1/orders", headers: c.h})
		if resp.status != c.status || resp.header.Get("Content-Type") != "application/json" {
			t.Errorf("%q: %d %s, want %d in the JSON envelope", c.h, resp.status, resp.body, c.status)
		}
	}
	resp := s.do(t, request{path: "/v1/orders", headers: withKey(demoKey, [2]string{"X-Note", "caf\xe9"})})
	if resp.status != http.StatusOK {
		t.Fatalf("unread non-UTF-8 header: %d %s", resp.status, resp.body)
	}
	if got := s.lastCheck().GetAttributes().GetRequest().GetHttp().GetHeaders()["x-note"]; got != "caf!" {
		t.Errorf("the sidecar saw x-note %q, want Envoy's sanitised \"caf!\"", got)
	}
}

// TestOversized: headers beyond Envoy's limit (60 KiB by default) and a
// body beyond the 8 KiB the sidecar may see (the shipped POST /v1/orders
// route forwards bodies, allow_partial_message false) get 413 (Envoy's 431
// and 413 in the request_too_large envelope); neither is checked nor
// forwarded.
func TestOversized(t *testing.T) {
	s := newStack(t)
	big := strings.Repeat("a", 70<<10)
	resp := refused(t, s, request{path: "/v1/orders", headers: withKey(demoKey, [2]string{"X-Big", big})})
	if resp.status != http.StatusRequestEntityTooLarge || !strings.Contains(string(resp.body), `"code":"request_too_large"`) {
		t.Errorf("big header: status %d %s, want 413 request_too_large", resp.status, resp.body)
	}
	many := withKey(demoKey)
	for i := range 120 {
		many = append(many, [2]string{"X-Many-" + strings.Repeat("x", i%7) + string(rune('a'+i%26)), strings.Repeat("v", 600)})
	}
	refused(t, s, request{path: "/v1/orders", headers: many})

	post := withKey(demoKey, [2]string{"Idempotency-Key", "k-1"}, [2]string{"Content-Type", "application/json"})
	resp = refused(t, s, request{method: http.MethodPost, path: "/v1/orders", headers: post, body: strings.Repeat("x", 8193)})
	if resp.status != http.StatusRequestEntityTooLarge {
		t.Errorf("big body: status %d, want 413", resp.status)
	}
	if n := s.checks(); n != 0 {
		t.Errorf("the sidecar was asked %d times", n)
	}
	// At the limit the body goes to the sidecar and the request through.
	body := `{"n":"` + strings.Repeat("x", 8192-8) + `"}`
	resp = s.do(t, request{method: http.MethodPost, path: "/v1/orders", headers: post, body: body})
	if resp.status != http.StatusOK {
		t.Fatalf("8 KiB body: %d %s", resp.status, resp.body)
	}
	if got := s.lastCheck().GetAttributes().GetRequest().GetHttp().GetBody(); got != body {
		t.Errorf("the sidecar saw %d body bytes, want %d", len(got), len(body))
	}
	if up, _ := s.echo.Last(); string(up.Body) != body {
		t.Errorf("upstream got %d body bytes", len(up.Body))
	}
}

// TestEncodeRawHeaders: with encode_raw_headers: true Envoy sends header_map
// instead of headers. Nothing unauthenticated passes, forged identity never
// reaches the upstream, and a valid key is taken.
func TestEncodeRawHeaders(t *testing.T) {
	s := newStackOn(t, rawHeadersFront)
	refused(t, s, request{path: "/v1/orders", headers: append([][2]string{{"X-Tenant-Id", "42"}}, spoofed...)})
	if hm := s.lastCheck().GetAttributes().GetRequest().GetHttp().GetHeaderMap(); len(hm.GetHeaders()) == 0 {
		t.Fatal("Envoy did not send header_map")
	}
	resp := s.do(t, request{path: "/v1/orders", headers: withKey(demoKey)})
	if resp.status != http.StatusOK {
		t.Fatalf("a valid key sent as header_map: %d %s", resp.status, resp.body)
	}
}

// startShippedWith runs the shipped envoy/envoy.yaml (its real 250ms Check
// deadline) in front of authz and a fresh Echo.
func startShippedWith(t *testing.T, authz authv3.AuthorizationServer) *stack {
	t.Helper()
	bin := envoytest.Require(t)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	authv3.RegisterAuthorizationServer(g, authz)
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	echo := &Echo{}
	up := httptest.NewServer(echo)
	t.Cleanup(up.Close)
	e := envoytest.Start(t, bin, envoytest.Shipped(t, "envoy/envoy.yaml", map[string]string{"extauthz": lis.Addr().String(), "upstream": strings.TrimPrefix(up.URL, "http://")}))
	s := &stack{echo: echo, url: "http://" + e.Addr("ingress_http"), envoy: e, client: &http.Client{Timeout: 15 * time.Second}}
	t.Cleanup(s.client.CloseIdleConnections)
	return s
}

type funcAuthz struct {
	authv3.UnimplementedAuthorizationServer
	check func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error)
}

func (f funcAuthz) Check(ctx context.Context, r *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return f.check(ctx, r)
}

// TestSidecarSlowerThanEnvoyTimeout: a sidecar answering after the shipped
// 250ms deadline is status_on_error (503, in the auth_unavailable
// envelope), never the upstream.
func TestSidecarSlowerThanEnvoyTimeout(t *testing.T) {
	s := startShippedWith(t, funcAuthz{check: slowCheck})
	resp := refused(t, s, request{path: "/v1/orders", headers: withKey(demoKey)})
	if resp.status != http.StatusServiceUnavailable || !strings.Contains(string(resp.body), `"code":"auth_unavailable"`) {
		t.Errorf("status %d body %q, want 503 auth_unavailable", resp.status, resp.body)
	}
	if n := s.envoy.Stat(t, "http.ingress_http.ext_authz.error"); n != 1 {
		t.Errorf("ext_authz.error = %d, want 1", n)
	}
}

// TestMalformedHeaderMutationFailsClosed: an allow whose header mutations
// are invalid (CR/LF injection, a bad name) is refused by Envoy
// (validate_mutations: true) and never forwarded.
func TestMalformedHeaderMutationFailsClosed(t *testing.T) {
	for name, hv := range map[string]*corev3.HeaderValue{
		"crlf_value": {Key: "x-auth-subject", Value: "u\r\nx-admin: 1"},
		"bad_name":   {Key: "bad name", Value: "v"},
	} {
		t.Run(name, func(t *testing.T) {
			s := startShippedWith(t, funcAuthz{check: func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
				return okResp(&authv3.OkHttpResponse{Headers: []*corev3.HeaderValueOption{{Header: hv}}}), nil
			}})
			resp := refused(t, s, request{path: "/v1/orders", headers: withKey(demoKey)})
			if resp.status != http.StatusInternalServerError {
				t.Errorf("status %d, want 500", resp.status)
			}
		})
	}
}

// TestUnencodedPathCharacters: bytes every conforming client
// percent-encodes, sent raw on the request line with a valid key. In the
// path ('`', '{', '}', '^', '"', '<', '>') Envoy's normalize_path escapes
// them before the check, so the sidecar decides on the very path the
// upstream then receives, escaped; in the query, which Envoy leaves as
// sent, the sidecar refuses them (path_invalid) and nothing reaches the
// upstream.
func TestUnencodedPathCharacters(t *testing.T) {
	s := newStack(t)
	send := func(target string) int {
		t.Helper()
		conn, err := net.DialTimeout("tcp", strings.TrimPrefix(s.url, "http://"), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := conn.Write([]byte("GET " + target + " HTTP/1.1\r\nHost: api.example.com\r\nX-API-Key: " + demoKey + "\r\nX-Tenant-Id: 42\r\nConnection: close\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			return 0 // the connection closed without a response: refused
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, target := range []string{"/v1/orders/a{b}", "/v1/orders/a^b", "/v1/orders/a`b", `/v1/orders/a"b`, "/v1/orders/a<b>"} {
		if st := send(target); st != http.StatusOK {
			t.Errorf("%s: status %d, want 200 (escaped by Envoy)", target, st)
			continue
		}
		up, _ := s.echo.Last()
		if checked := checkedPath(s); up.Path != checked || strings.ContainsAny(checked, "{}^`\"<>") {
			t.Errorf("%s: the sidecar checked %q, the upstream received %q", target, checked, up.Path)
		}
	}
	for _, target := range []string{"/v1/orders?q=<x>", `/v1/orders?q="x"`} {
		before, checks := s.echo.Count(), s.checks()
		if st := send(target); st != http.StatusBadRequest {
			t.Errorf("%s: status %d, want 400", target, st)
		}
		if s.echo.Count() != before || s.checks() != checks+1 {
			t.Errorf("%s: upstream %d -> %d, checks %d -> %d", target, before, s.echo.Count(), checks, s.checks())
		}
	}
}

// TestPolicyHeaderMutationsDeniedInTheEnvelope: a policy whose allow sets a
// header Envoy would refuse (CR/LF, a bad name) or that would change the
// request decided on (:path, host) is answered by the sidecar itself, 500
// internal_error in the API's envelope (TestMalformedHeaderMutationFailsClosed:
// Envoy alone would answer a bare 500 with no body), and the upstream sees
// nothing.
func TestPolicyHeaderMutationsDeniedInTheEnvelope(t *testing.T) {
	for name, headers := range map[string]string{
		"crlf_value": `{"x-a": "a\r\nx-injected: 1"}`,
		"bad_name":   `{"x bad": "v"}`,
		"path":       `{":path": "/v1/admin/users"}`,
		"host":       `{"host": "evil.example.com"}`,
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, "p.rego"), "package envoy.authz\nallow := {\"allowed\": true, \"headers\": "+headers+"}\n")
			writeFile(t, filepath.Join(dir, "data.json"), `{"extauthz": {"settings": {"opa_envoy_path": true}}}`)
			eng, err := source.Engine(context.Background(), dir, engine.Options{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(eng.Close)
			s := startShippedWith(t, newCheckServer(eng))
			resp := refused(t, s, request{path: "/v1/orders"})
			var env map[string]any
			if resp.status != http.StatusInternalServerError || json.Unmarshal(resp.body, &env) != nil || env["error"] == nil {
				t.Errorf("status %d body %q, want 500 with the default profile's JSON envelope", resp.status, resp.body)
			}
		})
	}
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestTrailingSlashAndMethodOverride: through real Envoy, "/healthz/"
// (also reached as "/healthz/." and "/healthz/x/..") is not the public
// exact route /healthz, and a method-override header naming another
// method is refused: the upstream sees neither.
func TestTrailingSlashAndMethodOverride(t *testing.T) {
	s := newStack(t)
	for _, p := range []string{"/healthz/", "/healthz/.", "/healthz/x/.."} {
		if resp := refused(t, s, request{path: p}); resp.status != http.StatusNotFound {
			t.Errorf("GET %s: status %d, want 404 route_not_found: %s", p, resp.status, resp.body)
		}
	}
	for _, h := range []string{"X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"} {
		r := request{path: "/v1/orders", headers: withKey(readonlyKey, [2]string{"X-Tenant-Id", "42"}, [2]string{h, "DELETE"})}
		if resp := refused(t, s, r); resp.status != http.StatusBadRequest {
			t.Errorf("GET with %s: DELETE: status %d, want 400 request_invalid: %s", h, resp.status, resp.body)
		}
	}
}
