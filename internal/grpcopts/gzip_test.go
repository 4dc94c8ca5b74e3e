package grpcopts

import (
	"testing"

	"google.golang.org/grpc/encoding"
)

// The server reads gzip-compressed CheckRequests (a client may compress;
// without the decompressor gRPC answers Unimplemented, not a
// CheckResponse). This test binary imports no compressor itself, so the
// one it finds is the server's (internal/server tests the calls).
func TestServerReadsGzip(t *testing.T) {
	if encoding.GetCompressor("gzip") == nil {
		t.Fatal("no gzip decompressor registered with the server's options")
	}
}
