// Package wire lets a gRPC handler answer with a protobuf message that is
// already encoded. A response built from cached, pre-encoded parts is sent as
// it is instead of being rebuilt and marshalled by reflection on every call.
//
// Codec is grpc-go's own proto codec plus one case: an Encoded value is
// written out verbatim. Every other message, and every request, goes through
// the proto codec unchanged.
package wire

import (
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
)

// Encoded is a protobuf message in wire form.
type Encoded []byte

type codec struct{ proto encoding.CodecV2 }

// Codec returns the codec: grpc-go's proto codec that also sends Encoded.
func Codec() encoding.CodecV2 { return codec{proto: encoding.GetCodecV2(proto.Name)} }

// ServerOption installs Codec on a gRPC server.
func ServerOption() grpc.ServerOption { return grpc.ForceServerCodecV2(Codec()) }

func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	if e, ok := v.(Encoded); ok {
		return mem.BufferSlice{mem.SliceBuffer(e)}, nil
	}
	return c.proto.Marshal(v)
}

func (c codec) Unmarshal(data mem.BufferSlice, v any) error { return c.proto.Unmarshal(data, v) }

// Name is "proto": on the wire nothing changes.
func (codec) Name() string { return proto.Name }
