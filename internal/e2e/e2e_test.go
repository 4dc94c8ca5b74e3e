package e2e

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/extauthz/extauthz/internal/envoytest"
	"github.com/extauthz/extauthz/internal/testutil"
)

// Identity headers the sidecar sets on allow, spoofed by the client.
var spoofed = [][2]string{
	{"X-Auth-Subject", "admin"},
	{"X-Auth-Key-Id", "root-key"},
	{"X-Auth-Tenant", "1"},
	{"X-Auth-Scopes", "admin"},
	{"X-Auth-Kind", "god"},
}

func TestAllowAPIKey(t *testing.T) {
	s := newStack(t)
	for _, ph := range profileHosts {
		t.Run(ph.profile, func(t *testing.T) {
			resp := s.do(t, request{host: ph.host, path: "/v1/orders/17?expand=items", headers: append(withKey(demoKey), spoofed...)})
			if resp.status != http.StatusOK {
				t.Fatalf("status %d: %s", resp.status, resp.body)
			}
			up, _ := s.echo.Last()
			if up.Path != "/v1/orders/17?expand=items" || up.Method != http.MethodGet {
				t.Errorf("upstream got %s %s", up.Method, up.Path)
			}
			wantUpstream(t, up.Header, map[string]string{
				"X-Auth-Subject": "svc:orders-demo",
				"X-Auth-Key-Id":  "demo-orders",
				"X-Auth-Tenant":  "42",
				"X-Auth-Scopes":  "orders:read orders:write calls:read",
				"X-Auth-Kind":    "api_key",
				"X-Tenant-Id":    "42",
				"X-Api-Key":      "", // credentials never reach the upstream
				"Authorization":  "",
			})
		})
	}
}

func TestAllowJWT(t *testing.T) {
	s := newStack(t)
	resp := s.do(t, request{host: "dialektai.localhost", path: "/v1/orders", headers: append(bearer(demoJWT), spoofed...)})
	if resp.status != http.StatusOK {
		t.Fatalf("status %d: %s", resp.status, resp.body)
	}
	up, _ := s.echo.Last()
	wantUpstream(t, up.Header, map[string]string{
		"X-Auth-Subject": "user:demo",
		"X-Auth-Key-Id":  "", // a JWT has no key id: the spoofed copy is removed
		"X-Auth-Tenant":  "42",
		"X-Auth-Scopes":  "orders:read orders:write admin calls:read",
		"X-Auth-Kind":    "jwt",
		"Authorization":  "",
		"X-Api-Key":      "",
	})
	// The JWT's admin scope opens the JWT-only admin route; an API key does not.
	if resp := s.do(t, request{path: "/v1/admin/users", headers: [][2]string{{"Authorization", "Bearer " + demoJWT}}}); resp.status != http.StatusOK {
		t.Errorf("admin with JWT: status %d: %s", resp.status, resp.body)
	}
}

// TestAllowedLimitedRequestCarriesQuotaHeaders: an allowed request on a
// limited plan reaches the upstream, and the client's response carries the
// quota state (X-RateLimit-*), which the sidecar sends as the OK response's
// response_headers_to_add and the harness applies to the upstream's answer.
// The upstream never sees them. The counter is per key, across hosts.
func TestAllowedLimitedRequestCarriesQuotaHeaders(t *testing.T) {
	s := newStack(t)
	// testNow is 12:00:00 UTC: the minute window ends 60s later.
	reset := strconv.FormatInt(testNow.Unix()+60, 10)
	for i, ph := range profileHosts {
		resp := s.do(t, request{host: ph.host, path: "/v1/orders", headers: withKey(freeKey)})
		if resp.status != http.StatusOK {
			t.Fatalf("%s: status %d: %s", ph.host, resp.status, resp.body)
		}
		for name, want := range map[string]string{
			"X-RateLimit-Limit":     "10",
			"X-RateLimit-Remaining": strconv.Itoa(9 - i),
			"X-RateLimit-Reset":     reset,
		} {
			if got := resp.header.Values(name); len(got) != 1 || got[0] != want {
				t.Errorf("%s: %s = %q, want %q", ph.host, name, got, want)
			}
		}
		if got := resp.header.Get("Retry-After"); got != "" {
			t.Errorf("%s: allowed response carries Retry-After %q", ph.host, got)
		}
		up, _ := s.echo.Last()
		for k := range up.Header {
			if strings.HasPrefix(strings.ToLower(k), "x-ratelimit-") {
				t.Errorf("%s: upstream received %s", ph.host, k)
			}
		}
	}
	if got := s.echo.Count(); got != len(profileHosts) {
		t.Errorf("upstream saw %d requests, want %d", got, len(profileHosts))
	}
	// A key without a plan is not limited: no quota headers.
	resp := s.do(t, request{path: "/v1/orders", headers: withKey(demoKey)})
	if resp.status != http.StatusOK || resp.header.Get("X-RateLimit-Limit") != "" {
		t.Errorf("unlimited key: status %d, X-RateLimit-Limit %q", resp.status, resp.header.Get("X-RateLimit-Limit"))
	}
}

