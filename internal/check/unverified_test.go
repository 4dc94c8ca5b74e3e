package check

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/extauthz/extauthz/internal/decisionlog"
)

// Only verified values reach Envoy's dynamic metadata and the decision log:
// a tenant header the credential does not hold (CR/LF, a megabyte) is in
// neither, and the deny stays small.
func TestUnverifiedValuesStayOut(t *testing.T) {
	s := newServer(t, demoEngine(t))
	s.FullMetadata = true // the set that carries the tenant
	var logs bytes.Buffer
	s.Observers = []Observer{decisionlog.New(slog.New(slog.NewJSONHandler(&logs, nil)), "all", 1)}
	huge := "43\r\nx-injected: 1" + strings.Repeat("A", 1<<20)
	for _, tc := range []struct {
		name, tenant, reason string
	}{
		{"foreign tenant", "43", "tenant_forbidden"},
		{"a megabyte", "43" + strings.Repeat("A", 1<<20), "tenant_header_invalid"},
		{"CR/LF and a megabyte", huge, "request_invalid"}, // no client or Envoy sends CR/LF in a value
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs.Reset()
			reason, _, resp := decide(t, s, req("GET", "/v1/orders", map[string]string{"x-api-key": demoKey, "x-tenant-id": tc.tenant}))
			if reason != tc.reason {
				t.Fatalf("reason %s, want %s", reason, tc.reason)
			}
			if f := resp.GetDynamicMetadata().GetFields(); f["tenant"] != nil {
				t.Errorf("metadata carries the unverified tenant %q", f["tenant"].GetStringValue())
			}
			if strings.Contains(logs.String(), `"tenant":`) {
				t.Errorf("decision log carries the unverified tenant: %.200s", logs.String())
			}
			if n := proto.Size(resp); n > 8<<10 {
				t.Errorf("deny is %d bytes: the client's value is not capped", n)
			}
			if strings.Contains(resp.GetDeniedResponse().GetBody(), "\r\n") {
				t.Error("raw CR/LF in the body")
			}
		})
	}
	// The verified tenant is kept.
	logs.Reset()
	_, _, resp := decide(t, s, req("GET", "/v1/orders", map[string]string{"x-api-key": demoKey, "x-tenant-id": "42"}))
	if resp.GetDynamicMetadata().GetFields()["tenant"].GetStringValue() != "42" || !strings.Contains(logs.String(), `"tenant":"42"`) {
		t.Errorf("verified tenant missing: %v %s", resp.GetDynamicMetadata(), logs.String())
	}
}
