package noopsrv_test

import (
	"context"
	"maps"
	"slices"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"

	"github.com/extauthz/extauthz/internal/check"
	"github.com/extauthz/extauthz/internal/clientip"
	"github.com/extauthz/extauthz/internal/engine"
	"github.com/extauthz/extauthz/internal/loadtest/noopsrv"
	"github.com/extauthz/extauthz/internal/source"
)

// The no-op server's --reply identity stands for extauthz's allow in
// extauthz-load-envoy: it must carry the same headers, removals and metadata
// fields as the reply extauthz (embedded policy, default settings) gives the
// request that tool sends, and be about as large.
func TestIdentityReplyHasExtauthzsShape(t *testing.T) {
	eng, err := source.Engine(context.Background(), "", engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var h engine.Holder
	h.Store(eng)
	srv := check.NewServer(&h, clientip.Resolver{})
	srv.Timeout = 5 * time.Second
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 40000}}}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "GET", Path: "/v1/orders", Host: "127.0.0.1:8000", Protocol: "HTTP/1.1",
			Headers: map[string]string{
				":method": "GET", ":path": "/v1/orders", ":authority": "127.0.0.1:8000", ":scheme": "http",
				"x-api-key": "xa_demo_7Qm2vK9pL4sT8wZ1", "x-tenant-id": "42", "x-request-id": "0b7c3f1e-5a2d-4c8e-9f61-2d3b4a5c6e7f",
			},
		}},
	}}
	got, err := srv.Check(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	want := noopsrv.IdentityReply()
	if got.GetStatus().GetCode() != 0 || got.GetOkResponse() == nil {
		t.Fatalf("extauthz did not allow the load request: %v", got)
	}
	headers := func(r *authv3.CheckResponse) map[string]string {
		m := map[string]string{}
		for _, h := range r.GetOkResponse().GetHeaders() {
			m[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
		}
		return m
	}
	if g, w := headers(got), headers(want); !maps.Equal(g, w) {
		t.Errorf("identity headers: extauthz sets %v, the no-op reply %v", g, w)
	}
	if g, w := got.GetOkResponse().GetHeadersToRemove(), want.GetOkResponse().GetHeadersToRemove(); !slices.Equal(g, w) {
		t.Errorf("removals: extauthz %v, the no-op reply %v", g, w)
	}
	if g, w := slices.Sorted(maps.Keys(got.GetDynamicMetadata().GetFields())), slices.Sorted(maps.Keys(want.GetDynamicMetadata().GetFields())); !slices.Equal(g, w) {
		t.Errorf("metadata fields: extauthz %v, the no-op reply %v", g, w)
	}
	if g, w := proto.Size(got), proto.Size(want); g < w-8 || g > w+8 {
		t.Errorf("reply size: extauthz %d bytes, the no-op reply %d", g, w)
	}
}
