// Package grpcopts holds the gRPC server settings, shared by extauthz and the
// in-tree no-op baseline server so the two are always measured alike.
package grpcopts

import (
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/extauthz/extauthz/internal/wire"
)

// Server returns the server options.
func Server() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(4 << 20), // a CheckRequest with a buffered body stays far below
		grpc.MaxConcurrentStreams(1024),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
		wire.ServerOption(), // the proto codec, plus sending pre-encoded responses as they are
	}
}
