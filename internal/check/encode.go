package check

import (
	"slices"
	"sync"
	"time"
	"unsafe"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/extauthz/extauthz/internal/decision"
	"github.com/extauthz/extauthz/internal/engine"
	"github.com/extauthz/extauthz/internal/profile"
	"github.com/extauthz/extauthz/internal/wire"
)

// A response whose decision came from the memo differs from the previous one
// with the same key only in its decision id and, for a deny, in what the
// profile renders per request (the request-id header and the body). So its
// encoding is two messages, both marshalled by proto.Marshal:
//
//	static   status, ok_response or denied_response (status and every header
//	         but the request id), dynamic_metadata but decision_id: marshalled
//	         once per memoized decision (rendered.static)
//	dynamic  dynamic_metadata.decision_id and, for a deny, the request-id
//	         header and the body: marshalled per check into the same buffer
//
// A protobuf parser merges concatenated messages: singular message fields
// merge, repeated fields (the headers) append, map entries (the metadata's
// fields) add. So the two decode as the one message toCheckResponse builds
// (the request-id header is the last header in both; see profile.Render).
// encode_test.go decodes and compares them on every kind of response.

// encode is toCheckResponse in wire form for a decision taken from the memo
// and not changed since (no rate limit applied, no failure): nil when it
// does not apply, and the message is sent instead.
func (s *Server) encode(eng *engine.Engine, r *request, d *decision.Decision, now time.Time) wire.Encoded {
	if r == nil || r.entry == nil || len(r.quotaHeaders) > 0 || string(d.Reason) != r.entry.Out.Reason {
		return nil
	}
	parts := renderedFor(r.entry)
	st := parts.static.Load()
	if st == nil {
		st = s.staticParts(eng, r, d)
		parts.static.Store(st)
	}
	if st.bytes == nil || (st.prep != nil && !st.prep.Fits(d)) || (st.prep == nil && !d.Allow) {
		return nil
	}
	dyn := dynamicPool.Get().(*dynamic)
	defer dynamicPool.Put(dyn)
	dyn.id.StringValue = d.ID
	dyn.resp.HttpResponse = nil
	extra := len(d.ID) + 24
	if !d.Allow {
		dyn.denied.Body = ""
		dyn.body = st.prep.AppendBody(dyn.body[:0], d, now)
		if len(dyn.body) > 0 {
			// dyn.body is not written again until dyn is back in the pool.
			dyn.denied.Body = unsafe.String(&dyn.body[0], len(dyn.body))
		}
		extra += len(dyn.body) + 16
		dyn.denied.Headers = dyn.denied.Headers[:0]
		if st.prep.ReqID >= 0 {
			dyn.reqID.Key, dyn.reqID.Value = st.prep.Headers[st.prep.ReqID][0], st.prep.RequestIDHeader(d)
			dyn.denied.Headers = append(dyn.denied.Headers, &dyn.reqIDOpt)
			extra += len(dyn.reqID.Key) + len(dyn.reqID.Value) + 16
		}
		dyn.resp.HttpResponse = &dyn.deniedField
	}
	b := make([]byte, len(st.bytes), len(st.bytes)+extra)
	copy(b, st.bytes)
	b, err := proto.MarshalOptions{}.MarshalAppend(b, &dyn.resp)
	if err != nil {
		return nil
	}
	return b
}

// static is a memoized decision's static message, encoded; prep is the
// profile's prepared rendering of a deny (nil for an allow).
type static struct {
	bytes []byte // nil: not encodable; the message is sent
	prep  *profile.Prepared
}

// staticParts marshals the static message of r's memoized decision d.
func (s *Server) staticParts(eng *engine.Engine, r *request, d *decision.Decision) *static {
	st := &static{}
	msg := &authv3.CheckResponse{DynamicMetadata: &structpb.Struct{Fields: metadataFields(r, d)}}
	if d.Allow {
		parts := okPartsFor(eng, r, d)
		msg.Status = okStatus
		msg.HttpResponse = &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{Headers: parts.set, HeadersToRemove: parts.remove}}
	} else {
		if st.prep = denyProfile(eng, d).Prepare(d); st.prep == nil {
			return st
		}
		hs := make([]*corev3.HeaderValueOption, 0, len(st.prep.Headers))
		for i, h := range st.prep.Headers {
			if i != st.prep.ReqID {
				hs = append(hs, header(h[0], h[1]))
			}
		}
		msg.Status = deniedStatus
		msg.HttpResponse = &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status: &typev3.HttpStatus{Code: typev3.StatusCode(st.prep.Status)}, Headers: hs}}
	}
	if b, err := (proto.MarshalOptions{Deterministic: true}).Marshal(msg); err == nil {
		st.bytes = slices.Clip(b)
	}
	return st
}

// dynamic is the per-check message, kept for reuse: marshalling it
// allocates nothing but the output.
type dynamic struct {
	resp        authv3.CheckResponse
	meta        structpb.Struct
	idValue     structpb.Value
	id          structpb.Value_StringValue
	deniedField authv3.CheckResponse_DeniedResponse
	denied      authv3.DeniedHttpResponse
	reqIDOpt    corev3.HeaderValueOption
	reqID       corev3.HeaderValue
	body        []byte
}

var dynamicPool = sync.Pool{New: func() any {
	d := &dynamic{}
	d.idValue.Kind = &d.id
	d.meta.Fields = map[string]*structpb.Value{metaDecisionID: &d.idValue}
	d.resp.DynamicMetadata = &d.meta
	d.deniedField.DeniedResponse = &d.denied
	d.reqIDOpt = corev3.HeaderValueOption{Header: &d.reqID, Append: appendFalse} //lint:ignore SA1019 see header in response.go
	d.denied.Headers = make([]*corev3.HeaderValueOption, 0, 1)
	d.body = make([]byte, 0, 512)
	return d
}}
