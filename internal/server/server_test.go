package server

import (
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"

	"github.com/extauthz/extauthz/internal/check"
	"github.com/extauthz/extauthz/internal/clientip"
	"github.com/extauthz/extauthz/internal/engine"
	"github.com/extauthz/extauthz/internal/source"
)

func startServer(t *testing.T, network, addr string) authv3.AuthorizationClient {
	t.Helper()
	return authv3.NewAuthorizationClient(startServerConn(t, network, addr))
}

func startServerConn(t testing.TB, network, addr string) *grpc.ClientConn {
	t.Helper()
	eng, err := source.Engine(context.Background(), "", engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var h engine.Holder
	h.Store(eng)
	hs := health.NewServer()
	chk := check.NewServer(&h, clientip.Resolver{})
	chk.Timeout = 5 * time.Second // generous under -race; timeouts are tested in internal/check
	g := NewGRPCServer(chk, hs)
	lis, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	target := lis.Addr().String()
	if network == "unix" {
		target = "unix://" + addr
	}
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func checkReq(headers map[string]string) *authv3.CheckRequest {
	h := map[string]string{":method": "GET", ":path": "/v1/orders", ":authority": "api", "x-request-id": "req-1"}
	for k, v := range headers {
		h[k] = v
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "127.0.0.1"}}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/v1/orders", Headers: h}},
	}}
}

// The real gRPC server on 127.0.0.1:0 and on a Unix socket answers allow and deny.
func TestCheckOverGRPC(t *testing.T) {
	for _, tc := range []struct{ network, addr string }{
		{"tcp", "127.0.0.1:0"},
		{"unix", filepath.Join(t.TempDir(), "extauthz.sock")},
	} {
		t.Run(tc.network, func(t *testing.T) {
			c := startServer(t, tc.network, tc.addr)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			resp, err := c.Check(ctx, checkReq(map[string]string{"x-api-key": "xa_demo_7Qm2vK9pL4sT8wZ1", "x-tenant-id": "42"}))
			if err != nil {
				t.Fatal(err)
			}
			if resp.GetStatus().GetCode() != 0 || resp.GetOkResponse() == nil {
				t.Fatalf("allow: %v", resp)
			}
			resp, err = c.Check(ctx, checkReq(map[string]string{"x-api-key": "xa_wrong", "x-tenant-id": "42"}))
			if err != nil {
				t.Fatal(err)
			}
			d := resp.GetDeniedResponse()
			if resp.GetStatus().GetCode() != 7 || d.GetStatus().GetCode() != 401 {
				t.Fatalf("deny: %v", resp)
			}
			var body struct {
				Error struct {
					Code      string `json:"code"`
					RequestID string `json:"request_id"`
				} `json:"error"`
			}
			if err := json.Unmarshal([]byte(d.GetBody()), &body); err != nil || body.Error.Code != "key_invalid" || body.Error.RequestID != "req-1" {
				t.Fatalf("body %q: %v", d.GetBody(), err)
			}
		})
	}
}
