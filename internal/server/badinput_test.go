package server

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// rawCodec sends the bytes it is given as the request, whatever they are.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(v.([]byte))}, nil
}
func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return proto.Unmarshal(data.Materialize(), v.(*authv3.CheckResponse))
}
func (rawCodec) Name() string { return "proto" }

// withBytes marshals r and replaces every occurrence of the marker with raw
// (same length), so a request can carry bytes protobuf would not encode.
func withBytes(t *testing.T, r *authv3.CheckRequest, marker, raw string) []byte {
	t.Helper()
	b, err := proto.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if len(marker) != len(raw) || !bytes.Contains(b, []byte(marker)) {
		t.Fatal("marker not found or lengths differ")
	}
	return bytes.ReplaceAll(b, []byte(marker), []byte(raw))
}

// Every byte sequence sent as a CheckRequest is answered with a
// CheckResponse: a deny in the API's envelope, never a gRPC error.
func TestEveryRequestGetsACheckResponse(t *testing.T) {
	conn := startServerConn(t, "tcp", "127.0.0.1:0")
	send := func(t *testing.T, b []byte) *authv3.CheckResponse {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var resp authv3.CheckResponse
		if err := conn.Invoke(ctx, authv3.Authorization_Check_FullMethodName, b, &resp, grpc.ForceCodecV2(rawCodec{})); err != nil {
			t.Fatalf("gRPC error instead of a deny: %v", err)
		}
		return &resp
	}
	const demoKey = "xa_demo_7Qm2vK9pL4sT8wZ1"
	valid := checkReq(map[string]string{"x-api-key": demoKey, "x-tenant-id": "42", "x-note": "MARK"})
	aidial := checkReq(map[string]string{"x-api-key": demoKey, "x-note": "MARK"})
	aidial.Attributes.Request.Http.Path = "/v1/calls"
	aidial.Attributes.Request.Http.Headers[":path"] = "/v1/calls"
	big := checkReq(map[string]string{"x-api-key": demoKey, "x-tenant-id": "42"})
	big.Attributes.Request.Http.Body = strings.Repeat("a", 9<<20) // over the default 8 MiB
	rawMap := func(raw []byte) []byte {
		r := checkReq(nil)
		r.Attributes.Request.Http.Headers = nil
		r.Attributes.Request.Http.HeaderMap = &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
			{Key: ":method", RawValue: []byte("GET")}, {Key: ":path", RawValue: []byte("/v1/orders")},
			{Key: "X-Api-Key", RawValue: []byte(demoKey)}, {Key: "x-tenant-id", RawValue: raw},
		}}
		b, _ := proto.Marshal(r)
		return b
	}
	for _, tc := range []struct {
		name   string
		body   []byte
		status int    // of the deny; 0: allowed
		code   string // a fragment of the body
	}{
		{"valid", withBytes(t, valid, "MARK", "MARK"), 0, ""},
		{"0xff in a header value", withBytes(t, valid, "MARK", "\xffAR\xfe"), 400, `"request_invalid"`},
		{"0xff in a header value, aidial route", withBytes(t, aidial, "MARK", "\xffAR\xfe"), 400, `"invalid_request"`},
		{"0xff in the path", withBytes(t, valid, "/v1/orders", "/v1/\xffrders"), 400, `"request_invalid"`},
		{"overlong UTF-8 in a header name", withBytes(t, valid, "x-note", "x-\xc0\xaete"), 400, `"request_invalid"`},
		{"not protobuf", []byte{0xff, 0xff, 0xff, 0xff}, 400, `"request_invalid"`},
		{"truncated", withBytes(t, valid, "MARK", "MARK")[:40], 400, `"request_invalid"`},
		{"empty", nil, 500, `"internal_error"`},
		{"over max-request-bytes", func() []byte { b, _ := proto.Marshal(big); return b }(), 413, `"request_too_large"`},
		{"header_map (encode_raw_headers)", rawMap([]byte("42")), 0, ""},
		{"header_map with non-UTF-8 bytes", rawMap([]byte("4\xff")), 400, `"request_invalid"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := send(t, tc.body)
			if tc.status == 0 { // the same, gzip-compressed by the client (gRPC allows it)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				var zresp authv3.CheckResponse
				if err := conn.Invoke(ctx, authv3.Authorization_Check_FullMethodName, tc.body, &zresp, grpc.ForceCodecV2(rawCodec{}), grpc.UseCompressor(gzip.Name)); err != nil {
					t.Fatalf("gzip-compressed: gRPC error instead of an answer: %v", err)
				}
				if zresp.GetOkResponse() == nil {
					t.Fatalf("gzip-compressed: want an allow, got %v", &zresp)
				}
			}
			// Envoy's local replies tell the sidecar's answers from its own
			// by this field (internal/envoyconfig/localreply.go).
			if resp.GetDynamicMetadata().GetFields()["decision_id"].GetStringValue() == "" {
				t.Errorf("no decision_id in the metadata: %v", resp.GetDynamicMetadata())
			}
			d := resp.GetDeniedResponse()
			if tc.status == 0 {
				if resp.GetOkResponse() == nil {
					t.Fatalf("want an allow, got %v", resp)
				}
				return
			}
			if d == nil || int(d.GetStatus().GetCode()) != tc.status || !strings.Contains(d.GetBody(), tc.code) {
				t.Fatalf("want %d with %s, got %v", tc.status, tc.code, resp)
			}
		})
	}
}
