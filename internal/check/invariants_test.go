package check

import (
	"context"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	gojwt "github.com/golang-jwt/jwt/v5"
	"google.golang.org/protobuf/proto"

	"github.com/extauthz/extauthz/internal/engine"
	"github.com/extauthz/extauthz/internal/policy"
	"github.com/extauthz/extauthz/internal/wire"
	"github.com/extauthz/extauthz/policies"
)

// The invariants of the check path, tested over generated requests rather
// than examples:
//
//   - tenant isolation: an allow means every tenant the request names is
//     held by the credential in that header's dimension;
//   - memo ≡ evaluation: a memoizing server answers every request exactly as
//     a server that evaluates the policy afresh, for the shipped rulebook
//     and for realistic edits of it.

var signingKey = func() *rsa.PrivateKey {
	k, err := gojwt.ParseRSAPrivateKeyFromPEM([]byte(mustRead("../../testdata/demo_signing_key.pem")))
	if err != nil {
		panic(err)
	}
	return k
}()

// mintJWT signs a token the demo issuer accepts; sub or tenant "" leaves
// that claim out.
func mintJWT(sub, tenant, scope string) string {
	claims := gojwt.MapClaims{
		"iss": "https://issuer.extauthz.example", "aud": "extauthz-demo", "scope": scope,
		"iat": testNow.Add(-time.Hour).Unix(), "nbf": testNow.Add(-time.Hour).Unix(), "exp": testNow.Add(time.Hour).Unix(),
	}
	if sub != "" {
		claims["sub"] = sub
	}
	if tenant != "" {
		claims["tenant"] = tenant
	}
	tok := gojwt.NewWithClaims(gojwt.SigningMethodRS256, claims)
	tok.Header["kid"] = "demo-2026"
	s, err := tok.SignedString(signingKey)
	if err != nil {
		panic(err)
	}
	return s
}

// credentialPool is every kind of credential the generators draw from:
// keys with and without grants per dimension, tokens with and without the
// tenant claim, and broken ones.
var credentialPool = func() []map[string]string {
	key := func(k string) map[string]string { return map[string]string{"x-api-key": k} }
	bearer := func(t string) map[string]string { return map[string]string{"authorization": "Bearer " + t} }
	return []map[string]string{
		{}, key(demoKey), key(readonlyKey), key(tenant7Key), key(aidellyKey), key(freeKey), key(expiredKey),
		key(revokedKey), key(suspendedKey), key("xa_unknown_key_1"), bearer(aidellyKey), bearer(demoKey),
		bearer(demoJWT), bearer(expiredJWT), bearer("a.b.c"),
		bearer(mintJWT("user:no-tenant", "", "orders:read orders:write admin calls:read posts:read")),
		bearer(mintJWT("user:t7", "7", "orders:read admin")),
		bearer(mintJWT("user:t42", "42", "orders:read")),
		{"x-api-key": demoKey, "authorization": "Bearer " + demoJWT},
	}
}()

var (
	pathPool = []string{
		"/v1/orders", "/v1/orders/17?expand=items", "/v1/orders/secret/x", "/v1/calls", "/v1/posts", "/v1/posts/9",
		"/healthz", "/v1/admin/users", "/nope", "/v1/orders/%2e%2e/admin", "/v1//orders", "/v1/orders;x=1",
		"/v1/orders/%252e%252e/admin", "/V1/Orders", "/v1/public/x",
	}
	methodPool = []string{"GET", "POST", "DELETE", "HEAD", "PATCH", "OPTIONS"}
	tenantPool = []string{"42", "7", "43", "", "abc", "ws_1", "br_1", "0", "42,43", "ws_2"}
	addrPool   = []string{"127.0.0.1", "10.0.0.1", "10.255.255.255", "11.0.0.0", "9.255.255.255", "::ffff:10.0.0.1",
		"2001:db8::1", "fe80::1%eth0", "", "not-an-ip", "10.9.0.1", "10.9.255.255"}
	cePool = []map[string]string{
		nil, nil, nil, {"scopes": ""}, {"auth": ""}, {"scopes": "orders:read"}, {"auth": "jwt"}, {"auth": "public"},
		{"route": "orders-read"}, {"route": "health"}, {"tenant_required": "false"}, {"tenant_header": "X-Tenant-Id", "tenant_format": "any"},
		{"profile": "aidial"}, {"profile": "nope"}, {"route": "default"},
		{"shadow": "*"}, {"shadow": "tenant_forbidden,tenant_header_invalid"}, {"auth": "public", "tenant_header": "X-Tenant-Id"},
		{"tenant_header": "X-Org-Id"},
	}
)

