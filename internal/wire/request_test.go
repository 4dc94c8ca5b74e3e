package wire

import (
	"testing"
	"unicode/utf8"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// allStringsValid walks m and reports whether every string in it is UTF-8.
func allStringsValid(m protoreflect.Message) bool {
	ok := true
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				if fd.MapKey().Kind() == protoreflect.StringKind && !utf8.ValidString(k.String()) {
					ok = false
				}
				if fd.MapValue().Kind() == protoreflect.StringKind && !utf8.ValidString(mv.String()) {
					ok = false
				}
				if fd.MapValue().Kind() == protoreflect.MessageKind && !allStringsValid(mv.Message()) {
					ok = false
				}
				return ok
			})
		case fd.IsList():
			for i := range v.List().Len() {
				e := v.List().Get(i)
				if fd.Kind() == protoreflect.StringKind && !utf8.ValidString(e.String()) ||
					fd.Kind() == protoreflect.MessageKind && !allStringsValid(e.Message()) {
					ok = false
				}
			}
		case fd.Kind() == protoreflect.StringKind:
			ok = utf8.ValidString(v.String())
		case fd.Kind() == protoreflect.MessageKind:
			ok = allStringsValid(v.Message())
		}
		return ok
	})
	return ok
}

// FuzzCheckRequestBytes: any bytes decode without error; a request that
// decodes as sent is not marked (unless too large); anything else is marked,
// and what the handler gets holds only valid UTF-8.
func FuzzCheckRequestBytes(f *testing.F) {
	good, _ := proto.Marshal(&authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "GET", Path: "/v1/orders", Headers: map[string]string{"x-api-key": "k", ":path": "/v1/orders"}, Body: "abc"}},
		ContextExtensions: map[string]string{"route": "r"},
	}})
	f.Add(good)
	f.Add([]byte{0xff, 0xff})
	f.Add([]byte{})
	bad := append([]byte(nil), good...)
	for i := range bad {
		if bad[i] == 'k' {
			bad[i] = 0xff
		}
	}
	f.Add(bad)
	c := Codec(64).(codec)
	f.Fuzz(func(t *testing.T, b []byte) {
		var req authv3.CheckRequest
		if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, &req); err != nil {
			t.Fatalf("Unmarshal returned an error: %v", err)
		}
		p := ProblemOf(&req)
		var plain authv3.CheckRequest
		decodes := proto.Unmarshal(b, &plain) == nil
		switch {
		case decodes && len(b) <= 64 && ProblemOf(&plain) == "" && p != "":
			t.Fatalf("a request that decodes was marked %q", p)
		case !decodes && p == "":
			t.Fatal("a request that does not decode was not marked")
		case len(b) > 64 && decodes && p == "":
			t.Fatal("a request over the limit was not marked")
		}
		if !allStringsValid(req.ProtoReflect()) {
			t.Fatal("the handler is given invalid UTF-8")
		}
	})
}
