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

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/extauthz/extauthz/internal/grpcopts"
)

// ServerOptions are extauthz's own grpc-go server options (internal/grpcopts;
// extauthz adds only TLS credentials on top). grpcopts imports nothing of the
// policy engine, so the floor binary stays small.
func ServerOptions() []grpc.ServerOption { return grpcopts.Server() }

// okResponse is shared: the response is read-only once built.
var okResponse = &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(codes.OK)}}

// Authorizer answers every Check with OK.
type Authorizer struct {
	authv3.UnimplementedAuthorizationServer
}

// Check returns CheckResponse{Status: OK} and does nothing else.
func (Authorizer) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return okResponse, nil
}

// New returns a gRPC server with the Authorization and health services
// registered, as extauthz registers them.
func New() *grpc.Server {
	g := grpc.NewServer(ServerOptions()...)
	authv3.RegisterAuthorizationServer(g, Authorizer{})
	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus("envoy.service.auth.v3.Authorization", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(g, hs)
	return g
}