// genRequest draws a request from the pools.
func genRequest(rng *rand.Rand) *authv3.CheckRequest {
	pick := func(n int) int { return rng.IntN(n) }
	h := map[string]string{}
	for k, v := range credentialPool[pick(len(credentialPool))] {
		h[k] = v
	}
	for _, name := range []string{"x-tenant-id", "x-workspace-id", "x-brand-id"} {
		if pick(3) > 0 {
			h[name] = tenantPool[pick(len(tenantPool))]
		}
	}
	if pick(4) == 0 {
		h["cookie"] = "s=1"
	}
	if pick(2) == 0 {
		h["idempotency-key"] = "k1"
	}
	r := req(methodPool[pick(len(methodPool))], pathPool[pick(len(pathPool))], h)
	r.Attributes.Request.Http.Headers["x-request-id"] = fmt.Sprintf("req-%d", pick(1<<30))
	r.Attributes.Source.Address.GetSocketAddress().Address = addrPool[pick(len(addrPool))]
	if ce := cePool[pick(len(cePool))]; ce != nil {
		r.Attributes.ContextExtensions = ce
	}
	return r
}

// policyVariant is the shipped rulebook and data with realistic edits.
type policyVariant struct {
	name    string
	edit    func(rego string) string // of extauthz.rego
	modules map[string]string        // added modules
	data    func(d map[string]any)   // edit of data.extauthz
	pure    bool                     // whether the memo applies
}

// beforeAllow inserts a deny rule into the decision chain, after the
// rulebook's own denials and before its allows.
func beforeAllow(rule string) func(string) string {
	return func(rego string) string {
		const anchor = "} else := allow if {\n\troute.public"
		if !strings.Contains(rego, anchor) {
			panic("rulebook changed: no anchor for a variant")
		}
		return strings.Replace(rego, anchor, rule+"\n"+anchor, 1)
	}
}

var policyVariants = []policyVariant{
	{name: "shipped", pure: true},
	{name: "deny path prefix", pure: true, edit: beforeAllow(`} else := deny("route_not_found") if {
	startswith(facts.path, "/v1/orders/secret")`)},
	{name: "deny method and key", pure: true, edit: beforeAllow(`} else := deny("key_revoked") if {
	identity.key_id == "demo-readonly"
	facts.method == "HEAD"`)},
	{name: "ip blocklist", pure: true, edit: beforeAllow(`} else := deny("ip_not_allowed") if {
	net.cidr_contains("10.9.0.0/16", facts.client_ip)`)},
	{name: "ip blocklist through extauthz.client_in", pure: true, edit: beforeAllow(`} else := deny("ip_not_allowed") if {
	extauthz.client_in({"10.9.0.0/16", "2001:db8::/48"}, facts.client_ip)`)},
	{name: "client address compared as text", pure: true, edit: beforeAllow(`} else := deny("ip_not_allowed") if {
	startswith(facts.client_ip, "10.0.")`)},
	{name: "helper package, every and comprehensions", pure: true,
		modules: map[string]string{"lib.rego": `package lib

blocked_methods := {"DELETE", "OPTIONS"}

admin_scopes(id) := {s | some s in id.scopes; startswith(s, "admin")}

all_tenants_numeric(values) if {
	every _, v in values {
		regex.match("^[0-9]+$", v)
	}
}
`},
		edit: beforeAllow(`} else := deny("scope_missing") if {
	data.lib.blocked_methods[facts.method]
	count(data.lib.admin_scopes(identity)) == 0
} else := deny("tenant_header_invalid") if {
	route.id == "orders-write"
	not data.lib.all_tenants_numeric(facts.tenant_values)`)},
	{name: "time-dependent", pure: false, edit: beforeAllow(`} else := deny("internal_error") if {
	time.now_ns() < 0`)},
	{name: "certificate check", pure: false, edit: beforeAllow(`} else := deny("internal_error") if {
	facts.method == "TRACE"
	crypto.x509.parse_and_verify_certificates("")[0]`)},
	{name: "default route and tenant allowlist", pure: true, data: func(d map[string]any) {
		d["default_route"] = map[string]any{"auth": []any{"api_key"}, "scopes": []any{"orders:read"}}
		d["tenants"] = map[string]any{"42": map[string]any{"allowed_cidrs": []any{"127.0.0.0/8", "10.0.0.0/8", "2001:db8::/32"}}}
	}},
}

