// Package noopsrv is the floor for extauthz benchmarks: an ext_authz gRPC
// server that answers every Check with OK and does no work, built with the
// same grpc-go server options as extauthz.
//
// It is a separate, small package so the no-op binary links only grpc-go,
// the Envoy protos and the health service, like the smallest real ext_authz
// server would.
package noopsrv

import (
	"context"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/extauthz/extauthz/internal/grpcopts"
)

// ServerOptions are extauthz's own grpc-go server options (internal/grpcopts;
// extauthz adds only TLS credentials on top). grpcopts imports nothing of the
// policy engine, so the floor binary stays small.
func ServerOptions() []grpc.ServerOption { return grpcopts.Server() }

// okResponse is shared: the response is read-only once built.
var okResponse = &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(codes.OK)}}

// IdentityReply is a fixed allow shaped like extauthz's default allow for
// the demo key (GET /v1/orders, tenant 42): the five identity headers set,
// the credential headers removed, and the metadata reason and decision_id.
// Served by a server that does no work, it shows what handling such a reply
// costs Envoy and the upstream, apart from what deciding it costs extauthz.
// A test in internal/loadtest keeps its shape equal to extauthz's reply.
func IdentityReply() *authv3.CheckResponse {
	h := func(k, v string) *corev3.HeaderValueOption {
		//lint:ignore SA1019 the same overwrite extauthz sends
		return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v}, Append: wrapperspb.Bool(false)}
	}
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(codes.OK)},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
			Headers: []*corev3.HeaderValueOption{
				h("x-auth-subject", "svc:orders-demo"), h("x-auth-key-id", "demo-orders"), h("x-auth-kind", "api_key"),
				h("x-auth-scopes", "orders:read orders:write calls:read"), h("x-auth-tenant", "42"),
			},
			HeadersToRemove: []string{"authorization", "x-api-key", "x-brand-id", "x-workspace-id"}, // credentials, and the tenant headers other routes verify
		}},
		DynamicMetadata: &structpb.Struct{Fields: map[string]*structpb.Value{
			"reason":      structpb.NewStringValue("ok"),
			"decision_id": structpb.NewStringValue("d5f3a9c2e17b-1"),
		}},
	}
}

// Authorizer answers every Check with OK, or with Reply when set.
type Authorizer struct {
	authv3.UnimplementedAuthorizationServer
	Reply *authv3.CheckResponse // read-only; nil: CheckResponse{Status: OK}
}

// Check returns the fixed reply and does nothing else.
func (a Authorizer) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	if a.Reply != nil {
		return a.Reply, nil
	}
	return okResponse, nil
}

// New returns a gRPC server with the Authorization and health services
// registered, as extauthz registers them, answering every Check with reply
// (nil: an empty OK).
func New(reply *authv3.CheckResponse) *grpc.Server {
	g := grpc.NewServer(ServerOptions()...)
	authv3.RegisterAuthorizationServer(g, Authorizer{Reply: reply})
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("envoy.service.auth.v3.Authorization", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(g, hs)
	return g
}
