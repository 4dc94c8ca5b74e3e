package loadtest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/extauthz/extauthz/internal/check"
	"github.com/extauthz/extauthz/internal/clientip"
	"github.com/extauthz/extauthz/internal/engine"
	"github.com/extauthz/extauthz/internal/source"
)

// scaleServer builds a check server on a generated policy of the given size.
func scaleServer(b *testing.B, sc Scale, noMemo bool) (*check.Server, func()) {
	b.Helper()
	dir := b.TempDir()
	if err := WriteScaledPolicy(dir, sc.Keys, sc.Tenants, sc.Routes); err != nil {
		b.Fatal(err)
	}
	eng, err := source.Engine(context.Background(), dir, engine.Options{})
	if err != nil {
		b.Fatal(err)
	}
	var h engine.Holder
	h.Store(eng)
	s := check.NewServer(&h, clientip.Resolver{})
	s.Timeout = 5 * time.Second
	s.NoMemo = noMemo
	s.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	return s, eng.Close
}

func scaleRequest(source, path string, headers map[string]string) *authv3.CheckRequest {
	h := map[string]string{":method": "GET", ":path": path, ":authority": "api.example.com", "user-agent": "bench/1", "accept": "*/*"}
	for k, v := range headers {
		h[k] = v
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:  &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: source}}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: path, Headers: h}},
	}}
}

// benchScale runs one allow in process, with the decision memo (what a
// server does for a repeated request) and without it (every decision
// evaluated by OPA, which shows that the policy's lookups are indexed).
func benchScale(b *testing.B, name string, sc Scale, r *authv3.CheckRequest) {
	for _, noMemo := range []bool{false, true} {
		s, done := scaleServer(b, sc, noMemo)
		if resp, _ := s.Check(context.Background(), r); resp.GetOkResponse() == nil {
			b.Fatalf("%s: not allowed: %v", name, resp)
		}
		variant := "memo"
		if noMemo {
			variant = "opa"
		}
		b.Run(name+"/"+variant, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				s.Check(context.Background(), r)
			}
		})
		done()
	}
}

// BenchmarkCheckKeys is an API-key allow with 10 to 1,000,000 keys in policy
// data: the cost must not grow with the key count.
func BenchmarkCheckKeys(b *testing.B) {
	r := scaleRequest("127.0.0.1", "/v1/orders/17", map[string]string{"x-api-key": DemoAPIKey, "x-tenant-id": "42"})
	for _, n := range []int{10, 1000, 100_000, 1_000_000} {
		benchScale(b, fmt.Sprint(n), Scale{Keys: n}, r)
	}
}

// BenchmarkCheckTenants is an allow for a key of a synthetic tenant whose IP
// allowlist the client is in, with 1 to 10,000 such tenants.
func BenchmarkCheckTenants(b *testing.B) {
	// Synthetic key 0 belongs to tenant 1000, allowlist 10.0.0.0/24.
	r := scaleRequest("10.0.0.7", "/v1/orders/17", map[string]string{"x-api-key": SyntheticKey(0), "x-tenant-id": "1000"})
	for _, n := range []int{1, 100, 10_000} {
		benchScale(b, fmt.Sprint(n), Scale{Keys: 10_007, Tenants: n}, r)
	}
}

// BenchmarkCheckRoutes is an allow on the last of 10 to 1,000 synthetic
// routes (after the demo routes).
func BenchmarkCheckRoutes(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		r := scaleRequest("127.0.0.1", fmt.Sprintf("/v1/svc%d/items/1", n-1), map[string]string{"x-api-key": SyntheticKey(0), "x-tenant-id": "42"})
		benchScale(b, fmt.Sprint(n), Scale{Keys: 100, Routes: n}, r)
	}
}