func variantEngine(t testing.TB, v policyVariant) *engine.Engine {
	t.Helper()
	src, err := policy.LoadFS(policies.FS, "policies")
	if err != nil {
		t.Fatal(err)
	}
	if v.edit != nil {
		src.Modules["extauthz.rego"] = v.edit(src.Modules["extauthz.rego"])
	}
	for n, m := range v.modules {
		src.Modules[n] = m
	}
	if v.data != nil {
		root := src.Data["extauthz"].(map[string]any)
		for _, name := range []string{"default_route", "tenants"} {
			if sec, ok := root[name].(*policy.Section); ok { // a raw section: decode to edit
				raw, _ := sec.Bytes()
				var x any
				_ = json.Unmarshal(raw, &x)
				root[name] = x
			}
		}
		v.data(root)
	}
	e, err := engine.Build(context.Background(), src, engine.Options{Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatalf("variant %q: %v", v.name, err)
	}
	if got := e.Policy.Pure(); got != v.pure {
		t.Fatalf("variant %q: pure %v, want %v (%s)", v.name, got, v.pure, e.Policy.Purity().Why)
	}
	return e
}

// comparable strips what differs between two servers for the same request:
// the decision id, which every response carries (Envoy's local replies
// tell the sidecar's answers from Envoy's own by it).
func comparable(t testing.TB, resp *authv3.CheckResponse) *authv3.CheckResponse {
	t.Helper()
	c := proto.Clone(resp).(*authv3.CheckResponse)
	f := c.GetDynamicMetadata().GetFields()
	if f["decision_id"].GetStringValue() == "" {
		t.Fatalf("response without decision_id: %v", resp)
	}
	delete(f, "decision_id")
	return c
}

// wireCheck is what the gRPC server sends for r, decoded.
func wireCheck(t testing.TB, s *Server, r *authv3.CheckRequest) *authv3.CheckResponse {
	t.Helper()
	switch out := s.CheckWire(context.Background(), r).(type) {
	case *authv3.CheckResponse:
		// gRPC encodes it after the handler returns: one that does not
		// encode (a string that is not UTF-8) reaches Envoy as an error.
		if _, err := proto.Marshal(out); err != nil {
			t.Fatalf("the response does not encode (gRPC would send an error instead): %v", err)
		}
		return out
	case wire.Encoded:
		var m authv3.CheckResponse
		if err := proto.Unmarshal(out, &m); err != nil {
			t.Fatalf("encoded response does not decode: %v", err)
		}
		return &m
	default:
		t.Fatalf("CheckWire returned %T", out)
		return nil
	}
}

// differ checks one request against a memoizing and a fresh server; each
// request goes to each server twice (quotas count both), the memo's second
// answer usually served from the memo.
func differ(t testing.TB, memo, fresh *Server, r *authv3.CheckRequest) {
	t.Helper()
	for i := range 2 {
		want := comparable(t, wireCheck(t, fresh, r))
		got := comparable(t, wireCheck(t, memo, r))
		if !proto.Equal(got, want) {
			t.Fatalf("memo (call %d) and evaluation differ for %v\nmemo: %v\neval: %v", i+1, r.GetAttributes(), got, want)
		}
	}
}

func TestMemoEqualsEvaluation(t *testing.T) {
	n := 400 // per variant; FuzzMemoEqualsEvaluation goes further
	if testing.Short() {
		n = 100
	}
	for _, v := range policyVariants {
		t.Run(v.name, func(t *testing.T) {
			eng := variantEngine(t, v)
			memo, fresh := newServer(t, eng), newServer(t, eng)
			fresh.NoMemo = true
			rng := rand.New(rand.NewPCG(1, uint64(len(v.name))))
			corpus := make([]*authv3.CheckRequest, n)
			for i := range corpus {
				corpus[i] = genRequest(rng)
			}
			for _, r := range append(corpus, corpus...) { // the second pass meets a warm memo
				differ(t, memo, fresh, r)
			}
		})
	}
}

// The three wrong allows a memo keyed by hand-kept fields gave, each as a
// sequence where the first request fills the memo and the second must not
// take its decision.
func TestMemoDoesNotConfuseRequests(t *testing.T) {
	t.Run("a route named default and the default route", func(t *testing.T) {
		eng := variantEngine(t, policyVariants[len(policyVariants)-1])
		memo, fresh := newServer(t, eng), newServer(t, eng)
		fresh.NoMemo = true
		differ(t, memo, fresh, req("GET", "/v2/unrouted", map[string]string{"x-api-key": demoKey}))
		r := req("GET", "/v2/unrouted", map[string]string{"x-api-key": demoKey})
		r.Attributes.ContextExtensions = map[string]string{"route": "default"}
		differ(t, memo, fresh, r)
	})
	t.Run("an empty override and an absent one", func(t *testing.T) {
		eng := demoEngine(t)
		memo, fresh := newServer(t, eng), newServer(t, eng)
		fresh.NoMemo = true
		// auth "" takes every kind, scopes "" requires none; absent keeps the
		// route's (jwt only, scope admin).
		for _, ce := range []map[string]string{{"route": "admin", "auth": "", "scopes": ""}, {"route": "admin", "auth": ""}, {"route": "admin", "scopes": ""}, {"route": "admin"}, {"route": "admin", "auth": "jwt"}} {
			r := req("GET", "/v1/admin/users", map[string]string{"x-api-key": readonlyKey})
			r.Attributes.ContextExtensions = ce
			differ(t, memo, fresh, r)
		}
	})
	t.Run("a time-dependent builtin", func(t *testing.T) {
		eng := engineWith(t, `package extauthz
decision := {"allow": false, "reason": "internal_error"} if crypto.x509.parse_and_verify_certificates("")
decision := {"allow": false, "reason": "credentials_missing"} if not crypto.x509.parse_and_verify_certificates("")
`)
		if eng.Policy.Pure() {
			t.Fatal("a policy verifying certificates (which expire) is memoized")
		}
	})
}

// TestTenantIsolation: whatever the credential, route, context extensions
// and tenant headers, an allow means the credential holds every tenant
// value the request names, in that header's dimension, and the upstream
// gets no tenant header the route did not verify; an anonymous allow
// happens only on a public route and passes no tenant upstream.
func TestTenantIsolation(t *testing.T) {
	n := 4000
	if testing.Short() {
		n = 800
	}
	eng := demoEngine(t)
	s := newServer(t, eng)
	rng := rand.New(rand.NewPCG(7, 7))
	allows := 0
	for range n {
		r := genRequest(rng)
		if rng.IntN(2) == 0 { // a loopback source, so allowlists do not hide the tenant checks
			r.Attributes.Source.Address.GetSocketAddress().Address = "127.0.0.1"
		}
		resp := wireCheck(t, s, r)
		if resp.GetOkResponse() == nil {
			continue
		}
		allows++
		var in request
		s.requestToInput(context.Background(), eng, r, testNow, "x", &in)
		set := map[string]string{}
		for _, h := range resp.GetOkResponse().GetHeaders() {
			set[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
		}
		// A tenant header reaches the upstream only when this route
		// verifies it and the verified identity holds its value in the
		// header's dimension: not on another route, not from an anonymous
		// caller, not past a shadowed tenant denial.
		removed := resp.GetOkResponse().GetHeadersToRemove()
		id := in.f.Identity()
		for _, k := range eng.TenantHeaders {
			v, sent := r.GetAttributes().GetRequest().GetHttp().GetHeaders()[k]
			held := false
			if in.f.Route != nil && id != nil {
				for _, th := range in.f.Route.Req.TenantHeaders {
					held = held || (th.Key == k && v != "" && slices.Contains(id.Tenants[th.Dimension], v))
				}
			}
			if sent && !held && !slices.Contains(removed, k) {
				t.Fatalf("allow passes %s: %q upstream, not verified for this route and identity (ce %v): %v", k, v, r.GetAttributes().GetContextExtensions(), r.GetAttributes())
			}
			if sent && held && slices.Contains(removed, k) {
				t.Fatalf("allow removes %s: %q, verified for this route and identity: %v", k, v, r.GetAttributes())
			}
		}
		if id == nil {
			if in.f.Route == nil || (!in.f.Route.Req.Public && !in.f.Route.Shadows("credentials_missing") && !in.f.Route.Shadows("token_invalid")) {
				t.Fatalf("anonymous allow on a non-public route that shadows no credential denial: %v", r.GetAttributes())
			}
			if _, ok := set["x-auth-tenant"]; ok {
				t.Fatalf("anonymous allow passes a tenant upstream: %v", r.GetAttributes())
			}
			continue
		}
		for i, th := range in.f.Route.Req.TenantHeaders {
			v, ok := in.f.Tenants.Get(i)
			if ok && !slices.Contains(id.Tenants[th.Dimension], v) && !slices.Contains(in.f.Route.Req.Shadow, "*") && !in.f.Route.Shadows("tenant_forbidden") && !in.f.Route.Shadows("tenant_header_invalid") {
				t.Fatalf("allowed %s=%q for a credential holding %v: %v", th.Header, v, id.Tenants, r.GetAttributes())
			}
		}
		if tn := set["x-auth-tenant"]; tn != "" && !slices.ContainsFunc(mapsValues(id.Tenants), func(ts []string) bool { return slices.Contains(ts, tn) }) {
			t.Fatalf("upstream tenant %q not held by %v", tn, id.Tenants)
		}
	}
	if allows < n/50 {
		t.Fatalf("only %d of %d generated requests allowed: the generator no longer reaches allows", allows, n)
	}
}

func mapsValues(m map[string][]string) [][]string {
	out := make([][]string, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// FuzzMemoEqualsEvaluation: requests built from fuzzed bytes (any path,
// tenant values and address) get the same answer from the memo as from a
// fresh evaluation, under the shipped rulebook and the IP-blocklist edit.
func FuzzMemoEqualsEvaluation(f *testing.F) {
	f.Add(uint16(0), "/v1/orders", "42", "127.0.0.1", "")
	f.Add(uint16(3), "/v1/posts", "ws_1", "10.9.0.1", "scopes")
	f.Add(uint16(17), "/v1/orders/%252%65%252%65/admin", "7", "::ffff:10.0.0.1", "auth")
	f.Add(uint16(200), "/healthz", "", "fe80::1%eth0", "route")
	var servers [2][2]*Server
	for i, v := range []policyVariant{policyVariants[0], policyVariants[3]} {
		eng := variantEngine(f, v)
		servers[i][0], servers[i][1] = newServer(f, eng), newServer(f, eng)
		servers[i][1].NoMemo = true
	}
	f.Fuzz(func(t *testing.T, sel uint16, path, tenant, addr, ceKey string) {
		h := map[string]string{}
		for k, v := range credentialPool[int(sel)%len(credentialPool)] {
			h[k] = v
		}
		h[[]string{"x-tenant-id", "x-workspace-id", "x-brand-id"}[int(sel>>8)%3]] = tenant
		r := req(methodPool[int(sel>>4)%len(methodPool)], path, h)
		r.Attributes.Source.Address.GetSocketAddress().Address = addr
		if ceKey != "" {
			r.Attributes.ContextExtensions = map[string]string{ceKey: tenant}
		}
		for _, s := range servers {
			differ(t, s[0], s[1], r)
		}
	})
}

// The shipped rulebook is memoized, with the client address traced.
func TestShippedRulebookStaysMemoizable(t *testing.T) {
	p := demoEngine(t).Policy.Purity()
	if !p.Pure || !p.TracesClientIP {
		t.Fatalf("shipped rulebook: %+v", p)
	}
}
