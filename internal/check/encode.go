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
	"github.com/extauthz/extauthz/internal/profile"
	"github.com/extauthz/extauthz/internal/wire"
)

// A response whose decision came from the memo differs from the previous one
// with the same key only in its decision id and, for a deny, in what the
// profile renders per request (request id, timestamp). So its encoding is
// assembled from parts:
//
//	CheckResponse.status (1) and ok_response (3)   allow: okParts.head, marshalled once per memoized decision
//	CheckResponse.status (1) and denied_response (2)   deny: denyParts, built once per memoized decision
//	                                                   from the profile's prepared rendering, plus the
//	                                                   request-id header and the body finished per check
//	CheckResponse.dynamic_metadata (4), a Struct:  tag, length, then its map entries:
//	  every field but decision_id                  memoEntry.meta, marshalled once per memoized decision
//	  decision_id                                  appended per check
//
// This skips rebuilding and reflecting over the metadata Struct, the costliest
// part of marshalling a CheckResponse.
//
// Field numbers are those of envoy.service.auth.v3.CheckResponse and
// google.protobuf.Struct/Value. This file is the only hand-kept protobuf in
// the project, kept because composing the same bytes with proto.Marshal per
// check cost about 2 µs (over 5% of a check through the gRPC server).
// encode_test.go decodes the result and compares it with the message Check
// builds; encode_gen_test.go compares it with proto.Marshal, byte for byte,
// on generated responses.
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
// memoized decision d, the full set or not, built on its first use.
func metaFor(r *request, d *decision.Decision, full bool) ([]byte, bool) {
	slot := &renderedFor(r.entry).meta
	if full {
		slot = &renderedFor(r.entry).metaFull
	}
	if m := slot.Load(); m != nil {
		return *m, true
	}
	m, err := proto.MarshalOptions{Deterministic: true}.Marshal(&structpb.Struct{Fields: metadataFields(r, d, full)})
	if err != nil {
		return nil, false
	}
	slot.Store(&m)
	return m, true
}

// encode is toCheckResponse in wire form for a decision taken from the memo
// and not changed since (no rate limit applied, no failure): nil when it
// does not apply, and the message is sent instead.
func (s *Server) encode(eng *engine.Engine, r *request, d *decision.Decision, now time.Time) wire.Encoded {
	if r == nil || r.entry == nil || len(r.quotaHeaders) > 0 || string(d.Reason) != r.entry.Out.Reason {
		return nil
	}
	meta, ok := metaFor(r, d, s.FullMetadata)
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
		head = denyPartsFor(eng, r, d).append(eng, d, now, len(meta)+len(d.ID)+24)
	}
	return appendMetadata(head, meta, d.ID)
}

// denyParts are a memoized deny's encoding but what varies per request: its
// DeniedHttpResponse fields before and after the request-id header, and the
// profile's prepared rendering, which gives that header's value and the body.
type denyParts struct {
	prep          *profile.Prepared // nil: the profile renders this deny per request
	before, after []byte
}

func denyPartsFor(eng *engine.Engine, r *request, d *decision.Decision) *denyParts {
	parts := renderedFor(r.entry)
	if p := parts.deny.Load(); p != nil {
		return p
	}
	p := &denyParts{prep: denyProfile(eng, d).Prepare(d)}
	if pr := p.prep; pr != nil {
		p.before = appendHTTPStatus(nil, pr.Status)
		for i, h := range pr.Headers {
			switch {
			case i < pr.ReqID || pr.ReqID < 0:
				p.before = appendHeaderOption(p.before, h)
			case i > pr.ReqID:
				p.after = appendHeaderOption(p.after, h)
			}
		}
		p.before, p.after = slices.Clip(p.before), slices.Clip(p.after)
	}
	parts.deny.Store(p)
	return p
}

// append encodes CheckResponse.status and denied_response for d into a new
// buffer with spare room for extra more bytes.
func (p *denyParts) append(eng *engine.Engine, d *decision.Decision, now time.Time, extra int) []byte {
	if !p.prep.Fits(d) {
		out := denyProfile(eng, d).Render(d, now)
		fields := appendHTTPStatus(nil, out.Status)
		for _, h := range out.Headers {
			fields = appendHeaderOption(fields, h)
		}
		return appendDenied(make([]byte, 0, len(fields)+len(out.Body)+extra+16), fields, nil, out.Body)
	}
	var scratch [512]byte
	body := p.prep.AppendBody(scratch[:0], d, now)
	size := len(p.before) + len(p.after) + len(body) + extra + 32
	if p.prep.ReqID < 0 {
		return appendDenied(make([]byte, 0, size), p.before, nil, body)
	}
	reqID := p.prep.Headers[p.prep.ReqID]
	reqID[1] = p.prep.RequestIDHeader(d)
	return appendDenied(make([]byte, 0, size+len(reqID[0])+len(reqID[1])+8), p.before, &reqID, body, p.after...)
}

