package check

import (
	"context"
	"maps"
	"slices"
	"strings"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"

	"github.com/extauthz/extauthz/internal/wire"
)

// wireReply is what the gRPC server sends for r: CheckWire's answer decoded
// (the second call of a memoizable request comes from the memo, encoded).
func wireReply(t *testing.T, s *Server, r *authv3.CheckRequest) *authv3.CheckResponse {
	t.Helper()
	switch v := s.CheckWire(context.Background(), r).(type) {
	case wire.Encoded:
		var resp authv3.CheckResponse
		if err := proto.Unmarshal(v, &resp); err != nil {
			t.Fatalf("encoded reply does not decode: %v", err)
		}
		return &resp
	case *authv3.CheckResponse:
		return v
	default:
		t.Fatalf("CheckWire returned %T", v)
		return nil
	}
}

func metadataOf(resp *authv3.CheckResponse) map[string]string {
	out := map[string]string{}
	for k, v := range resp.GetDynamicMetadata().GetFields() {
		out[k] = v.GetStringValue()
	}
	return out
}

// The dynamic metadata of every reply carries exactly the documented
// fields: by default decision_id, reason (and shadow_reason when a deny was
// shadowed); with FullMetadata (--reply-metadata=full) also policy_version,
// profile, route and the verified identity. Both the message (Check) and
// the encoded reply from the memo (CheckWire) say the same.
func TestReplyMetadataFields(t *testing.T) {
	eng := variantEngine(t, policyVariant{name: "shadow scope on orders-write", pure: true, data: func(d map[string]any) {
		for _, r := range d["routes"].([]any) {
			if r := r.(map[string]any); r["id"] == "orders-write" {
				r["shadow"] = []any{"scope_missing"}
			}
		}
	}})
	full := []string{"decision_id", "reason", "policy_version", "profile", "route"}
	identity := []string{"subject", "key_id", "tenant"}
	for _, c := range []struct {
		name          string
		r             *authv3.CheckRequest
		reason        string
		minimal, rich []string
	}{
		{"allow", req("GET", "/v1/orders", map[string]string{"x-api-key": demoKey, "x-tenant-id": "42"}), "ok",
			[]string{"decision_id", "reason"}, slices.Concat(full, identity)},
		{"401 credentials_missing", req("GET", "/v1/orders", map[string]string{"x-tenant-id": "42"}), "credentials_missing",
			[]string{"decision_id", "reason"}, full},
		{"403 tenant_forbidden", req("GET", "/v1/orders", map[string]string{"x-api-key": demoKey, "x-tenant-id": "43"}), "tenant_forbidden",
			[]string{"decision_id", "reason"}, slices.Concat(full, []string{"subject", "key_id"})},
		{"shadowed scope_missing", req("POST", "/v1/orders", map[string]string{"x-api-key": readonlyKey, "x-tenant-id": "42", "idempotency-key": "k"}), "ok",
			[]string{"decision_id", "reason", "shadow_reason"}, slices.Concat(full, identity, []string{"plan", "shadow_reason"})},
	} {
		for _, rich := range []bool{false, true} {
			want := c.minimal
			if rich {
				want = c.rich
			}
			slices.Sort(want)
			s := newServer(t, eng)
			s.FullMetadata = rich
			for i, resp := range []*authv3.CheckResponse{wireReply(t, s, c.r), wireReply(t, s, c.r), mustCheck(t, s, c.r)} {
				md := metadataOf(resp)
				if got := slices.Sorted(maps.Keys(md)); !slices.Equal(got, want) {
					t.Errorf("%s, full %v, reply %d: metadata fields %v, want %v", c.name, rich, i, got, want)
				}
				if md["reason"] != c.reason || md["decision_id"] == "" {
					t.Errorf("%s, full %v, reply %d: metadata %v", c.name, rich, i, md)
				}
				if rich && (md["policy_version"] != eng.Version || md["route"] == "" || md["profile"] != "default") {
					t.Errorf("%s: full metadata %v", c.name, md)
				}
				if rich && slices.Contains(want, "tenant") && (md["tenant"] != "42" || md["subject"] == "" || md["key_id"] == "") {
					t.Errorf("%s: full metadata identity %v", c.name, md)
				}
			}
		}
	}
}

// Two servers sharing one engine (and so one decision memo) each send their
// own metadata set, whichever of them filled the memo first.
func TestReplyMetadataSharedMemo(t *testing.T) {
	eng := demoEngine(t)
	minimal, rich := newServer(t, eng), newServer(t, eng)
	rich.FullMetadata = true
	r := req("GET", "/v1/orders", map[string]string{"x-api-key": demoKey, "x-tenant-id": "42"})
	for range 2 {
		if md := metadataOf(wireReply(t, minimal, r)); len(md) != 2 {
			t.Errorf("default server: %v", md)
		}
		if md := metadataOf(wireReply(t, rich, r)); md["subject"] != "svc:orders-demo" || md["tenant"] != "42" {
			t.Errorf("full server: %v", md)
		}
	}
}

func mustCheck(t *testing.T, s *Server, r *authv3.CheckRequest) *authv3.CheckResponse {
	t.Helper()
	resp, err := s.Check(context.Background(), r)
	if err != nil || resp == nil || strings.TrimSpace(resp.String()) == "" {
		t.Fatalf("Check: %v %v", resp, err)
	}
	return resp
}
