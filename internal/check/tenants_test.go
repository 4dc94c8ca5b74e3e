package check

import (
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/extauthz/extauthz/internal/authn/apikey"
)

// tenantEngine is the shipped policy with extra keys (plaintext -> record)
// and limits.tenants / tenants entries.
func tenantEngine(t *testing.T, keys map[string]map[string]any, limitTenants map[string]any, tenants map[string]any) *Server {
	t.Helper()
	return newServer(t, editedEngine(t, "api_keys", func(root map[string]any) {
		for k, rec := range keys {
			root["api_keys"].(map[string]any)[apikey.Hash(k)] = rec
		}
		if limitTenants != nil {
			root["limits"].(map[string]any)["tenants"] = limitTenants
		}
		for id, v := range tenants {
			root["tenants"].(map[string]any)[id] = v
		}
	}))
}

// Equal ids of two dimensions are two tenants: workspace 7 does not use
// tenant 7's quota, is not bound by its allowlist, and reaches the upstream
// as workspace:7, never as the bare 7 tenant 7 would be.
func TestTenantDimensionsDoNotShareQuotasOrAllowlists(t *testing.T) {
	s := tenantEngine(t, map[string]map[string]any{
		"k_ws7": {"id": "ws7", "tenants": map[string]any{"workspace": []any{"7"}}, "scopes": []any{"posts:read"}},
		"k_t7":  {"id": "t7", "tenants": []any{"7"}, "scopes": []any{"orders:read"}},
	}, map[string]any{"7": "free", "workspace:7": "free"}, map[string]any{"workspace:7": map[string]any{"allowed_cidrs": []any{"192.0.2.0/24"}}})

	ws := req("GET", "/v1/posts", map[string]string{"authorization": "Bearer k_ws7", "x-workspace-id": "7"})
	ws.Attributes.Source.Address.GetSocketAddress().Address = "192.0.2.10" // workspace 7's allowlist; tenant 7's is 10.0.0.0/8
	for i := range 10 {
		reason, _, resp := decide(t, s, ws)
		if reason != "ok" {
			t.Fatalf("workspace 7, check %d: %s, want ok", i+1, reason)
		}
		if got := upstreamHeader(resp, "x-auth-tenant"); got != "workspace:7" {
			t.Fatalf("x-auth-tenant = %q, want workspace:7", got)
		}
	}
	if reason, _, _ := decide(t, s, ws); reason != "rate_limited" {
		t.Fatalf("workspace 7, check 11: %s, want rate_limited (its own free plan)", reason)
	}
	// Tenant 7's quota is untouched by workspace 7's ten checks.
	t7 := req("GET", "/v1/orders", map[string]string{"x-api-key": "k_t7", "x-tenant-id": "7"})
	t7.Attributes.Source.Address.GetSocketAddress().Address = "10.1.2.3"
	reason, _, resp := decide(t, s, t7)
	if reason != "ok" || upstreamHeader(resp, "x-auth-tenant") != "7" {
		t.Fatalf("tenant 7 after workspace 7's quota ran out: %s, x-auth-tenant %q; want ok, 7", reason, upstreamHeader(resp, "x-auth-tenant"))
	}
	// Workspace 7's allowlist binds workspace 7, not tenant 7.
	ws.Attributes.Source.Address.GetSocketAddress().Address = "10.1.2.3"
	if reason, _, _ := decide(t, s, ws); reason != "ip_not_allowed" {
		t.Errorf("workspace 7 from outside its allowlist: %s, want ip_not_allowed", reason)
	}
}

// A request that names no tenant may act for any tenant its credential
// holds, so every one of their allowlists applies: a second grant must not
// lift the first one's restriction.
func TestEveryHeldTenantsAllowlistAppliesWhenNoneIsNamed(t *testing.T) {
	s := tenantEngine(t, map[string]map[string]any{
		"k_one": {"id": "one", "tenants": []any{"7"}, "scopes": []any{"calls:read"}},
		"k_two": {"id": "two", "tenants": []any{"7", "42"}, "scopes": []any{"calls:read"}},
		"k_dim": {"id": "dim", "tenants": map[string]any{"tenant": []any{"42"}, "region": []any{"eu"}}, "scopes": []any{"calls:read"}},
	}, nil, map[string]any{"region:eu": map[string]any{"allowed_cidrs": []any{"10.0.0.0/8"}}})
	for _, c := range []struct{ key, addr, want string }{
		{"k_one", "127.0.0.1", "ip_not_allowed"},
		{"k_two", "127.0.0.1", "ip_not_allowed"}, // was allowed: two tenants, neither applied
		{"k_two", "10.1.2.3", "ok"},
		{"k_dim", "127.0.0.1", "ip_not_allowed"}, // region eu's allowlist, though 42 has none
		{"k_dim", "10.1.2.3", "ok"},
	} {
		r := req("GET", "/v1/calls", map[string]string{"x-api-key": c.key})
		r.Attributes.Source.Address.GetSocketAddress().Address = c.addr
		if reason, _, _ := decide(t, s, r); reason != c.want {
			t.Errorf("%s from %s on a route without tenant headers: %s, want %s", c.key, c.addr, reason, c.want)
		}
	}
}