// wantUpstream checks upstream headers; "" means the header must be absent.
func wantUpstream(t *testing.T, h http.Header, want map[string]string) {
	t.Helper()
	for k, v := range want {
		got, present := h[http.CanonicalHeaderKey(k)]
		switch {
		case v == "" && present:
			t.Errorf("upstream received %s: %q", k, got)
		case v != "" && (len(got) != 1 || got[0] != v):
			t.Errorf("upstream %s = %q, want %q", k, got, v)
		}
	}
}

// TestDenyPerProfileHost: each host answers a missing credential in its own
// envelope and content type, and nothing reaches the upstream.
func TestDenyPerProfileHost(t *testing.T) {
	s := newStack(t)
	envelope := map[string]func(map[string]any) bool{
		"default": func(b map[string]any) bool {
			e, _ := b["error"].(map[string]any)
			return e["code"] == "credentials_missing" && e["request_id"] != nil
		},
		"aidial": func(b map[string]any) bool {
			e, _ := b["error"].(map[string]any)
			return e["code"] == "unauthorized" && e["message_key"] == "errors.credentials_missing" && e["request_id"] != nil
		},
		"dialektai": func(b map[string]any) bool {
			return b["error"] == true && b["error_code"] == "AUTH_INVALID_CREDENTIALS" && b["status_code"] == float64(401) && b["trace_id"] != nil && b["timestamp"] == "2026-11-22T12:00:00Z"
		},
		"aidelly": func(b map[string]any) bool {
			e, _ := b["error"].(map[string]any)
			return e["code"] == "PUBLIC_API_AUTH_REQUIRED" && b["request_id"] != nil
		},
		"lowercase": func(b map[string]any) bool {
			e, _ := b["error"].(map[string]any)
			return e["code"] == "invalid_api_key"
		},
		"aisafe": func(b map[string]any) bool { return len(b) == 1 && b["detail"] == "Not authenticated" },
		"problem": func(b map[string]any) bool {
			return b["title"] == "Unauthorized" && b["status"] == float64(401) && b["code"] == "credentials_missing" && b["detail"] != nil
		},
		"google": func(b map[string]any) bool {
			e, _ := b["error"].(map[string]any)
			d, _ := e["details"].([]any)
			info, _ := func() (map[string]any, bool) {
				if len(d) != 1 {
					return nil, false
				}
				m, ok := d[0].(map[string]any)
				return m, ok
			}()
			return e["code"] == float64(401) && e["status"] == "UNAUTHENTICATED" && info["@type"] == "type.googleapis.com/google.rpc.ErrorInfo" && info["reason"] == "CREDENTIALS_MISSING"
		},
		"jsonapi": func(b map[string]any) bool {
			es, _ := b["errors"].([]any)
			if len(es) != 1 {
				return false
			}
			e, _ := es[0].(map[string]any)
			return e["status"] == "401" && e["code"] == "credentials_missing" && e["title"] == "Unauthorized"
		},
	}
	contentType := map[string]string{"problem": "application/problem+json", "jsonapi": "application/vnd.api+json"}
	for _, ph := range profileHosts {
		for _, host := range []string{ph.host, ph.host + ":8000", strings.ToUpper(ph.host) + ".:8000"} {
			t.Run(host, func(t *testing.T) {
				resp := s.do(t, request{host: host, path: "/v1/orders", headers: [][2]string{{"X-Tenant-Id", "42"}}})
				if resp.status != http.StatusUnauthorized {
					t.Fatalf("status %d", resp.status)
				}
				if ct := resp.header.Get("Content-Type"); ct != cmp.Or(contentType[ph.profile], "application/json") {
					t.Errorf("content-type %q", ct)
				}
				var b map[string]any
				if err := json.Unmarshal(resp.body, &b); err != nil {
					t.Fatalf("%v: %s", err, resp.body)
				}
				if !envelope[ph.profile](b) {
					t.Errorf("not the %s envelope: %s", ph.profile, resp.body)
				}
				if s.echo.Count() != 0 {
					t.Error("a denied request reached the upstream")
				}
			})
		}
	}
}

