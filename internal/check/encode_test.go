package check

import (
	"context"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/extauthz/extauthz/internal/decision"
	"github.com/extauthz/extauthz/internal/engine"
	"github.com/extauthz/extauthz/internal/policy"
	"github.com/extauthz/extauthz/internal/wire"
	"github.com/extauthz/extauthz/policies"
)

type lastID struct{ id string }

func (l *lastID) Observe(_ context.Context, d *decision.Decision, _ time.Duration) { l.id = d.ID }

// TestCheckWireMatchesCheck: what the gRPC server sends (CheckWire, encoded
// from cached parts when the decision is memoized) decodes to the message
// Check builds, with this check's own decision id.
func TestCheckWireMatchesCheck(t *testing.T) {
	s := newServer(t, demoEngine(t))
	obs := &lastID{}
	s.Observers = []Observer{obs}
	cases := []struct {
		name        string
		method, uri string
		headers     map[string]string
		encoded     bool // a memoized decision, no rate limit applied
	}{
		{"api key allow", "GET", "/v1/orders/17", map[string]string{"x-api-key": demoKey, "x-tenant-id": "42"}, true},
		{"jwt allow", "GET", "/v1/orders/17", map[string]string{"authorization": "Bearer " + demoJWT, "x-tenant-id": "42"}, true},
		{"client copy of identity header removed", "GET", "/v1/orders/17", map[string]string{"x-api-key": demoKey, "x-tenant-id": "42", "x-auth-subject": "forged"}, true},
		{"public route", "GET", "/healthz", nil, true},
		{"starter plan: headers per request", "GET", "/v1/orders/17", map[string]string{"x-api-key": readonlyKey, "x-tenant-id": "42"}, false},
		{"ip allowlist deny", "GET", "/v1/orders/17", map[string]string{"x-api-key": tenant7Key, "x-tenant-id": "7"}, true},
		{"rate-limited plan: headers per request", "GET", "/v1/orders/17", map[string]string{"x-api-key": freeKey, "x-tenant-id": "42"}, false},
		{"deny", "GET", "/v1/orders/17", map[string]string{"x-tenant-id": "42"}, true},
		{"deny tenant", "GET", "/v1/orders/17", map[string]string{"x-api-key": demoKey, "x-tenant-id": "43"}, true},
		{"deny scope", "POST", "/v1/orders", map[string]string{"x-api-key": readonlyKey, "x-tenant-id": "42", "idempotency-key": "k"}, true},
		{"deny unknown key", "GET", "/v1/orders/17", map[string]string{"x-api-key": "xa_nope", "x-tenant-id": "42"}, true},
		{"aidial deny", "GET", "/v1/calls", map[string]string{"x-tenant-id": "42"}, true},
		{"aidelly deny", "GET", "/v1/posts", map[string]string{"authorization": "Bearer " + demoKey}, true},
	}
	ctx := context.Background()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := req(c.method, c.uri, c.headers)
			// A fresh request id each time: deny bodies and headers carry
			// it. One needs escaping; one request has none.
			for _, id := range []string{"req-0", "req-1", "q\"\\ \u2028\xff\x01", "", "req-4"} {
				if id == "" {
					delete(r.Attributes.Request.Http.Headers, "x-request-id")
				} else {
					r.Attributes.Request.Http.Headers["x-request-id"] = id
				}
				want, _ := s.Check(ctx, r) // also fills the memo
				out := s.CheckWire(ctx, r)
				var got *authv3.CheckResponse
				switch v := out.(type) {
				case wire.Encoded:
					if !c.encoded {
						t.Fatal("encoded, want a message")
					}
					got = &authv3.CheckResponse{}
					if err := proto.Unmarshal(v, got); err != nil {
						t.Fatalf("encoded response does not decode: %v", err)
					}
				case *authv3.CheckResponse:
					if c.encoded {
						t.Fatal("a message, want it encoded")
					}
					got = v
				default:
					t.Fatalf("CheckWire returned %T", out)
				}
				if id := got.GetDynamicMetadata().GetFields()["decision_id"].GetStringValue(); id != obs.id || id == "" {
					t.Fatalf("decision_id %q, want this check's %q", id, obs.id)
				}
				if c.encoded && len(got.GetOkResponse().GetResponseHeadersToAdd()) != 0 {
					t.Fatal("encoded allow carries per-request headers")
				}
				g, w := proto.Clone(got).(*authv3.CheckResponse), proto.Clone(want).(*authv3.CheckResponse)
				for _, m := range []*authv3.CheckResponse{g, w} {
					// With no x-request-id, the decision id stands in for it.
					id := m.DynamicMetadata.Fields["decision_id"].GetStringValue()
					if dr := m.GetDeniedResponse(); dr != nil {
						dr.Body = strings.ReplaceAll(dr.Body, id, "<id>")
						for _, h := range dr.Headers {
							h.Header.Value = strings.ReplaceAll(h.Header.Value, id, "<id>")
						}
					}
					m.DynamicMetadata.Fields["decision_id"] = structpb.NewStringValue("<id>")
				}
				if ok := g.GetOkResponse(); ok != nil && !c.encoded {
					// Remaining counts go down per check; the rest must agree.
					g.GetOkResponse().ResponseHeadersToAdd, w.GetOkResponse().ResponseHeadersToAdd = nil, nil
				}
				if !proto.Equal(g, w) {
					t.Fatalf("CheckWire and Check differ:\n got %v\nwant %v", g, w)
				}
			}
		})
	}
}

