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
// into *reply. With full set it also decodes every reply whole into a
// CheckResponse, which is what Envoy does with each one (its ext_authz
// client parses the message, metadata Struct included): the driver then
// stands in for Envoy's cost of the reply's size.
type replyCodec struct {
	proto encoding.CodecV2
	full  *authv3.CheckResponse
}

func newReplyCodec(full bool) replyCodec {
	c := replyCodec{proto: encoding.GetCodecV2(proto.Name)}
	if full {
		c.full = &authv3.CheckResponse{}
	}
	return c
}

func (c replyCodec) Marshal(v any) (mem.BufferSlice, error) { return c.proto.Marshal(v) }

func (c replyCodec) Unmarshal(data mem.BufferSlice, v any) error {
	r, ok := v.(*reply)
	if !ok {
		return c.proto.Unmarshal(data, v)
	}
	r.b = data.Materialize()
	r.status, r.err = DecisionOf(r.b)
	if c.full != nil && r.err == nil {
		c.full.Reset()
		r.err = protov2.Unmarshal(r.b, c.full)
	}
	return nil
}

func (replyCodec) Name() string { return proto.Name }

var errMalformed = errors.New("malformed CheckResponse")

// DecisionOf is Decision for an encoded CheckResponse. It reads only
// CheckResponse.status.code (fields 1.1) and
// denied_response.status.code (2.1.1).
func DecisionOf(b []byte) (int, error) {
	status, ok1 := lastField(b, 1, protowire.BytesType)
	denied, ok2 := lastField(b, 2, protowire.BytesType)
	rpcCode, ok3 := lastField(status, 1, protowire.VarintType)      // google.rpc.Status.code
	httpStatus, ok4 := lastField(denied, 1, protowire.BytesType)    // DeniedHttpResponse.status
	httpCode, ok5 := lastField(httpStatus, 1, protowire.VarintType) // HttpStatus.code
	if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 {
		return 0, errMalformed
	}
	switch {
	case varint(rpcCode) == 0: // codes.OK
		return 200, nil
	case varint(httpCode) != 0:
		return int(varint(httpCode)), nil
	}
	return 403, nil
}

// lastField returns the value of field num of type typ in message b: for a
// varint the encoded number of the last occurrence, for a length-delimited
// field (a message) the concatenation of every occurrence's content, as a
// parser merges them; nil when absent; ok is false when b does not parse.
func lastField(b []byte, num protowire.Number, typ protowire.Type) (val []byte, ok bool) {
	for len(b) > 0 {
		n2, t2, n := protowire.ConsumeTag(b)
		if n < 0 {
			return nil, false
		}
		b = b[n:]
		m := protowire.ConsumeFieldValue(n2, t2, b)
		if m < 0 {
			return nil, false
		}
		if n2 == num && t2 == typ {
			v := b[:m]
			if typ == protowire.BytesType {
				v, _ = protowire.ConsumeBytes(v)
				if val != nil {
					// A message field given again merges with the earlier
					// ones, which is what parsing their concatenation does.
					v = append(append([]byte(nil), val...), v...)
				}
			}
			val = v
		}
		b = b[m:]
	}
	return val, true
}

// varint decodes a value lastField returned for a varint field (0 when absent).
func varint(b []byte) uint64 {
	v, _ := protowire.ConsumeVarint(b)
	return v
}
