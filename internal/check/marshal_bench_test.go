package check

import (
	"context"
	"testing"

	"google.golang.org/protobuf/proto"
)

// BenchmarkMarshalResponse is what gRPC pays to encode our allow and deny
// responses (the no-op floor returns an empty allow).
func BenchmarkMarshalResponse(b *testing.B) {
	s := newServer(b, demoEngine(b))
	for name, h := range map[string]map[string]string{
		"allow": {"x-api-key": demoKey, "x-tenant-id": "42"},
		"deny":  {"x-tenant-id": "42"},
	} {
		resp, _ := s.Check(context.Background(), req("GET", "/v1/orders/17", h))
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			n := 0
			for b.Loop() {
				out, _ := proto.Marshal(resp)
				n = len(out)
			}
			b.ReportMetric(float64(n), "bytes")
		})
		md := resp.DynamicMetadata
		resp.DynamicMetadata = nil
		b.Run(name+"_without_metadata", func(b *testing.B) {
			b.ReportAllocs()
			n := 0
			for b.Loop() {
				out, _ := proto.Marshal(resp)
				n = len(out)
			}
			b.ReportMetric(float64(n), "bytes")
		})
		resp.DynamicMetadata = md
	}
}
