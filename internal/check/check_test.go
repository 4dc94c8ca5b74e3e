package check

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/extauthz/extauthz/internal/clientip"
	"github.com/extauthz/extauthz/internal/engine"
	"github.com/extauthz/extauthz/internal/facts"
	"github.com/extauthz/extauthz/internal/memo"
	"github.com/extauthz/extauthz/internal/policy"
	"github.com/extauthz/extauthz/policies"
)

// Demo credentials from policies/data.json.
const (
	demoKey      = "xa_demo_7Qm2vK9pL4sT8wZ1"
	readonlyKey  = "xa_demo_readonly_K3n8Vb"
	expiredKey   = "xa_demo_expired_P5r2Qd"
	revokedKey   = "xa_demo_revoked_T9w4Lm"
	suspendedKey = "xa_demo_suspended_H2c7Rf"
	tenant7Key   = "xa_demo_tenant7_A1b2Zy"
	aidellyKey   = "xa_demo_aidelly_W6x3Nq"
)

var testNow = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)

// The demo JWTs from testdata/ (signed by testdata/demo_signing_key.pem).
var (
	demoJWT    = mustRead("../../testdata/demo.jwt")
	expiredJWT = mustRead("../../testdata/demo_expired.jwt")
)

func mustRead(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func demoEngine(t testing.TB) *engine.Engine {
	t.Helper()
	src, err := policy.LoadFS(policies.FS, "policies")
	if err != nil {
		t.Fatal(err)
	}
	e, err := engine.Build(context.Background(), src, engine.Options{Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

type staticEngines struct{ e *engine.Engine }

func (s staticEngines) Current() *engine.Engine { return s.e }

func newServer(t testing.TB, e *engine.Engine) *Server {
	s := NewServer(staticEngines{e}, clientip.Resolver{})
	s.Now = func() time.Time { return testNow }
	s.Timeout = 5 * time.Second // generous under -race; the budget itself is tested separately
	s.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	return s
}

// req builds a CheckRequest the way Envoy does: lower-case keys, pseudo-headers, path with query.
func req(method, path string, headers map[string]string) *authv3.CheckRequest {
	h := map[string]string{":method": method, ":path": path, ":authority": "api.example.com", ":scheme": "https", "x-request-id": "req-12345"}
	for k, v := range headers {
		h[k] = v
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 40000}}}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: "1", Method: method, Path: path, Host: "api.example.com", Scheme: "https", Protocol: "HTTP/1.1", Headers: h,
		}},
	}}
}

func decide(t *testing.T, s *Server, r *authv3.CheckRequest) (string, int, *authv3.CheckResponse) {
	t.Helper()
	resp, err := s.Check(context.Background(), r)
	if err != nil {
		t.Fatalf("Check returned a gRPC error: %v", err)
	}
	reason := resp.GetDynamicMetadata().GetFields()["reason"].GetStringValue()
	status := 200
	if d := resp.GetDeniedResponse(); d != nil {
		status = int(d.GetStatus().GetCode())
	}
	return reason, status, resp
}