// TestCheckWireRateLimitedIsAMessage: a 429 carries per-request counters, so
// it is never assembled from memoized parts.
func TestCheckWireRateLimitedIsAMessage(t *testing.T) {
	s := newServer(t, demoEngine(t))
	r := req("GET", "/v1/orders/17", map[string]string{"x-api-key": freeKey, "x-tenant-id": "42"})
	for i := range 11 { // plan free: 10 per minute
		resp, ok := s.CheckWire(context.Background(), r).(*authv3.CheckResponse)
		if !ok {
			t.Fatalf("check %d: encoded, want a message", i+1)
		}
		if got := resp.GetDeniedResponse().GetStatus().GetCode(); (i < 10) != (got == 0) || (i == 10 && got != 429) {
			t.Fatalf("check %d: status %d", i+1, got)
		}
	}
}

// TestCheckWireUnpreparedDeny: a profile whose message carries the request id
// cannot be prepared, so a memoized deny is rendered per check, and each
// client still gets its own request id.
func TestCheckWireUnpreparedDeny(t *testing.T) {
	src, err := policy.LoadFS(policies.FS, "policies")
	if err != nil {
		t.Fatal(err)
	}
	ext := src.Data["extauthz"].(map[string]any)
	ext["settings"].(map[string]any)["default_profile"] = "team"
	ext["profiles"] = map[string]any{"team": map[string]any{"reasons": map[string]any{
		"tenant_forbidden": map[string]any{"status": 403, "code": "nope", "message": "denied, request {{request_id}}"},
	}}}
	e, err := engine.Build(context.Background(), src, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s := newServer(t, e)
	r := req("GET", "/v1/orders/17", map[string]string{"x-api-key": demoKey, "x-tenant-id": "43"})
	for _, id := range []string{"req-a", "req-b"} {
		r.Attributes.Request.Http.Headers["x-request-id"] = id
		out, ok := s.CheckWire(context.Background(), r).(wire.Encoded)
		if !ok {
			t.Fatal("memoized deny not encoded")
		}
		var got authv3.CheckResponse
		if err := proto.Unmarshal(out, &got); err != nil {
			t.Fatal(err)
		}
		dr := got.GetDeniedResponse()
		if want := `{"error":{"code":"nope","message":"denied, request ` + id + `","request_id":"` + id + `"}}`; dr.GetStatus().GetCode() != 403 || dr.GetBody() != want {
			t.Fatalf("%s: %d %s, want 403 %s", id, dr.GetStatus().GetCode(), dr.GetBody(), want)
		}
	}
}

// TestAllocationBudget: what the gRPC server runs per memoized check besides
// transport (CheckWire and the codec's marshal) stays within its allocation
// budget, allow or deny: allocations are what the collector charges every
// check for under load. The budget is today's count; raise it only with a
// measurement that says the new allocation is worth it.
func TestAllocationBudget(t *testing.T) {
	const budget = 7
	s := newServer(t, demoEngine(t))
	codec := wire.Codec(0)
	ctx := context.Background()
	for _, c := range []struct {
		name         string
		method, path string
		headers      map[string]string
	}{
		{"api key allow", "GET", "/v1/orders/17", map[string]string{"x-api-key": demoKey, "x-tenant-id": "42"}},
		{"cached jwt allow", "GET", "/v1/orders/17", map[string]string{"authorization": "Bearer " + demoJWT, "x-tenant-id": "42"}},
		{"401 deny", "GET", "/v1/orders/17", map[string]string{"x-tenant-id": "42"}},
		{"403 tenant deny", "GET", "/v1/orders/17", map[string]string{"x-api-key": demoKey, "x-tenant-id": "43"}},
		{"403 scope deny", "POST", "/v1/orders", map[string]string{"x-api-key": readonlyKey, "x-tenant-id": "42", "idempotency-key": "k"}},
	} {
		r := req(c.method, c.path, c.headers)
		if _, ok := s.CheckWire(ctx, r).(wire.Encoded); !ok { // fills the memo
			t.Fatalf("%s: not memoized", c.name)
		}
		allocs := testing.AllocsPerRun(200, func() {
			out, _ := codec.Marshal(s.CheckWire(ctx, r))
			out.Free()
		})
		if allocs > budget {
			t.Errorf("%s: %.0f allocations per check, budget %d", c.name, allocs, budget)
		}
	}
}
