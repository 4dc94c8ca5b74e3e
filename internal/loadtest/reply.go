package loadtest

import (
	"errors"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	protov2 "google.golang.org/protobuf/proto"
)

// reply is a CheckResponse as the driver receives it: the encoded bytes and
// the decision read from them. The load generator shares the machine with
// the server it measures, so it reads only the few fields it checks (with
// DecisionOf) instead of decoding the whole message: its own cost per check
// then hardly depends on how large the server's answers are.
type reply struct {
	b      []byte
	status int
	err    error
}

// reason decodes the whole response for a diagnostic sample.
func (r *reply) reason() string {
	var resp authv3.CheckResponse
	if err := protov2.Unmarshal(r.b, &resp); err != nil {
		return "undecodable: " + err.Error()
	}
	return resp.GetDynamicMetadata().GetFields()["reason"].GetStringValue()
}

// replyCodec marshals requests with grpc-go's proto codec and reads replies
// into *reply.
type replyCodec struct{ proto encoding.CodecV2 }

func newReplyCodec() replyCodec { return replyCodec{proto: encoding.GetCodecV2(proto.Name)} }

func (c replyCodec) Marshal(v any) (mem.BufferSlice, error) { return c.proto.Marshal(v) }

func (c replyCodec) Unmarshal(data mem.BufferSlice, v any) error {
	r, ok := v.(*reply)
	if !ok {
		return c.proto.Unmarshal(data, v)
	}
	r.b = data.Materialize()
	r.status, r.err = DecisionOf(r.b)
	return nil
}

func (replyCodec) Name() string { return proto.Name }

var errMalformed = errors.New("malformed CheckResponse")

// DecisionOf is Decision for an encoded CheckResponse. It reads only
// CheckResponse.status.code (fields 1.1) and
// denied_response.status.code (2.1.1).
func DecisionOf(b []byte) (int, error) {
	var rpcCode, httpCode uint64
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return 0, errMalformed
		}
		b = b[n:]
		if typ == protowire.BytesType && (num == 1 || num == 2) {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return 0, errMalformed
			}
			b = b[n:]
			var ok bool
			if num == 1 { // google.rpc.Status.code
				rpcCode, ok = varintField(v, 1, rpcCode)
			} else { // DeniedHttpResponse.status -> HttpStatus.code
				var st []byte
				if st, ok = bytesField(v, 1); ok && st != nil {
					httpCode, ok = varintField(st, 1, httpCode)
				}
			}
			if !ok {
				return 0, errMalformed
			}
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return 0, errMalformed
		}
		b = b[n:]
	}
	switch {
	case rpcCode == 0: // codes.OK
		return 200, nil
	case httpCode != 0:
		return int(httpCode), nil
	}
	return 403, nil
}

// varintField returns the last value of varint field num in message b (def
// when absent).
func varintField(b []byte, num protowire.Number, def uint64) (uint64, bool) {
	for len(b) > 0 {
		n2, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return 0, false
		}
		b = b[n:]
		if n2 == num && typ == protowire.VarintType {
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return 0, false
			}
			def, b = v, b[n:]
			continue
		}
		if n = protowire.ConsumeFieldValue(n2, typ, b); n < 0 {
			return 0, false
		}
		b = b[n:]
	}
	return def, true
}

// bytesField returns the last value of length-delimited field num in b (nil
// when absent).
func bytesField(b []byte, num protowire.Number) ([]byte, bool) {
	var out []byte
	for len(b) > 0 {
		n2, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, false
		}
		b = b[n:]
		if n2 == num && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return nil, false
			}
			out, b = v, b[n:]
			continue
		}
		if n = protowire.ConsumeFieldValue(n2, typ, b); n < 0 {
			return nil, false
		}
		b = b[n:]
	}
	return out, true
}
