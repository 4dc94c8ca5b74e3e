package server

import (
	"context"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// BenchmarkGRPCCheck is one allowed check through the real gRPC server and
// client on loopback (the sidecar's whole per-check path but Envoy).
func BenchmarkGRPCCheck(b *testing.B) {
	c := authv3.NewAuthorizationClient(startServerConn(b, "tcp", "127.0.0.1:0"))
	req := checkReq(map[string]string{"x-api-key": "xa_demo_7Qm2vK9pL4sT8wZ1", "x-tenant-id": "42"})
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := c.Check(ctx, req)
			if err != nil || resp.GetOkResponse() == nil {
				b.Fatal(resp, err)
			}
		}
	})
}
