package check

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/extauthz/extauthz/internal/decisionlog"
	"github.com/extauthz/extauthz/internal/metrics"
)

// Shadow decisions: a deny whose reason the route puts in shadow is allowed
// and recorded (decision log with the deny that would have been sent,
// metric, metadata); fail-closed failures are shadowed only when named.
func TestShadowDenies(t *testing.T) {
	eng := variantEngine(t, policyVariant{name: "shadow scope on orders-write", pure: true, data: func(d map[string]any) {
		for _, r := range d["routes"].([]any) {
			if r := r.(map[string]any); r["id"] == "orders-write" {
				r["shadow"] = []any{"scope_missing"}
			}
		}
	}})
	s := newServer(t, eng)
	var logs bytes.Buffer
	m := metrics.New(nil)
	s.Observers = []Observer{decisionlog.New(slog.New(slog.NewJSONHandler(&logs, nil)), "deny", 1), m}
	shadowCount := func() string {
		var b strings.Builder
		mfs, _ := m.Registry.Gather()
		for _, mf := range mfs {
			if mf.GetName() == "extauthz_shadow_denies_total" {
				for _, x := range mf.GetMetric() {
					b.WriteString(x.String())
				}
			}
		}
		return b.String()
	}

	// Route data: scope_missing is shadowed on orders-write, nothing else.
	reason, status, resp := decide(t, s, req("POST", "/v1/orders", map[string]string{"x-api-key": readonlyKey, "x-tenant-id": "42", "idempotency-key": "k"}))
	if reason != "ok" || status != 200 || resp.GetOkResponse() == nil {
		t.Fatalf("shadowed scope_missing: %s %d %v", reason, status, resp)
	}
	if got := resp.GetDynamicMetadata().GetFields()["shadow_reason"].GetStringValue(); got != "scope_missing" {
		t.Errorf("metadata shadow_reason %q", got)
	}
	if !strings.Contains(logs.String(), `"shadow":{"reason":"scope_missing","status":403,"body":"{\"error\":{\"code\":\"scope_missing\"`) {
		t.Errorf("decision log lacks the deny that would have been sent: %s", logs.String())
	}
	if c := shadowCount(); !strings.Contains(c, `value:"scope_missing"`) || !strings.Contains(c, `value:"orders-write"`) || !strings.Contains(c, "counter:{value:1 ") {
		t.Errorf("metric: %s", c)
	}
	if reason, _, _ := decide(t, s, req("POST", "/v1/orders", map[string]string{"x-api-key": demoKey, "x-tenant-id": "43", "idempotency-key": "k"})); reason != "tenant_forbidden" {
		t.Errorf("tenant_forbidden is not shadowed there, got %s", reason)
	}

	// Context extensions: "*" shadows every verdict on the request ...
	r := req("GET", "/v1/orders", map[string]string{"x-tenant-id": "42"})
	r.Attributes.ContextExtensions = map[string]string{"shadow": "*"}
	reason, _, resp = decide(t, s, r)
	if reason != "ok" || resp.GetOkResponse() == nil {
		t.Fatalf("credentials_missing under shadow *: %s", reason)
	}
	for _, h := range resp.GetOkResponse().GetHeaders() {
		if strings.HasPrefix(h.GetHeader().GetKey(), "x-auth-") {
			t.Errorf("an anonymous shadowed request carries %s upstream", h.GetHeader().GetKey())
		}
	}
	// ... but not a fail-closed failure, unless it is named.
	r.Attributes.ContextExtensions = map[string]string{"shadow": "*", "profile": "no-such-profile"}
	if reason, _, _ := decide(t, s, r); reason != "internal_error" {
		t.Errorf("internal_error shadowed by *: %s", reason)
	}
	r = req("GET", "/v1/orders", map[string]string{"x-api-key": demoKey, "x-tenant-id": "42"})
	r.Attributes.ContextExtensions = map[string]string{"shadow": "bogus_reason"}
	if reason, _, _ := decide(t, s, r); reason != "internal_error" {
		t.Errorf("an unknown reason in the shadow extension: %s", reason)
	}
}
