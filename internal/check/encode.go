package check

import (
	"slices"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/extauthz/extauthz/internal/decision"
	"github.com/extauthz/extauthz/internal/engine"
	"github.com/extauthz/extauthz/internal/profile"
	"github.com/extauthz/extauthz/internal/wire"
)

// A response whose decision came from the memo differs from the previous one
// with the same key only in its decision id and, for a deny, in what the
// profile renders per request (request id, timestamp). So its encoding is
// assembled from parts:
//
//	CheckResponse.status (1) and ok_response (3)   allow: okParts.head, marshalled once per memoized decision
//	CheckResponse.status (1) and denied_response (2)   deny: appended per check from the profile's
//	                                                   rendering (its body is per request; appendDenied)
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
		out := denyProfile(eng, d).Render(d, now)
		head = appendDenied(make([]byte, 0, 96+len(out.Body)+64*len(out.Headers)+len(meta)+len(d.ID)), out)
	}
	return appendMetadata(head, meta, d.ID)
}

// Field numbers of the deny's messages: envoy.service.auth.v3.CheckResponse,
// DeniedHttpResponse, envoy.type.v3.HttpStatus, envoy.config.core.v3
// HeaderValueOption and HeaderValue, google.rpc.Status.
const (
	fieldCheckResponseStatus = 1 // CheckResponse.status (google.rpc.Status)
	fieldCheckResponseDenied = 2 // CheckResponse.denied_response
	fieldRPCStatusCode       = 1 // google.rpc.Status.code
	fieldDeniedStatus        = 1 // DeniedHttpResponse.status (HttpStatus)
	fieldDeniedHeaders       = 2 // DeniedHttpResponse.headers (HeaderValueOption)
	fieldDeniedBody          = 3 // DeniedHttpResponse.body
	fieldHTTPStatusCode      = 1 // HttpStatus.code
	fieldOptionHeader        = 1 // HeaderValueOption.header (HeaderValue)
	fieldOptionAppend        = 2 // HeaderValueOption.append (BoolValue false: an empty message)
	fieldHeaderKey           = 1 // HeaderValue.key
	fieldHeaderValue         = 2 // HeaderValue.value
)

// appendDenied appends CheckResponse.status and denied_response for out,
// field for field what proto.Marshal writes for deniedResponse's message
// (proto3: empty strings and zero numbers are left out).
func appendDenied(b []byte, out profile.Response) []byte {
	status := protowire.SizeTag(fieldRPCStatusCode) + protowire.SizeVarint(uint64(codes.PermissionDenied))
	b = protowire.AppendTag(b, fieldCheckResponseStatus, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(status))
	b = protowire.AppendTag(b, fieldRPCStatusCode, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(codes.PermissionDenied))

	stringField := func(num protowire.Number, s string) int {
		if s == "" {
			return 0
		}
		return protowire.SizeTag(num) + protowire.SizeBytes(len(s))
	}
	appendString := func(b []byte, num protowire.Number, s string) []byte {
		if s == "" {
			return b
		}
		return protowire.AppendString(protowire.AppendTag(b, num, protowire.BytesType), s)
	}
	httpStatus := 0
	if out.Status != 0 {
		httpStatus = protowire.SizeTag(fieldHTTPStatusCode) + protowire.SizeVarint(uint64(out.Status))
	}
	// Sizes of each header's HeaderValue and HeaderValueOption.
	headerSizes := func(h [2]string) (hv, hvo int) {
		hv = stringField(fieldHeaderKey, h[0]) + stringField(fieldHeaderValue, h[1])
		return hv, protowire.SizeTag(fieldOptionHeader) + protowire.SizeBytes(hv) + protowire.SizeTag(fieldOptionAppend) + protowire.SizeBytes(0)
	}
	size := protowire.SizeTag(fieldDeniedStatus) + protowire.SizeBytes(httpStatus) + stringField(fieldDeniedBody, string(out.Body))
	for _, h := range out.Headers {
		_, hvo := headerSizes(h)
		size += protowire.SizeTag(fieldDeniedHeaders) + protowire.SizeBytes(hvo)
	}

	b = protowire.AppendTag(b, fieldCheckResponseDenied, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(size))
	b = protowire.AppendTag(b, fieldDeniedStatus, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(httpStatus))
	if out.Status != 0 {
		b = protowire.AppendTag(b, fieldHTTPStatusCode, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(out.Status))
	}
	for _, h := range out.Headers {
		hv, hvo := headerSizes(h)
		b = protowire.AppendTag(b, fieldDeniedHeaders, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(hvo))
		b = protowire.AppendTag(b, fieldOptionHeader, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(hv))
		b = appendString(b, fieldHeaderKey, h[0])
		b = appendString(b, fieldHeaderValue, h[1])
		b = protowire.AppendTag(b, fieldOptionAppend, protowire.BytesType)
		b = protowire.AppendVarint(b, 0)
	}
	return appendString(b, fieldDeniedBody, string(out.Body))
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