// TestHealthzBypassesAuthz: /healthz is ExtAuthzPerRoute disabled in
// envoy.yaml; it reaches the upstream without any Check call, and without
// the identity headers the sidecar sets on checked routes or credentials:
// there the client's own x-auth-tenant is removed by no one, and an
// upstream handler that trusted it was told any identity.
func TestHealthzBypassesAuthz(t *testing.T) {
	s := newStack(t)
	forged := [][2]string{
		{"x-auth-subject", "svc:admin"}, {"x-auth-key-id", "root"}, {"x-auth-tenant", "1"},
		{"x-auth-scopes", "admin:all"}, {"x-auth-kind", "api_key"},
		{"x-api-key", "demo-orders-key"}, {"authorization", "Bearer x.y.z"},
		// Overrides the sidecar refuses on checked routes: authorized as
		// /healthz, served as /v1/admin or as a DELETE by an upstream that
		// honours them.
		{"x-original-url", "/v1/admin"}, {"x-rewrite-url", "/v1/admin"},
		{"x-http-method-override", "DELETE"}, {"x-http-method", "DELETE"}, {"x-method-override", "DELETE"},
		// Tenant headers nobody verified.
		{"x-tenant-id", "9"}, {"x-workspace-id", "ws_evil"}, {"x-brand-id", "br_evil"},
	}
	for _, ph := range profileHosts {
		resp := s.do(t, request{host: ph.host, path: "/healthz", headers: forged})
		if resp.status != http.StatusOK {
			t.Errorf("%s: status %d", ph.host, resp.status)
		}
		if n := s.checks(); n != 0 {
			t.Errorf("%s: the sidecar was asked (%d Check calls)", ph.host, n)
		}
	}
	reqs := s.echo.Requests()
	if len(reqs) != len(profileHosts) {
		t.Errorf("upstream saw %d requests, want %d", len(reqs), len(profileHosts))
	}
	for _, r := range reqs {
		for _, h := range forged {
			if v := r.Header.Get(h[0]); v != "" {
				t.Errorf("%s /healthz: the upstream received the client's %s: %q", r.Host, h[0], v)
			}
		}
	}
	// Only the exact path, without a query: anything else is checked, and
	// a _method in the query denied.
	for _, p := range []string{"/healthz/x", "/healthz?_method=DELETE", "/healthz?x"} {
		before := s.checks()
		resp := s.do(t, request{path: p})
		if s.checks() == before {
			t.Errorf("%s bypassed the check", p)
		}
		if strings.Contains(p, "_method") && resp.status != http.StatusBadRequest {
			t.Errorf("%s: status %d, want 400", p, resp.status)
		}
	}
}

// TestAmbiguousPathsNeverReachUpstream: paths an upstream could read
// differently from the policy are refused by Envoy or by the sidecar, with
// valid credentials and on every host.
func TestAmbiguousPathsNeverReachUpstream(t *testing.T) {
	s := newStack(t)
	paths := []string{
		"/v1/orders;x=1",
		"/v1/orders/17;jsessionid=1",
		"/v1/..;/admin/users",
		"/v1/orders%2F17",
		"/v1/orders%2f..%2fadmin",
		"/v1/orders%5C17",
		"/v1/orders%00",
		"/v1/orders/17%2F%2E%2E%2Fadmin",
		"/v1/orders/%2e%2e;/admin",
		"/v1/orders/17%0a",
		"/v1/orders/17%7f",
	}
	for _, ph := range profileHosts {
		for _, p := range paths {
			resp := s.do(t, request{host: ph.host, path: p, headers: withKey(demoKey)})
			if resp.status < 400 {
				t.Errorf("%s %s: status %d", ph.host, p, resp.status)
			}
		}
	}
	for _, up := range s.echo.Requests() {
		t.Errorf("upstream received %s %s", up.Method, up.Path)
	}
}