func TestReasons(t *testing.T) {
	s := newServer(t, demoEngine(t))
	key := func(k string, extra ...string) map[string]string {
		h := map[string]string{"x-api-key": k, "x-tenant-id": "42"}
		for i := 0; i+1 < len(extra); i += 2 {
			h[extra[i]] = extra[i+1]
		}
		return h
	}
	cases := []struct {
		name, method, path string
		headers            map[string]string
		reason             string
		status             int
	}{
		{"allow api key", "GET", "/v1/orders", key(demoKey), "ok", 200},
		{"allow below prefix with query", "GET", "/v1/orders/17?expand=items", key(demoKey), "ok", 200},
		{"public route needs nothing", "GET", "/healthz", nil, "ok", 200},
		{"public route takes a valid key", "GET", "/healthz", key(demoKey), "ok", 200},
		{"public route takes a valid jwt", "GET", "/healthz", map[string]string{"authorization": "Bearer " + demoJWT}, "ok", 200},
		{"public route refuses an invalid key", "GET", "/healthz", key("xa_nope"), "key_invalid", 401},
		{"jwt without the tenant claim names a tenant", "GET", "/v1/orders", map[string]string{"authorization": "Bearer " + mintJWT("user:x", "", "orders:read"), "x-tenant-id": "77"}, "tenant_forbidden", 403},
		{"key without a workspace grant names a workspace", "GET", "/v1/posts", map[string]string{"authorization": "Bearer " + demoKey, "x-workspace-id": "ws_1"}, "tenant_forbidden", 403},
		{"path dot segment", "GET", "/v1/orders/../admin", key(demoKey), "path_invalid", 400},
		{"path encoded slash", "GET", "/v1/orders%2F..%2Fadmin", key(demoKey), "path_invalid", 400},
		{"path parameter", "GET", "/v1/..;/admin", key(demoKey), "path_invalid", 400},
		{"double encoding split across escapes", "GET", "/v1/orders/%252%65%252%65/admin", key(demoKey), "path_invalid", 400},
		{"double encoding split, anonymous", "GET", "/healthz/%252%65%252%65/admin", nil, "path_invalid", 400},
		{"overlong UTF-8 dots", "GET", "/v1/orders/%c0%ae%c0%ae/admin", key(demoKey), "path_invalid", 400},
		{"canonical form of an escape is accepted once", "GET", "/v1/orders/%250%30", key(demoKey), "path_invalid", 400},
		{"unknown route", "GET", "/v2/unknown", key(demoKey), "route_not_found", 404},
		{"no credentials", "GET", "/v1/orders", map[string]string{"x-tenant-id": "42"}, "credentials_missing", 401},
		{"empty key", "GET", "/v1/orders", key(""), "credentials_malformed", 401},
		{"two keys comma-joined", "GET", "/v1/orders", key(demoKey + "," + readonlyKey), "credentials_malformed", 401},
		{"key and bearer", "GET", "/v1/orders", key(demoKey, "authorization", "Bearer a.b.c"), "credentials_malformed", 401},
		{"basic scheme", "GET", "/v1/orders", map[string]string{"authorization": "Basic dTpw", "x-tenant-id": "42"}, "wrong_scheme", 401},
		{"unknown key", "GET", "/v1/orders", key("xa_not_a_key"), "key_invalid", 401},
		{"expired key", "GET", "/v1/orders", key(expiredKey), "key_expired", 401},
		{"revoked key", "GET", "/v1/orders", key(revokedKey), "key_revoked", 401},
		{"suspended key", "GET", "/v1/orders", key(suspendedKey), "key_suspended", 403},
		{"api key as bearer on jwt route reads as bad token", "GET", "/v1/orders", map[string]string{"authorization": "Bearer " + demoKey, "x-tenant-id": "42"}, "token_invalid", 401},
		{"garbage jwt", "GET", "/v1/orders", map[string]string{"authorization": "Bearer a.b.c", "x-tenant-id": "42"}, "token_invalid", 401},
		{"demo jwt", "GET", "/v1/orders", map[string]string{"authorization": "Bearer " + demoJWT, "x-tenant-id": "42"}, "ok", 200},
		{"demo jwt on jwt-only admin route", "GET", "/v1/admin/users", map[string]string{"authorization": "Bearer " + demoJWT}, "ok", 200},
		{"expired jwt", "GET", "/v1/orders", map[string]string{"authorization": "Bearer " + expiredJWT, "x-tenant-id": "42"}, "token_expired", 401},
		{"tampered jwt", "GET", "/v1/orders", map[string]string{"authorization": "Bearer " + demoJWT[:len(demoJWT)-4] + "AAAA", "x-tenant-id": "42"}, "token_invalid", 401},
		{"jwt tenant is not the header's", "GET", "/v1/orders", map[string]string{"authorization": "Bearer " + demoJWT, "x-tenant-id": "7"}, "tenant_forbidden", 403},
		{"jwt where only bearer api keys are taken", "GET", "/v1/posts", map[string]string{"authorization": "Bearer " + demoJWT, "x-workspace-id": "ws_1"}, "wrong_auth_mode", 401},
		{"api key on jwt-only route", "GET", "/v1/admin/users", key(tenant7Key), "wrong_auth_mode", 403},
		{"header key on bearer-only route (aidelly: 401 AUTH_REQUIRED)", "GET", "/v1/posts", map[string]string{"x-api-key": aidellyKey, "x-workspace-id": "ws_1"}, "wrong_auth_mode", 401},
		{"browser sends api key where forbidden", "GET", "/v1/calls", map[string]string{"x-api-key": demoKey, "origin": "https://app.example.com"}, "browser_api_key", 403},
		{"server sends api key", "GET", "/v1/calls", map[string]string{"x-api-key": demoKey}, "ok", 200},
		{"tenant header missing", "GET", "/v1/orders", map[string]string{"x-api-key": demoKey}, "tenant_header_missing", 400},
		{"tenant header not an integer", "GET", "/v1/orders", key(demoKey, "x-tenant-id", "invalid-id"), "tenant_header_invalid", 400},
		{"tenant header zero", "GET", "/v1/orders", key(demoKey, "x-tenant-id", "0"), "tenant_header_invalid", 400},
		{"tenant header duplicated", "GET", "/v1/orders", key(demoKey, "x-tenant-id", "42,43"), "tenant_header_invalid", 400},
		{"tenant not the key's", "GET", "/v1/orders", key(demoKey, "x-tenant-id", "43"), "tenant_forbidden", 403},
		{"tenant allowlist excludes loopback", "GET", "/v1/orders", key(tenant7Key, "x-tenant-id", "7"), "ip_not_allowed", 403},
		{"scope missing", "POST", "/v1/orders", key(readonlyKey, "idempotency-key", "k1"), "scope_missing", 403},
		{"idempotency key missing", "POST", "/v1/orders", key(demoKey), "idempotency_key_missing", 400},
		{"write allowed with idempotency key", "POST", "/v1/orders", key(demoKey, "idempotency-key", "k1"), "ok", 200},
		{"bearer api key allowed where route takes it", "GET", "/v1/posts", map[string]string{"authorization": "Bearer " + aidellyKey, "x-workspace-id": "ws_1", "x-brand-id": "br_1"}, "ok", 200},
		{"brand not the key's", "GET", "/v1/posts", map[string]string{"authorization": "Bearer " + aidellyKey, "x-workspace-id": "ws_1", "x-brand-id": "br_2"}, "tenant_forbidden", 403},
		// Precedence: authentication before tenant, IP and scope checks.
		{"bad key beats missing tenant", "GET", "/v1/orders", map[string]string{"x-api-key": "xa_nope"}, "key_invalid", 401},
		{"expired key beats bad tenant", "GET", "/v1/orders", key(expiredKey, "x-tenant-id", "abc"), "key_expired", 401},
		{"path beats credentials", "GET", "/a/../b", nil, "path_invalid", 400},
		{"tenant format beats tenant membership and scope", "POST", "/v1/orders", key(readonlyKey, "x-tenant-id", "x"), "tenant_header_invalid", 400},
		{"tenant beats IP", "GET", "/v1/orders", key(tenant7Key, "x-tenant-id", "42"), "tenant_forbidden", 403},
		{"IP beats scope", "POST", "/v1/orders", key(tenant7Key, "x-tenant-id", "7", "idempotency-key", "k"), "ip_not_allowed", 403},
		{"scope beats idempotency", "POST", "/v1/orders", key(readonlyKey), "scope_missing", 403},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			reason, status, resp := decide(t, s, req(c.method, c.path, c.headers))
			if reason != c.reason || status != c.status {
				t.Fatalf("got %s/%d, want %s/%d\n%v", reason, status, c.reason, c.status, resp)
			}
		})
	}
}