// upstreamHeader is the value an allow sets on the request to the upstream.
func upstreamHeader(resp *authv3.CheckResponse, name string) string {
	for _, h := range resp.GetOkResponse().GetHeaders() {
		if h.GetHeader().GetKey() == name {
			return h.GetHeader().GetValue()
		}
	}
	return ""
}

// Quotas count against every tenant the request acts for: a credential
// holding two tenants and naming none uses both tenants' plans (it used
// none), a later tenant header's plan applies beside the first's, and a
// grant in another dimension does not take a key's tenant quota away.
func TestQuotasCountEveryActedForTenant(t *testing.T) {
	s := newServer(t, editedEngine(t, "api_keys", func(root map[string]any) {
		keys := root["api_keys"].(map[string]any)
		keys[apikey.Hash("k_multi")] = map[string]any{"id": "multi", "tenants": []any{"42", "43"}, "scopes": []any{"orders:read", "calls:read"}}
		keys[apikey.Hash("k_mixed")] = map[string]any{"id": "mixed", "tenants": map[string]any{"tenant": []any{"42"}, "region": []any{"eu"}}, "scopes": []any{"calls:read"}}
		lim := root["limits"].(map[string]any)
		lim["plans"].(map[string]any)["tiny"] = map[string]any{"windows": []any{map[string]any{"limit": 3, "period": "minute"}}}
		lim["tenants"] = map[string]any{"42": "tiny", "brand:br_1": "tiny"}
	}))
	calls := func(key string) string {
		reason, _, _ := decide(t, s, req("GET", "/v1/calls", map[string]string{"x-api-key": key}))
		return reason
	}
	for i := range 3 {
		if got := calls("k_multi"); got != "ok" {
			t.Fatalf("multi-tenant key, check %d: %s", i+1, got)
		}
	}
	if got := calls("k_multi"); got != "rate_limited" {
		t.Errorf("multi-tenant key naming no tenant after tenant 42's 3: %s, want rate_limited (it ran unlimited)", got)
	}
	if got := calls("k_mixed"); got != "rate_limited" {
		t.Errorf("a key of tenant 42 (and region eu) after tenant 42's quota: %s, want rate_limited", got)
	}
	brand := req("GET", "/v1/posts", map[string]string{"authorization": "Bearer " + aidellyKey, "x-workspace-id": "ws_1", "x-brand-id": "br_1"})
	for i := range 3 {
		if reason, _, _ := decide(t, s, brand); reason != "ok" {
			t.Fatalf("brand br_1, check %d: %s", i+1, reason)
		}
	}
	if reason, _, _ := decide(t, s, brand); reason != "rate_limited" {
		t.Errorf("brand br_1's plan after 3 (workspace sent first): %s, want rate_limited", reason)
	}
}

// x-auth-tenant stays the key's only tenant of dimension tenant when it
// also holds grants in another dimension.
func TestAuthTenantIgnoresOtherDimensionsGrants(t *testing.T) {
	s := tenantEngine(t, map[string]map[string]any{
		"k_mixed": {"id": "mixed", "tenants": map[string]any{"tenant": []any{"42"}, "region": []any{"eu"}}, "scopes": []any{"calls:read"}},
		"k_ws":    {"id": "ws", "tenants": map[string]any{"workspace": []any{"w1"}}, "scopes": []any{"calls:read"}},
	}, nil, nil)
	for key, want := range map[string]string{"k_mixed": "42", "k_ws": "workspace:w1"} {
		reason, _, resp := decide(t, s, req("GET", "/v1/calls", map[string]string{"x-api-key": key}))
		if reason != "ok" || upstreamHeader(resp, "x-auth-tenant") != want {
			t.Errorf("%s: %s, x-auth-tenant %q; want ok, %q", key, reason, upstreamHeader(resp, "x-auth-tenant"), want)
		}
	}
}