func TestDuplicatedTenantHeaderDenied(t *testing.T) {
	s := newStack(t)
	for _, vals := range [][2]string{{"42", "42"}, {"42", "43"}, {"43", "42"}} {
		resp := s.do(t, request{path: "/v1/orders", headers: [][2]string{{"X-API-Key", demoKey}, {"X-Tenant-Id", vals[0]}, {"X-Tenant-Id", vals[1]}}})
		if resp.status != http.StatusBadRequest || !strings.Contains(string(resp.body), `"tenant_header_invalid"`) {
			t.Errorf("X-Tenant-Id %v: %d %s", vals, resp.status, resp.body)
		}
	}
	if s.echo.Count() != 0 {
		t.Error("upstream reached")
	}
}

// TestClientXFFIgnored: a client cannot claim an allowlisted address; Envoy
// (use_remote_address, 0 trusted hops) sends the TCP peer as source.address.
func TestClientXFFIgnored(t *testing.T) {
	s := newStack(t)
	for _, extra := range [][][2]string{
		nil,
		{{"X-Forwarded-For", "10.1.2.3"}},
		{{"X-Forwarded-For", "10.1.2.3, 10.9.9.9"}},
		{{"X-Envoy-External-Address", "10.1.2.3"}},
		{{"X-Real-Ip", "10.1.2.3"}},
	} {
		h := append([][2]string{{"X-API-Key", tenant7Key}, {"X-Tenant-Id", "7"}}, extra...)
		resp := s.do(t, request{path: "/v1/orders", headers: h})
		if resp.status != http.StatusForbidden || !strings.Contains(string(resp.body), `"ip_not_allowed"`) {
			t.Errorf("%v: %d %s", extra, resp.status, resp.body)
		}
		if src := s.lastCheck().GetAttributes().GetSource().GetAddress().GetSocketAddress().GetAddress(); src != "127.0.0.1" {
			t.Errorf("%v: source.address %q", extra, src)
		}
	}
}

func TestHeadDenyHasNoBody(t *testing.T) {
	s := newStack(t)
	for _, ph := range profileHosts {
		resp := s.do(t, request{method: http.MethodHead, host: ph.host, path: "/v1/orders", headers: [][2]string{{"X-Tenant-Id", "42"}}})
		if resp.status != http.StatusUnauthorized || len(resp.body) != 0 {
			t.Errorf("%s: HEAD deny %d with %d body bytes", ph.host, resp.status, len(resp.body))
		}
	}
	// HEAD is an allowed method of orders-read: with a key it goes through.
	if resp := s.do(t, request{method: http.MethodHead, path: "/v1/orders/1", headers: withKey(demoKey)}); resp.status != http.StatusOK {
		t.Errorf("HEAD allow: %d", resp.status)
	}
}