func TestIPAllowlistPerKeyAndTenant(t *testing.T) {
	s := newServer(t, demoEngine(t))
	r := req("GET", "/v1/orders", map[string]string{"x-api-key": tenant7Key, "x-tenant-id": "7"})
	for _, c := range []struct {
		addr, reason string
	}{
		{"10.1.2.3", "ok"},
		{"::ffff:10.1.2.3", "ok"}, // IPv4-mapped is the same client
		{"11.0.0.1", "ip_not_allowed"},
		{"2001:db8::1", "ip_not_allowed"},
		{"garbage", "ip_not_allowed"},
	} {
		r.Attributes.Source.Address.GetSocketAddress().Address = c.addr
		// A spoofed x-forwarded-for never changes the decision with 0 trusted hops.
		r.Attributes.Request.Http.Headers["x-forwarded-for"] = "10.9.9.9"
		if reason, _, _ := decide(t, s, r); reason != c.reason {
			t.Errorf("%s: got %s, want %s", c.addr, reason, c.reason)
		}
	}
}

func TestAllowSetsIdentityAndStripsCredentials(t *testing.T) {
	s := newServer(t, demoEngine(t))
	_, _, resp := decide(t, s, req("GET", "/v1/orders", map[string]string{"x-api-key": demoKey, "x-tenant-id": "42", "x-auth-subject": "admin"}))
	ok := resp.GetOkResponse()
	got := map[string]string{}
	for _, h := range ok.GetHeaders() {
		//lint:ignore SA1019 the field the sidecar sets (see header in response.go)
		if h.GetAppend().GetValue() {
			t.Errorf("header %s appends", h.GetHeader().GetKey())
		}
		got[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
	}
	want := map[string]string{"x-auth-subject": "svc:orders-demo", "x-auth-key-id": "demo-orders", "x-auth-kind": "api_key", "x-auth-scopes": "orders:read orders:write calls:read", "x-auth-tenant": "42"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	// The credentials, and the tenant headers of other routes (Aidelly's),
	// which this one does not verify; its own x-tenant-id was verified.
	if rm := ok.GetHeadersToRemove(); !slices.Equal(rm, []string{"authorization", "x-api-key", "x-brand-id", "x-workspace-id"}) {
		t.Errorf("headers_to_remove = %v", rm)
	}
	// A route without tenant headers: a tenant the client names there was
	// verified by no one, and the upstream does not get it.
	_, _, resp = decide(t, s, req("GET", "/v1/calls", map[string]string{"x-api-key": demoKey, "x-tenant-id": "7"}))
	if rm := resp.GetOkResponse().GetHeadersToRemove(); !contains(rm, "x-tenant-id") {
		t.Errorf("calls: headers_to_remove = %v", rm)
	}
	// The metadata's fields: metadata_test.go.
	// Anonymous allow on a public route removes any client-sent identity header.
	_, _, resp = decide(t, s, req("GET", "/healthz", map[string]string{"x-auth-subject": "admin"}))
	if rm := resp.GetOkResponse().GetHeadersToRemove(); !contains(rm, "x-auth-subject") || len(resp.GetOkResponse().GetHeaders()) != 0 {
		t.Errorf("public allow: %v", resp.GetOkResponse())
	}
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// The memoized and the evaluated decision agree for every case, and an
// impure policy (one that reads raw headers) is never memoized.
func TestMemoAgreesWithEvaluation(t *testing.T) {
	memo := newServer(t, demoEngine(t))
	plain := newServer(t, demoEngine(t))
	plain.NoMemo = true
	if !memo.Engines.Current().Policy.Pure() {
		t.Fatalf("default policy must be memoizable: %+v", memo.Engines.Current().Policy.Purity())
	}
	reqs := []*authv3.CheckRequest{
		req("GET", "/v1/orders", map[string]string{"x-api-key": demoKey, "x-tenant-id": "42"}),
		req("GET", "/v1/orders", map[string]string{"x-api-key": demoKey, "x-tenant-id": "43"}),
		req("GET", "/v1/orders", map[string]string{"x-api-key": readonlyKey, "x-tenant-id": "42"}),
		req("POST", "/v1/orders", map[string]string{"x-api-key": readonlyKey, "x-tenant-id": "42"}),
		req("POST", "/v1/orders", map[string]string{"x-api-key": demoKey, "x-tenant-id": "42"}),
		req("POST", "/v1/orders", map[string]string{"x-api-key": demoKey, "x-tenant-id": "42", "idempotency-key": "a"}),
		req("GET", "/v1/calls", map[string]string{"x-api-key": demoKey, "cookie": "s=1"}),
		req("GET", "/v1/calls", map[string]string{"x-api-key": demoKey}),
		req("GET", "/v1/orders", map[string]string{"x-api-key": tenant7Key, "x-tenant-id": "7"}),
	}
	for round := 0; round < 2; round++ { // the second round is served from the memo
		for i, r := range reqs {
			a, _, _ := decide(t, memo, r)
			b, _, _ := decide(t, plain, r)
			if a != b {
				t.Errorf("round %d req %d: memo %s, evaluated %s", round, i, a, b)
			}
		}
	}
	// The client address is part of the key: same request, other address.
	r := req("GET", "/v1/orders", map[string]string{"x-api-key": tenant7Key, "x-tenant-id": "7"})
	r.Attributes.Source.Address.GetSocketAddress().Address = "10.0.0.1"
	if a, _, _ := decide(t, memo, r); a != "ok" {
		t.Errorf("allowlisted address after a cached deny: %s", a)
	}

	// A policy that reads raw request parts through input itself (not
	// through a reference the analysis sees as input.attributes...): a
	// request with the header must not get the decision memoized for one
	// without it, nor one path the decision of another.
	for _, read := range []string{
		`object.get(input, ["attributes", "request", "http", "headers", "x-flag"], "")`,
		`[v | walk(input, [p, v]); p == ["attributes", "request", "http", "headers", "x-flag"]][0]`,
		`x.attributes.request.http.headers["x-flag"] if x := input`,
	} {
		pol := "package extauthz\nflag := " + read + "\ndefault decision := {\"allow\": false, \"reason\": \"credentials_missing\"}\ndecision := {\"allow\": false, \"reason\": \"scope_missing\"} if flag == \"1\"\n"
		s := newServer(t, engineWith(t, pol))
		if s.Engines.Current().Policy.Pure() {
			t.Errorf("%s: memoizable", read)
		}
		for _, flag := range []string{"", "1", "", "1"} {
			h, want := map[string]string{}, "credentials_missing"
			if flag != "" {
				h["x-flag"], want = flag, "scope_missing"
			}
			if got, _, _ := decide(t, s, req("GET", "/x", h)); got != want {
				t.Errorf("%s: flag %q: %s, want %s", read, flag, got, want)
			}
		}
	}

	impure := newServer(t, engineWith(t, "package extauthz\nimport input.attributes.request.http.headers\ndecision := {\"allow\": false, \"reason\": \"scope_missing\"} if headers[\"x-flag\"]\ndecision := {\"allow\": false, \"reason\": \"credentials_missing\"} if not headers[\"x-flag\"]\n"))
	if impure.Engines.Current().Policy.Pure() {
		t.Fatal("a policy reading raw headers must not be memoized")
	}
	for _, flag := range []string{"1", "", "1"} {
		h := map[string]string{}
		want := "credentials_missing"
		if flag != "" {
			h["x-flag"], want = flag, "scope_missing"
		}
		if got, _, _ := decide(t, impure, req("GET", "/x", h)); got != want {
			t.Errorf("flag %q: %s, want %s", flag, got, want)
		}
	}
}

const freeKey = "xa_demo_free_R4t6Yu" // plan free: 10/minute, 100/hour

func hget(hs [][2]string, name string) string {
	for _, h := range hs {
		if h[0] == name {
			return h[1]
		}
	}
	return ""
}

func okHeaders(resp *authv3.CheckResponse) [][2]string {
	var out [][2]string
	for _, h := range resp.GetOkResponse().GetResponseHeadersToAdd() {
		out = append(out, [2]string{h.GetHeader().GetKey(), h.GetHeader().GetValue()})
	}
	return out
}

func deniedHeaders(resp *authv3.CheckResponse) [][2]string {
	var out [][2]string
	for _, h := range resp.GetDeniedResponse().GetHeaders() {
		out = append(out, [2]string{h.GetHeader().GetKey(), h.GetHeader().GetValue()})
	}
	return out
}

// Quotas: plan windows per verified key, headers on allows, the profile's 429.
func TestRateLimits(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 30, 0, time.UTC) // 30s into a minute window
	s := newServer(t, demoEngine(t))
	s.Now = func() time.Time { return now }
	r := req("GET", "/v1/orders", map[string]string{"x-api-key": freeKey, "x-tenant-id": "42"})
	r.Attributes.ContextExtensions = map[string]string{"profile": "dialektai"}
	for i := 1; i <= 10; i++ {
		reason, _, resp := decide(t, s, r)
		hs := okHeaders(resp)
		if reason != "ok" || hget(hs, "x-ratelimit-limit") != "10" || hget(hs, "x-ratelimit-remaining") != strconv.Itoa(10-i) ||
			hget(hs, "x-ratelimit-reset") != strconv.FormatInt(now.Unix()+30, 10) {
			t.Fatalf("request %d: %s %v", i, reason, hs)
		}
	}
	reason, status, resp := decide(t, s, r)
	hs := deniedHeaders(resp)
	if reason != "rate_limited" || status != 429 || hget(hs, "retry-after") != "30" || hget(hs, "x-ratelimit-remaining") != "0" ||
		hget(hs, "x-ratelimit-reset") != strconv.FormatInt(now.Unix()+30, 10) {
		t.Fatalf("11th: %s/%d %v", reason, status, hs)
	}
	if body := resp.GetDeniedResponse().GetBody(); !strings.Contains(body, `"error_code":"QUOTA_RATE_LIMIT_EXCEEDED"`) || !strings.Contains(body, "Please retry after 30 seconds.") {
		t.Errorf("429 body %s", body)
	}
	// Another key is counted apart; a key without a plan is not limited at all.
	if reason, _, resp := decide(t, s, req("GET", "/v1/orders", map[string]string{"x-api-key": demoKey, "x-tenant-id": "42"})); reason != "ok" || len(okHeaders(resp)) != 0 {
		t.Errorf("unlimited key: %s %v", reason, okHeaders(resp))
	}
	// Denied requests (bad tenant) are not counted and get no quota.
	now = now.Add(31 * time.Second) // next minute window
	if reason, _, _ := decide(t, s, r); reason != "ok" {
		t.Errorf("next window: %s", reason)
	}
	// A policy reload keeps the counters (the limiter outlives engines).
	s.Engines = staticEngines{demoEngine(t)}
	_, _, resp = decide(t, s, r)
	if hget(okHeaders(resp), "x-ratelimit-remaining") != "8" {
		t.Errorf("after reload: %v", okHeaders(resp))
	}
}

// With a shared backend that is down and on_error deny, the profile's 503.
func TestRateLimitBackendDownDenies(t *testing.T) {
	src, err := policy.LoadFS(policies.FS, "policies")
	if err != nil {
		t.Fatal(err)
	}
	lim := src.Data["extauthz"].(map[string]any)["limits"].(map[string]any)
	lim["backend"] = map[string]any{"type": "redis", "addr": "127.0.0.1:1", "timeout_ms": 20, "on_error": "deny"}
	e, err := engine.Build(context.Background(), src, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s := newServer(t, e)
	r := req("GET", "/v1/orders", map[string]string{"x-api-key": freeKey, "x-tenant-id": "42"})
	r.Attributes.ContextExtensions = map[string]string{"profile": "dialektai"}
	reason, status, _ := decide(t, s, r)
	if reason != "auth_unavailable" || status != 503 {
		t.Fatalf("got %s/%d", reason, status)
	}
	// Keys without a plan never touch the backend.
	if reason, _, _ := decide(t, s, req("GET", "/v1/orders", map[string]string{"x-api-key": demoKey, "x-tenant-id": "42"})); reason != "ok" {
		t.Errorf("unlimited key: %s", reason)
	}
}

// TestMemoAcrossClientAddresses: the demo rulebook only tests the client
// address against allowlists, so the memo keeps one decision per key for
// every address that falls the same way in them — and every address still
// gets the decision an evaluation without the memo gives.
func TestMemoAcrossClientAddresses(t *testing.T) {
	eng := demoEngine(t)
	if !eng.Policy.Purity().TracesClientIP {
		t.Fatal("the demo rulebook's address tests are not traced")
	}
	s, plain := newServer(t, eng), newServer(t, eng)
	plain.NoMemo = true
	addrs := []string{"10.1.2.3", "192.0.2.5", "::ffff:10.9.9.9", "2001:db8::1", "10.255.0.1", "203.0.113.9", "::ffff:192.0.2.77"}
	allowlisted := req("GET", "/v1/orders", map[string]string{"x-api-key": tenant7Key, "x-tenant-id": "7"}) // tenant 7: 10.0.0.0/8
	open := req("GET", "/v1/orders", map[string]string{"x-api-key": demoKey, "x-tenant-id": "42"})          // tenant 42: no allowlist
	for range 3 {
		for _, a := range addrs {
			for _, r := range []*authv3.CheckRequest{allowlisted, open} {
				r.Attributes.Source.Address.GetSocketAddress().Address = a
				got, _, _ := decide(t, s, r)
				want, _, _ := decide(t, plain, r)
				if got != want {
					t.Fatalf("%s from %s: memo says %s, evaluation says %s", r.Attributes.Request.Http.Headers["x-tenant-id"], a, got, want)
				}
				if r == allowlisted {
					in := strings.HasPrefix(a, "10.") || strings.HasPrefix(a, "::ffff:10.")
					if (got == "ok") != in {
						t.Fatalf("tenant 7 from %s: %s", a, got)
					}
				}
			}
		}
	}
	// One decision per side of the allowlist, and one for the tenant
	// without one, however many addresses asked.
	variants := map[string]int{}
	memoOf(t, s).Range(func(k facts.Key, _ *memo.Entry) {
		f := k.Facts()
		if !k.Traced() || f.ClientIP.IsValid() {
			t.Errorf("key %+v holds the address", k)
		}
		v, _ := f.Tenants.Get(0)
		variants[v]++
	})
	if variants["7"] != 2 || variants["42"] != 1 {
		t.Errorf("variants per tenant %v, want 7:2 42:1", variants)
	}
}

// TestLongAllowlistsAreKeyedByAddress: a decision whose evaluation tested
// the address against more CIDRs than a shared entry may carry is kept for
// its own address only, so entries stay small however long allowlists get;
// decisions stay those of an evaluation.
func TestLongAllowlistsAreKeyedByAddress(t *testing.T) {
	eng := demoEngineTenant7Sixteens(t, 2*memo.MaxTraceTests)
	s, plain := newServer(t, eng), newServer(t, eng)
	plain.NoMemo = true
	r := req("GET", "/v1/orders", map[string]string{"x-api-key": tenant7Key, "x-tenant-id": "7"})
	// An address outside the list first: the key has no shared entry yet.
	r.Attributes.Source.Address.GetSocketAddress().Address = "192.0.2.1"
	decide(t, s, r)
	m := memoOf(t, s)
	var kept facts.Key
	n := 0
	m.Range(func(k facts.Key, _ *memo.Entry) { kept, n = k, n+1 })
	if n != 1 || kept.Traced() || kept.Facts().ClientIP != netip.MustParseAddr("192.0.2.1") {
		t.Fatalf("memo after one request: %d keys, %+v", n, kept)
	}
	keptFacts := kept.Facts()
	traced := keptFacts.Key(facts.Reads{ClientIPTraced: true})
	if m.Get(traced, netip.MustParseAddr("192.0.2.1")) == nil {
		t.Fatal("a repeat from the same address misses the decision kept for it")
	}
	if m.Get(traced, netip.MustParseAddr("192.0.2.9")) != nil {
		t.Fatal("another address finds the decision kept for 192.0.2.1")
	}
	for range 2 {
		for _, a := range []string{"192.0.2.1", "192.0.2.2", "10.0.0.1", "10.31.9.9", "10.32.0.1"} {
			r.Attributes.Source.Address.GetSocketAddress().Address = a
			got, _, _ := decide(t, s, r)
			want, _, _ := decide(t, plain, r)
			if got != want {
				t.Fatalf("from %s: memo says %s, evaluation says %s", a, got, want)
			}
		}
	}
	byAddr := 0
	memoOf(t, s).Range(func(k facts.Key, e *memo.Entry) {
		if len(e.Out.IPTests) > memo.MaxTraceTests {
			t.Errorf("key %+v keeps %d tests", k, len(e.Out.IPTests))
		}
		if !k.Traced() && k.Facts().ClientIP.IsValid() {
			byAddr++
		}
	})
	if byAddr < 3 { // 192.0.2.1, 192.0.2.2 and 10.32.0.1 test all 32 CIDRs
		t.Errorf("%d decisions kept by address, want at least 3", byAddr)
	}
}

// TestMemoCountsTheTestsItHolds: as variants come and go (more than
// memo.MaxVariants address classes for one key), the memo's count of the tests
// its decisions carry stays the sum over what it holds, so its bound clears
// it neither early nor late.
func TestMemoCountsTheTestsItHolds(t *testing.T) {
	eng := demoEngineTenant7Sixteens(t, memo.MaxTraceTests)
	s := newServer(t, eng)
	r := req("GET", "/v1/orders", map[string]string{"x-api-key": tenant7Key, "x-tenant-id": "7"})
	for i := range 3 * memo.MaxVariants {
		// Each /16 of the list answers the tests differently: a variant each.
		r.Attributes.Source.Address.GetSocketAddress().Address = fmt.Sprintf("10.%d.1.1", i%memo.MaxTraceTests)
		if reason, _, _ := decide(t, s, r); reason != "ok" {
			t.Fatalf("10.%d.1.1: %s", i%memo.MaxTraceTests, reason)
		}
		held, variants := 0, 0
		counted := memoOf(t, s).Range(func(_ facts.Key, e *memo.Entry) {
			held += len(e.Out.IPTests)
			variants++
		})
		if counted != held || variants > memo.MaxVariants+1 {
			t.Fatalf("after %d requests: counted %d tests, holds %d in %d variants", i+1, counted, held, variants)
		}
	}
}

// The memo's keys hold what a client sent, and a client without any
// credential can send many: the heap they leave stays within the memo's
// budget (about 64 MiB). Each case grew the heap well past its bound
// before: kilobyte tenant headers (remembered whole), a short path with a
// long query (the key's path kept the raw :path alive), many keys just
// under the size a key may have (no byte budget).
func TestMemoBoundedByBytes(t *testing.T) {
	heap := func() int64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return int64(ms.HeapAlloc)
	}
	pathReader := variantEngine(t, policyVariants[1]) // reads facts.path
	for _, c := range []struct {
		name  string
		eng   *engine.Engine
		n     int
		req   func(i int) *authv3.CheckRequest
		bound int64
	}{
		{"50 KB tenant headers", demoEngine(t), 3000, func(i int) *authv3.CheckRequest {
			return req("GET", "/v1/orders", map[string]string{"x-tenant-id": strconv.Itoa(i) + strings.Repeat("9", 50_000)})
		}, 32 << 20},
		{"8 KB queries", pathReader, 8000, func(i int) *authv3.CheckRequest {
			return req("GET", "/v1/orders/"+strconv.Itoa(i)+"?q="+strings.Repeat("a", 8000), nil)
		}, 32 << 20},
		{"4 KB tenant headers", demoEngine(t), 24000, func(i int) *authv3.CheckRequest {
			return req("GET", "/v1/orders", map[string]string{"x-tenant-id": strconv.Itoa(i) + strings.Repeat("9", 4000)})
		}, 80 << 20},
	} {
		s := newServer(t, c.eng)
		before := heap()
		for i := range c.n {
			if reason, _, _ := decide(t, s, c.req(i)); reason != "credentials_missing" {
				t.Fatalf("%s: check %d: %s", c.name, i, reason)
			}
		}
		grown := heap() - before
		runtime.KeepAlive(s) // the memo is measured in use
		if grown > c.bound {
			t.Errorf("%s: the heap grew by %d MiB over %d denied checks (bound %d MiB): the memo keeps what clients send", c.name, grown>>20, c.n, c.bound>>20)
		}
	}
}

// memoOf is the memo of s's engine.
func memoOf(t *testing.T, s *Server) *memo.Memo {
	t.Helper()
	m, ok := s.Engines.Current().Decider.(*memo.Memo)
	if !ok {
		t.Fatalf("the policy is not memoized: %T", s.Engines.Current().Decider)
	}
	return m
}

// demoEngineTenant7Sixteens is the demo policy with tenant 7's allowlist
// replaced by n /16 networks: 10.0.0.0/16, 10.1.0.0/16, …
func demoEngineTenant7Sixteens(t *testing.T, n int) *engine.Engine {
	t.Helper()
	src, err := policy.LoadFS(policies.FS, "policies")
	if err != nil {
		t.Fatal(err)
	}
	var cidrs []any
	for i := range n {
		cidrs = append(cidrs, fmt.Sprintf("10.%d.0.0/16", i))
	}
	src.Data["extauthz"].(map[string]any)["tenants"].(map[string]any)["7"] = map[string]any{"allowed_cidrs": cidrs}
	eng, err := engine.Build(context.Background(), src, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return eng
}