// Field numbers of the deny's messages: envoy.service.auth.v3.CheckResponse,
// DeniedHttpResponse, envoy.type.v3.HttpStatus, envoy.config.core.v3
// HeaderValueOption and HeaderValue, google.rpc.Status.
const (
	fieldCheckResponseDenied = 2 // CheckResponse.denied_response
	fieldDeniedStatus        = 1 // DeniedHttpResponse.status (HttpStatus)
	fieldDeniedHeaders       = 2 // DeniedHttpResponse.headers (HeaderValueOption)
	fieldDeniedBody          = 3 // DeniedHttpResponse.body
	fieldHTTPStatusCode      = 1 // HttpStatus.code
	fieldOptionHeader        = 1 // HeaderValueOption.header (HeaderValue)
	fieldOptionAppend        = 2 // HeaderValueOption.append (BoolValue false: an empty message)
	fieldHeaderKey           = 1 // HeaderValue.key
	fieldHeaderValue         = 2 // HeaderValue.value
)

// deniedStatusField is CheckResponse.status of every deny, encoded.
var deniedStatusField, _ = proto.Marshal(&authv3.CheckResponse{Status: deniedStatus})

// appendDenied appends CheckResponse.status and denied_response: its
// encoded status and header fields (fields, then the request-id header
// when reqID is not nil, then more) and then its body, field for field what
// proto.Marshal writes for the message deniedResponse builds.
func appendDenied(b, fields []byte, reqID *[2]string, body []byte, more ...byte) []byte {
	size := len(fields) + len(more) + sizeBytesField(fieldDeniedBody, len(body))
	if reqID != nil {
		size += headerFieldSize(*reqID)
	}
	b = append(b, deniedStatusField...)
	b = protowire.AppendTag(b, fieldCheckResponseDenied, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(size))
	b = append(b, fields...)
	if reqID != nil {
		b = appendHeaderOption(b, *reqID)
	}
	b = append(b, more...)
	if len(body) > 0 {
		b = protowire.AppendTag(b, fieldDeniedBody, protowire.BytesType)
		b = protowire.AppendBytes(b, body)
	}
	return b
}

// sizeBytesField is the encoded size of a length-delimited field of n
// bytes; proto3 leaves an empty one out.
func sizeBytesField(num protowire.Number, n int) int {
	if n == 0 {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeBytes(n)
}

func appendStringField(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	return protowire.AppendString(protowire.AppendTag(b, num, protowire.BytesType), s)
}

// appendHTTPStatus appends DeniedHttpResponse.status.
func appendHTTPStatus(b []byte, status int) []byte {
	size := 0
	if status != 0 {
		size = protowire.SizeTag(fieldHTTPStatusCode) + protowire.SizeVarint(uint64(status))
	}
	b = protowire.AppendTag(b, fieldDeniedStatus, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(size))
	if status != 0 {
		b = protowire.AppendTag(b, fieldHTTPStatusCode, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(status))
	}
	return b
}

// headerValueSize is the encoded size of HeaderValue{key, value}.
func headerValueSize(h [2]string) int {
	return sizeBytesField(fieldHeaderKey, len(h[0])) + sizeBytesField(fieldHeaderValue, len(h[1]))
}

// headerOptionSize is the encoded size of HeaderValueOption{header: h,
// append: false}, the message header() builds.
func headerOptionSize(h [2]string) int {
	return protowire.SizeTag(fieldOptionHeader) + protowire.SizeBytes(headerValueSize(h)) +
		protowire.SizeTag(fieldOptionAppend) + protowire.SizeBytes(0)
}

// headerFieldSize is the encoded size of a DeniedHttpResponse.headers field.
func headerFieldSize(h [2]string) int {
	return protowire.SizeTag(fieldDeniedHeaders) + protowire.SizeBytes(headerOptionSize(h))
}

// appendHeaderOption appends a DeniedHttpResponse.headers field.
func appendHeaderOption(b []byte, h [2]string) []byte {
	b = protowire.AppendTag(b, fieldDeniedHeaders, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(headerOptionSize(h)))
	b = protowire.AppendTag(b, fieldOptionHeader, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(headerValueSize(h)))
	b = appendStringField(b, fieldHeaderKey, h[0])
	b = appendStringField(b, fieldHeaderValue, h[1])
	b = protowire.AppendTag(b, fieldOptionAppend, protowire.BytesType)
	return protowire.AppendVarint(b, 0)
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
