package check

import (
	"math/rand/v2"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// The hand-written encoding (encode.go) against proto.Marshal, field by
// field, on generated responses: every status, header list (with the
// request-id header anywhere or absent, empty names and values, non-ASCII,
// long values), body and metadata decodes to the message the library
// encodes, and a deny's bytes are the library's own.
func TestHandEncodingMatchesProtoMarshal(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 5))
	str := func(max int) string {
		alphabet := []rune("abcXYZ-_:;,\"\\ é€\u2028\x01")
		b := make([]rune, rng.IntN(max+1))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		if rng.IntN(10) == 0 {
			return string(make([]rune, 200+rng.IntN(300))) // long: multi-byte lengths
		}
		return string(b)
	}
	for i := range 3000 {
		status := []int{0, 400, 401, 403, 404, 413, 429, 500, 503}[rng.IntN(9)]
		var headers [][2]string
		for range rng.IntN(6) {
			headers = append(headers, [2]string{str(12), str(40)})
		}
		reqAt := rng.IntN(len(headers)+2) - 1 // -1: no request-id header
		var reqID *[2]string
		if reqAt >= 0 && reqAt <= len(headers) {
			h := [2]string{"x-request-id", str(30)}
			reqID = &h
		} else {
			reqAt = len(headers)
		}
		body := []byte(str(300))
		meta := map[string]*structpb.Value{}
		for range rng.IntN(6) {
			meta[str(10)] = structpb.NewStringValue(str(20))
		}
		delete(meta, metaDecisionID)
		id := str(24)

		// The library's message and encoding.
		var opts []*corev3.HeaderValueOption
		for j, h := range headers {
			if j == reqAt && reqID != nil {
				opts = append(opts, header(reqID[0], reqID[1]))
			}
			opts = append(opts, header(h[0], h[1]))
		}
		if reqID != nil && reqAt == len(headers) {
			opts = append(opts, header(reqID[0], reqID[1]))
		}
		want := &authv3.CheckResponse{Status: deniedStatus, HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status: &typev3.HttpStatus{Code: typev3.StatusCode(status)}, Headers: opts, Body: string(body)}}}
		wantDeny, err := proto.Marshal(want)
		if err != nil {
			continue // a string proto refuses (not UTF-8): never rendered
		}

		// The hand encoding of the same deny.
		before := appendHTTPStatus(nil, status)
		var after []byte
		for j, h := range headers {
			if j < reqAt {
				before = appendHeaderOption(before, h)
			} else {
				after = appendHeaderOption(after, h)
			}
		}
		got := appendDenied(nil, before, reqID, body, after...)
		if string(got) != string(wantDeny) {
			t.Fatalf("case %d: deny bytes differ from proto.Marshal\n got %x\nwant %x", i, got, wantDeny)
		}

		// Metadata appended: decodes to the message with decision_id added.
		metaBytes, err := proto.MarshalOptions{Deterministic: true}.Marshal(&structpb.Struct{Fields: meta})
		if err != nil {
			continue
		}
		full := appendMetadata(got, metaBytes, id)
		var back authv3.CheckResponse
		if err := proto.Unmarshal(full, &back); err != nil {
			t.Fatalf("case %d: does not decode: %v", i, err)
		}
		want.DynamicMetadata = &structpb.Struct{Fields: map[string]*structpb.Value{metaDecisionID: structpb.NewStringValue(id)}}
		for k, v := range meta {
			want.DynamicMetadata.Fields[k] = v
		}
		if !proto.Equal(&back, want) {
			t.Fatalf("case %d: decodes to\n%v\nwant\n%v", i, &back, want)
		}
	}
}