// A tenant header the credential does not hold never counts: a shadowed
// tenant_forbidden lets the request through, but charges it neither to that
// tenant's quota nor runs it on that tenant's plan.
func TestShadowedTenantForbiddenChargesNoOtherTenant(t *testing.T) {
	s := newServer(t, editedEngine(t, "api_keys", func(root map[string]any) {
		root["api_keys"].(map[string]any)[apikey.Hash("k_t7")] = map[string]any{"id": "t7", "tenants": []any{"7"}, "scopes": []any{"orders:read"}, "plan": "free"}
		lim := root["limits"].(map[string]any)
		lim["plans"].(map[string]any)["tiny"] = map[string]any{"windows": []any{map[string]any{"limit": 3, "period": "minute"}}}
		lim["plans"].(map[string]any)["big"] = map[string]any{"windows": []any{map[string]any{"limit": 1000, "period": "minute"}}}
		lim["tenants"] = map[string]any{"42": "tiny", "99": "big"}
	}))
	shadowed := func(tenant string) string {
		r := req("GET", "/v1/orders", map[string]string{"x-api-key": "k_t7", "x-tenant-id": tenant})
		r.Attributes.Source.Address.GetSocketAddress().Address = "10.1.2.3"
		r.Attributes.ContextExtensions = map[string]string{"route": "orders-read", "shadow": "tenant_forbidden"}
		reason, _, _ := decide(t, s, r)
		return reason
	}
	for range 3 {
		if got := shadowed("42"); got != "ok" {
			t.Fatalf("shadowed tenant_forbidden: %s", got)
		}
	}
	if reason, _, _ := decide(t, s, req("GET", "/v1/orders", map[string]string{"x-api-key": demoKey, "x-tenant-id": "42"})); reason != "ok" {
		t.Errorf("tenant 42's own key after another key's shadowed requests: %s (they were charged to tenant 42)", reason)
	}
	allowed := 0
	for range 15 {
		if shadowed("99") == "ok" {
			allowed++
		}
	}
	if allowed+3 > 10 {
		t.Errorf("k_t7 (plan free, 10/minute) was allowed %d more times naming tenant 99: it ran on tenant 99's plan", allowed)
	}
}

// Nor does naming a tenant it does not hold take a key off its own
// tenant's plan: such a request (the header removed before the upstream)
// acts for every tenant the key holds, as one naming none. k_t7 (tenant 7,
// no plan of its own, tenant 7 on 3 a minute) spent 3 and then ran
// unlimited by sending X-Tenant-Id: 99 (red-team by helper-44).
func TestShadowedForeignTenantCountsOnTheKeysTenants(t *testing.T) {
	s := newServer(t, editedEngine(t, "api_keys", func(root map[string]any) {
		root["api_keys"].(map[string]any)[apikey.Hash("k_t7")] = map[string]any{"id": "t7", "tenants": []any{"7"}, "scopes": []any{"orders:read"}}
		lim := root["limits"].(map[string]any)
		lim["plans"].(map[string]any)["tiny"] = map[string]any{"windows": []any{map[string]any{"limit": 3, "period": "minute"}}}
		lim["tenants"] = map[string]any{"7": "tiny"}
		lim["default_plan"] = ""
		delete(root, "tenants") // no allowlists: only the quota decides
	}))
	shadowed := func(tenant string) string {
		r := req("GET", "/v1/orders", map[string]string{"x-api-key": "k_t7", "x-tenant-id": tenant})
		r.Attributes.ContextExtensions = map[string]string{"route": "orders-read", "shadow": "tenant_forbidden,tenant_header_invalid"}
		reason, _, _ := decide(t, s, r)
		return reason
	}
	for i := range 3 {
		if got := shadowed("7"); got != "ok" {
			t.Fatalf("tenant 7, check %d: %s", i+1, got)
		}
	}
	for _, foreign := range []string{"99", "7,99"} {
		if got := shadowed(foreign); got != "rate_limited" {
			t.Errorf("X-Tenant-Id %q after tenant 7's 3: %s, want rate_limited (it ran on no plan)", foreign, got)
		}
	}
}

// A verified token without a sub claim is counted like any other: under
// its issuer ("issuer|", shared by every such token of the issuer), by
// default_plan and route quotas alike. It used to have no principal, so
// default_plan never applied and it ran unlimited.
func TestTokensWithoutSubjectAreCounted(t *testing.T) {
	s := newServer(t, editedEngine(t, "limits", func(root map[string]any) {
		root["limits"].(map[string]any)["default_plan"] = "free" // 10 a minute
	}))
	for _, sub := range []string{"", "user:a"} {
		for i := range 11 {
			r := req("GET", "/v1/orders", map[string]string{"authorization": "Bearer " + mintJWT(sub, "42", "orders:read"), "x-tenant-id": "42"})
			reason, _, _ := decide(t, s, r)
			if want := map[bool]string{true: "ok", false: "rate_limited"}[i < 10]; reason != want {
				t.Fatalf("token with sub %q, check %d: %s, want %s", sub, i+1, reason, want)
			}
		}
	}
}