// TestGRPCClientGetsGRPCStatus: a real gRPC client (HTTP/2 cleartext) in
// front of the harness gets the denial as grpc-status, the envelope as
// grpc-message.
func TestGRPCClientGetsGRPCStatus(t *testing.T) {
	s := newStack(t)
	conn, err := grpc.NewClient(strings.TrimPrefix(s.url, "http://"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// No such route in the policy: 404 -> UNIMPLEMENTED.
	_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if st := status.Convert(err); st.Code() != codes.Unimplemented || !strings.Contains(st.Message(), `"route_not_found"`) {
		t.Errorf("health check: %v", err)
	}
	// POST /v1/orders without credentials: 401 -> UNAUTHENTICATED.
	err = conn.Invoke(ctx, "/v1/orders", &emptypb.Empty{}, &emptypb.Empty{})
	if st := status.Convert(err); st.Code() != codes.Unauthenticated || !strings.Contains(st.Message(), `"credentials_missing"`) {
		t.Errorf("orders: %v", err)
	}
	// A tenant the key does not have on the aisafe host: 404 -> UNIMPLEMENTED
	// with AISafe's envelope.
	aisafe, err := grpc.NewClient(strings.TrimPrefix(s.url, "http://"), grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority("aisafe.localhost"))
	if err != nil {
		t.Fatal(err)
	}
	defer aisafe.Close()
	md := metadata.Pairs("x-api-key", demoKey, "x-tenant-id", "43", "idempotency-key", "k")
	err = aisafe.Invoke(metadata.NewOutgoingContext(ctx, md), "/v1/orders", &emptypb.Empty{}, &emptypb.Empty{})
	if st := status.Convert(err); st.Code() != codes.Unimplemented || st.Message() != `{"detail":"Not found"}` {
		t.Errorf("aisafe: %v", err)
	}
	if s.echo.Count() != 0 {
		t.Error("upstream reached")
	}
}

// TestSidecarDownFailsClosed: with the sidecar gone, Envoy answers
// status_on_error (503, in the auth_unavailable envelope) and forwards
// nothing (failure_mode_allow: false).
func TestSidecarDownFailsClosed(t *testing.T) {
	s := newDedicatedStack(t, nil)
	s.sidecar.Close()
	resp := s.do(t, request{path: "/v1/orders", headers: withKey(demoKey)})
	if resp.status != http.StatusServiceUnavailable || !strings.Contains(string(resp.body), `"code":"auth_unavailable"`) {
		t.Errorf("status %d body %q", resp.status, resp.body)
	}
	if s.echo.Count() != 0 {
		t.Error("upstream reached")
	}
}

// TestRealBinary builds cmd/extauthz, runs it on free loopback ports, waits
// for /readyz, sends requests through real Envoy and stops it with SIGTERM.
func TestRealBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	envoyBin := envoytest.Require(t)
	bin := filepath.Join(t.TempDir(), "extauthz")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/extauthz")
	build.Dir = "../.."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	grpcAddr, adminAddr := testutil.FreeAddr(t), testutil.FreeAddr(t)
	cmd := exec.Command(bin, "--grpc-addr", grpcAddr, "--admin-addr", adminAddr)
	logs := &testutil.SyncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-exited
		}
	})

	waitReady(t, "http://"+adminAddr+"/readyz", exited, logs)

	echo := &Echo{}
	up := httptest.NewServer(echo)
	defer up.Close()
	b := envoytest.Shipped(t, "envoy/envoy.yaml", map[string]string{"extauthz": grpcAddr, "upstream": strings.TrimPrefix(up.URL, "http://")})
	relaxTimeout(b)
	e := envoytest.Start(t, envoyBin, b)
	front := &stack{echo: echo, url: "http://" + e.Addr("ingress_http"), client: &http.Client{Timeout: 15 * time.Second}}
	defer front.client.CloseIdleConnections()

	if resp := front.do(t, request{host: "dialektai.localhost", path: "/v1/orders", headers: withKey(demoKey)}); resp.status != http.StatusOK {
		t.Errorf("allow: %d %s", resp.status, resp.body)
	}
	resp := front.do(t, request{host: "dialektai.localhost", path: "/v1/orders", headers: withKey(demoKey, [2]string{"X-Tenant-Id", "x"})})
	if resp.status != http.StatusForbidden || !strings.Contains(string(resp.body), `"error_code":"AUTH_INSUFFICIENT_PERMISSIONS"`) {
		t.Errorf("deny: %d %s", resp.status, resp.body)
	}

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v\n%s", err, logs.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("still running 15s after SIGTERM\n%s", logs.String())
	}
}

func waitReady(t *testing.T, url string, exited <-chan error, logs fmt.Stringer) {
	t.Helper()
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			t.Fatalf("exited before ready: %v\n%s", err, logs)
		default:
		}
		resp, err := client.Get(url)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		} else if !errors.Is(err, syscall.ECONNREFUSED) && !os.IsTimeout(err) && !strings.Contains(err.Error(), "connection refused") {
			t.Logf("readyz: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("not ready after 30s\n%s", logs)
}

// Only GET /healthz bypasses authorization; any other method on it is checked.
func TestHealthBypassIsGETOnly(t *testing.T) {
	st := newStack(t)
	for _, c := range []struct {
		method string
		want   int
	}{{"GET", 200}, {"POST", 404}, {"DELETE", 404}} { // checked: the policy routes only GET/HEAD /healthz
		before := st.echo.Count()
		req, _ := http.NewRequest(c.method, st.url+"/healthz", nil)
		req.Host = "dialektai.localhost"
		resp, err := st.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s /healthz = %d, want %d", c.method, resp.StatusCode, c.want)
		}
		if reached := st.echo.Count() - before; (c.method == "GET") != (reached == 1) {
			t.Errorf("%s /healthz reached the upstream %d times", c.method, reached)
		}
	}
}
