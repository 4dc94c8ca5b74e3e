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
	"github.com/extauthz/extauthz/internal/server"
)

// BenchmarkCheckKeys is an API-key allow in process with 10 to 100,000 keys
// in policy data: the cost must not grow with the key count.
func BenchmarkCheckKeys(b *testing.B) {
	for _, n := range []int{10, 1000, 100_000} {
		dir := b.TempDir()
		if err := WriteScaledPolicy(dir, n, 0, 0); err != nil {
			b.Fatal(err)
		}
		eng, err := server.BuildEngine(context.Background(), dir)
		if err != nil {
			b.Fatal(err)
		}
		var h engine.Holder
		h.Store(eng)
		s := check.NewServer(&h, clientip.Resolver{})
		s.Timeout = 5 * time.Second
		s.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
		req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: "127.0.0.1"}}}},
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/v1/orders/17",
				Headers: map[string]string{":method": "GET", ":path": "/v1/orders/17", "x-api-key": "xa_demo_7Qm2vK9pL4sT8wZ1", "x-tenant-id": "42"}}},
		}}
		if resp, _ := s.Check(context.Background(), req); resp.GetOkResponse() == nil {
			b.Fatalf("%d keys: not allowed: %v", n, resp)
		}
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				s.Check(context.Background(), req)
			}
		})
		eng.Close()
	}
}
