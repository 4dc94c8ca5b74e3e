package check

import (
	"slices"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/extauthz/extauthz/internal/decision"
	"github.com/extauthz/extauthz/internal/engine"
	"github.com/extauthz/extauthz/internal/wire"
)

// A response whose decision came from the memo differs from the previous one
// with the same key only in its decision id and, for a deny, in what the
// profile renders per request (request id, timestamp). So its encoding is
// assembled from parts:
//
//	CheckResponse.status (1) and ok_response (3)   allow: okParts.head, marshalled once per memoized decision
//	CheckResponse.status (1) and denied_response (2)   deny: marshalled per check (its body is per request)
//	CheckResponse.dynamic_metadata (4), a Struct:  tag, length, then its map entries:
//	  every field but decision_id                  memoEntry.meta, marshalled once per memoized decision
//	  decision_id                                  appended per check
//
// This skips rebuilding and reflecting over the metadata Struct, the costliest
// part of marshalling a CheckResponse.
//
// Field numbers are those of envoy.service.auth.v3.CheckResponse and
// google.protobuf.Struct/Value; encode_test.go decodes the result and compares
// it with the message Check builds.
const (
	fieldCheckResponseMetadata = 4 // CheckResponse.dynamic_metadata
	fieldStructFields          = 1 // Struct.fields (map<string, Value>)
	fieldMapKey                = 1 // map entry key
	fieldMapValue              = 2 // map entry value
	fieldValueString           = 3 // Value.string_value
)

// encode fills p.head for an allow. On a marshal error it leaves it nil, and
// the allow is sent as a message.
func (p *okParts) encode() {
	head, err := proto.Marshal(&authv3.CheckResponse{
		Status:       okStatus,
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{Headers: p.set, HeadersToRemove: p.remove}},
	})
	if err == nil {
		p.head = slices.Clip(head) // shared: never appended to in place
	}
}

// metaFor returns the encoded metadata entries but decision_id of r's
// memoized decision d, built on its first use.
func metaFor(r *request, d *decision.Decision) ([]byte, bool) {
	if m := r.memo.meta.Load(); m != nil {
		return *m, true
	}
	m, err := proto.MarshalOptions{Deterministic: true}.Marshal(&structpb.Struct{Fields: metadataFields(r, d)})
	if err != nil {
		return nil, false
	}
	r.memo.meta.Store(&m)
	return m, true
}

// encode is toCheckResponse in wire form for a decision taken from the memo
// and not changed since (no rate limit applied, no failure): nil when it
// does not apply, and the message is sent instead.
func (s *Server) encode(eng *engine.Engine, r *request, d *decision.Decision, now time.Time) wire.Encoded {
	if r == nil || r.memo == nil || len(r.quotaHeaders) > 0 || string(d.Reason) != r.memo.out.Reason {
		return nil
	}
	meta, ok := metaFor(r, d)
	if !ok {
		return nil
	}
	var head []byte
	if d.Allow {
		shared := okPartsFor(eng, r, d).head
		if shared == nil {
			return nil
		}
		head = append(make([]byte, 0, len(shared)+len(meta)+len(d.ID)+24), shared...)
	} else {
		var err error
		head, err = proto.MarshalOptions{}.MarshalAppend(make([]byte, 0, 512), &authv3.CheckResponse{Status: deniedStatus, HttpResponse: s.deniedResponse(eng, r, d, now)})
		if err != nil {
			return nil
		}
	}
	return appendMetadata(head, meta, d.ID)
}

// appendMetadata appends CheckResponse.dynamic_metadata to head, which the
// caller owns: the entries in meta and decision_id = id.
func appendMetadata(head, meta []byte, id string) wire.Encoded {
	value := protowire.SizeTag(fieldValueString) + protowire.SizeBytes(len(id))
	entry := protowire.SizeTag(fieldMapKey) + protowire.SizeBytes(len(metaDecisionID)) +
		protowire.SizeTag(fieldMapValue) + protowire.SizeBytes(value)
	metaLen := len(meta) + protowire.SizeTag(fieldStructFields) + protowire.SizeBytes(entry)

	b := head
	if need := protowire.SizeTag(fieldCheckResponseMetadata) + protowire.SizeBytes(metaLen); cap(b)-len(b) < need {
		b = append(make([]byte, 0, len(head)+need), head...)
	}
	b = protowire.AppendTag(b, fieldCheckResponseMetadata, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(metaLen))
	b = append(b, meta...)
	b = protowire.AppendTag(b, fieldStructFields, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(entry))
	b = protowire.AppendTag(b, fieldMapKey, protowire.BytesType)
	b = protowire.AppendString(b, metaDecisionID)
	b = protowire.AppendTag(b, fieldMapValue, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(value))
	b = protowire.AppendTag(b, fieldValueString, protowire.BytesType)
	b = protowire.AppendString(b, id)
	return b
}
