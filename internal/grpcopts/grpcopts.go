// Package grpcopts holds the gRPC server settings, shared by extauthz and the
// in-tree no-op baseline server so the two are always measured alike.
package grpcopts

import (
	"runtime"
	"time"

	"google.golang.org/grpc"
	_ "google.golang.org/grpc/encoding/gzip" // a gzip-compressed CheckRequest is read, not refused (Unimplemented); its size once decompressed is bounded as any request's
	"google.golang.org/grpc/keepalive"

	"github.com/extauthz/extauthz/internal/wire"
)

// DefaultMaxRequestBytes is the size above which a CheckRequest is denied
// request_too_large: above Envoy's default max_request_headers_kb (60 KiB)
// plus a buffered body of a few MiB.
const DefaultMaxRequestBytes = 8 << 20

// Server returns the server options. A CheckRequest up to the limit
// is answered as usual; a larger one, up to four times it, is still read
// and answered with a deny (request_too_large); only beyond that does gRPC
// refuse the message itself (Envoy then applies its status_on_error, 403 by
// default: still a deny). Server uses DefaultMaxRequestBytes; see Limit.
func Server() []grpc.ServerOption {
	return append([]grpc.ServerOption{
		grpc.MaxConcurrentStreams(1024),
		// Streams run on long-lived workers whose stacks have grown once,
		// instead of a fresh goroutine per call that grows (copies) its
		// stack on every check; when all are busy grpc-go starts one.
		grpc.NumStreamWorkers(uint32(4 * runtime.GOMAXPROCS(0))),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 10 * time.Second, PermitWithoutStream: true}),
	}, Limit(DefaultMaxRequestBytes)...)
}

// Limit sets the request size limit (see Server); given after Server's
// options, it replaces theirs. maxRequestBytes <= 0 means the default.
func Limit(maxRequestBytes int) []grpc.ServerOption {
	if maxRequestBytes <= 0 {
		maxRequestBytes = DefaultMaxRequestBytes
	}
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(4 * maxRequestBytes),
		wire.ServerOption(maxRequestBytes), // the proto codec, plus pre-encoded responses and lenient CheckRequests
	}
}
