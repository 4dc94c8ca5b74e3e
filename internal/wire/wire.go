// Package wire lets a gRPC handler answer with a protobuf message that is
// already encoded. A response built from cached, pre-encoded parts is sent as
// it is instead of being rebuilt and marshalled by reflection on every call.
//
// Codec is grpc-go's own proto codec plus two cases: an Encoded value is
// written out verbatim, and a CheckRequest is always decoded, marked with
// the problem when it could not be taken as sent (request.go). Every other
// message goes through the proto codec unchanged.
package wire

import (
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
)

// Encoded is a protobuf message in wire form.
type Encoded []byte

type codec struct {
	proto encoding.CodecV2
	limit int // CheckRequests larger than this are marked TooLarge; 0 = no limit
}

// Codec returns the codec: grpc-go's proto codec that also sends Encoded,
// and decodes every CheckRequest it is given (see request.go); limit is the
// size above which a CheckRequest is marked TooLarge (0: none).
func Codec(limit int) encoding.CodecV2 {
	return codec{proto: encoding.GetCodecV2(proto.Name), limit: limit}
}

// ServerOption installs Codec on a gRPC server.
func ServerOption(limit int) grpc.ServerOption { return grpc.ForceServerCodecV2(Codec(limit)) }

func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	if e, ok := v.(Encoded); ok {
		return mem.BufferSlice{mem.SliceBuffer(e)}, nil
	}
	return c.proto.Marshal(v)
}

func (c codec) Unmarshal(data mem.BufferSlice, v any) error {
	if req, ok := v.(*authv3.CheckRequest); ok {
		unmarshalRequest(data, req, c.limit)
		return nil
	}
	return c.proto.Unmarshal(data, v)
}

// Name is "proto": on the wire nothing changes.
func (codec) Name() string { return proto.Name }
