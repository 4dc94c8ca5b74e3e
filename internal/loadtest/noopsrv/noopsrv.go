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
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
)

// ServerOptions are the grpc-go server options of extauthz, copied from
// internal/server.NewGRPCServer (plaintext: extauthz adds only TLS
// credentials on top). The no-op server deliberately does not import
// internal/server: linking it pulls in OPA and the policy engine, whose
// package initialisation adds ~8 MiB of idle RSS (and a little GC work) to
// what is meant to be the floor. TestOptionsMatchServer fails when the two
// lists differ.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(4 << 20),
		grpc.MaxConcurrentStreams(1024),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	}
}

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
