package wire

import (
	"strings"
	"unicode/utf8"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Every CheckRequest the gRPC server receives is handed to the handler, so
// that every request is answered with a CheckResponse (a deny in the API's
// envelope), never with a gRPC error:
//
//   - a request whose strings are not valid UTF-8 (proto3 refuses them) is
//     decoded with each invalid sequence replaced by U+FFFD, and marked;
//   - a request larger than the size limit is decoded without its body, and
//     marked;
//   - a request that does not decode at all, or nests messages deeper than
//     MaxDepth (Envoy's nest a few levels; deeper is a request built to
//     exhaust the decoder), is handed over empty, marked.
//
// The repair costs time and memory linear in the request's size: one
// output buffer, every nested message's length written after it, as a
// varint padded to 5 bytes (protobuf decoders take such varints).
//
// The mark is an unknown field the handler reads back with ProblemOf. A
// request that carries the mark's field itself (whatever its value, even
// empty) is handed over empty, marked undecodable: a client's own mark can
// neither hide the codec's nor pass for it.

// Problem is why a CheckRequest was not taken as sent ("" when it was).
type Problem string

// The problems the codec marks.
const (
	NotUTF8     Problem = "not_utf8"
	TooLarge    Problem = "too_large"
	Undecodable Problem = "undecodable"
)

// problemField is the field number of the mark: the highest one protobuf
// allows, which no CheckRequest field uses.
const problemField = protowire.MaxValidNumber

// ProblemOf returns the problem the codec marked req with.
func ProblemOf(req *authv3.CheckRequest) Problem {
	b := req.ProtoReflect().GetUnknown()
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return Undecodable
		}
		b = b[n:]
		if num == problemField && typ == protowire.BytesType {
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return Undecodable
			}
			return Problem(v)
		}
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return Undecodable
		}
		b = b[m:]
	}
	return ""
}

// sentMark reports a request that arrived with the mark's field.
func sentMark(req *authv3.CheckRequest) bool {
	b := req.ProtoReflect().GetUnknown()
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || num == problemField {
			return true
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return true
		}
		b = b[n+m:]
	}
	return false
}

func mark(req *authv3.CheckRequest, p Problem) {
	u := req.ProtoReflect().GetUnknown()
	u = protowire.AppendTag(u, problemField, protowire.BytesType)
	req.ProtoReflect().SetUnknown(protowire.AppendString(u, string(p)))
}

// MaxDepth bounds the nesting of messages in a CheckRequest.
const MaxDepth = 100

var decode = proto.UnmarshalOptions{RecursionLimit: MaxDepth}

// unmarshalRequest decodes a CheckRequest as described above.
func unmarshalRequest(data mem.BufferSlice, req *authv3.CheckRequest, limit int) {
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool()) // as grpc-go's proto codec does
	defer buf.Free()
	b := buf.ReadOnlyData()
	err := decode.Unmarshal(b, req)
	if err != nil {
		proto.Reset(req)
		if clean, ok := validUTF8(b, req.ProtoReflect().Descriptor()); ok && decode.Unmarshal(clean, req) == nil && !sentMark(req) {
			mark(req, NotUTF8)
		} else {
			proto.Reset(req)
			mark(req, Undecodable)
			return
		}
	} else if sentMark(req) {
		proto.Reset(req)
		mark(req, Undecodable)
		return
	}
	if limit > 0 && len(b) > limit {
		if h := req.GetAttributes().GetRequest().GetHttp(); h != nil {
			h.Body, h.RawBody = "", nil
		}
		mark(req, TooLarge)
	}
}

// validUTF8 re-encodes the message in b with every string field made valid
// UTF-8; ok is false when b is not a well-formed message of md, or nests
// deeper than MaxDepth.
func validUTF8(b []byte, md protoreflect.MessageDescriptor) ([]byte, bool) {
	return appendValidUTF8(make([]byte, 0, len(b)+len(b)/8), b, md, 1)
}

// lenBytes is the room left for a nested message's length: a varint of up
// to 5 bytes holds any length below 2^35.
const lenBytes = 5

func appendValidUTF8(out, b []byte, md protoreflect.MessageDescriptor, depth int) ([]byte, bool) {
	if depth > MaxDepth {
		return nil, false
	}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, false
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			return nil, false
		}
		field := b[:n+m]
		b = b[n+m:]
		fd := md.Fields().ByNumber(num)
		if typ != protowire.BytesType || fd == nil {
			out = append(out, field...)
			continue
		}
		v, _ := protowire.ConsumeBytes(field[n:])
		switch {
		case fd.Kind() == protoreflect.StringKind && !utf8.Valid(v):
			out = protowire.AppendTag(out, num, typ)
			out = protowire.AppendString(out, strings.ToValidUTF8(string(v), "\uFFFD"))
		case fd.Kind() == protoreflect.MessageKind || fd.Kind() == protoreflect.GroupKind:
			out = protowire.AppendTag(out, num, typ)
			at := len(out)
			out = append(out, make([]byte, lenBytes)...)
			var ok bool
			if out, ok = appendValidUTF8(out, v, fd.Message(), depth+1); !ok {
				return nil, false
			}
			size := uint64(len(out) - at - lenBytes)
			if size >= 1<<(7*lenBytes) {
				return nil, false
			}
			for i := range lenBytes - 1 { // padded: continuation bits on all but the last
				out[at+i] = byte(size)&0x7f | 0x80
				size >>= 7
			}
			out[at+lenBytes-1] = byte(size)
		default:
			out = append(out, field...)
		}
	}
	return out, true
}
