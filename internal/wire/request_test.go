package wire

import (
	"bytes"
	"runtime"
	"testing"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"
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
		decodes := proto.UnmarshalOptions{RecursionLimit: MaxDepth}.Unmarshal(b, &plain) == nil
		switch {
		case decodes && len(b) <= 64 && !sentMark(&plain) && p != "":
			t.Fatalf("a request that decodes was marked %q", p)
		case !decodes && p == "":
			t.Fatal("a request that does not decode was not marked")
		case decodes && sentMark(&plain) && p != Undecodable:
			t.Fatalf("a request carrying the mark's field was marked %q", p)
		case len(b) > 64 && decodes && p == "":
			t.Fatal("a request over the limit was not marked")
		}
		if !allStringsValid(req.ProtoReflect()) {
			t.Fatal("the handler is given invalid UTF-8")
		}
	})
}

// A client that sends the mark's field itself, with any value, gets its
// request taken as undecodable (a deny). An empty mark placed before the
// codec's used to hide it: a request with invalid UTF-8 (or over the size
// limit) was read back as having no problem at all.
func TestClientMarkIsUndecodable(t *testing.T) {
	good, _ := proto.Marshal(&authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/v1/orders"}}}})
	withMark := func(b []byte, v string) []byte {
		b = protowire.AppendTag(append([]byte(nil), b...), problemField, protowire.BytesType)
		return protowire.AppendString(b, v)
	}
	invalid := bytes.Replace(good, []byte("/v1/orders"), []byte("/v1/order\xff"), 1)
	cases := map[string][]byte{
		"empty mark":                     withMark(good, ""),
		"a mark of its own":              withMark(good, "fine"),
		"the codec's mark":               withMark(good, string(NotUTF8)),
		"empty mark, then invalid UTF-8": append(withMark(nil, ""), invalid...),
		"a varint in the mark's field":   protowire.AppendVarint(protowire.AppendTag(append([]byte(nil), good...), problemField, protowire.VarintType), 0),
	}
	for name, b := range cases {
		for _, limit := range []int{0, 16} {
			var req authv3.CheckRequest
			if err := Codec(limit).(codec).Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, &req); err != nil {
				t.Fatal(err)
			}
			if p := ProblemOf(&req); p != Undecodable {
				t.Errorf("%s (limit %d): %q, want %q", name, limit, p, Undecodable)
			}
		}
	}
}

// nested is a CheckRequest whose metadata_context nests depth structs
// (three messages each: Struct, its fields entry, Value), the innermost
// holding leaf (in which "x\x7f" becomes "x" and the byte 0xff).
func nested(depth int, leaf string) []byte {
	v := structpb.NewStringValue(leaf)
	for range depth {
		v = structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{"a": v}})
	}
	b, err := proto.Marshal(&authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request:         &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/x"}},
		MetadataContext: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"f": v.GetStructValue()}},
	}})
	if err != nil {
		panic(err)
	}
	// proto.Marshal refuses invalid UTF-8: the marker, of the same length, becomes "x\xff".
	return bytes.Replace(b, []byte("x\x7f"), []byte("x\xff"), 1)
}

// TestDeepRequestsCostLinearMemory: a request nesting messages past
// MaxDepth is marked undecodable, and one with invalid UTF-8 is repaired,
// at a cost in allocated bytes proportional to its size. The repair once
// allocated a copy of the rest of the request per level: 82 KB nested
// 4,000 deep took 0.5 GB, 632 KB ran the sidecar out of memory.
func TestDeepRequestsCostLinearMemory(t *testing.T) {
	c := Codec(0).(codec)
	bad := "x\x7f" // made x followed by an invalid byte
	for _, tc := range []struct {
		name  string
		depth int
		leaf  string
		want  Problem
	}{
		{"deep, valid UTF-8", 12000, "v", Undecodable},
		{"deep, invalid UTF-8", 4000, bad + string(make([]byte, 50000)), Undecodable},
		{"shallow, invalid UTF-8", 20, bad, NotUTF8},
		{"near the bound, invalid UTF-8", (MaxDepth - 6) / 3, bad, NotUTF8},
		{"past the bound, invalid UTF-8", MaxDepth/3 + 1, bad, Undecodable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := nested(tc.depth, tc.leaf)
			var req authv3.CheckRequest
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			if err := c.Unmarshal(mem.BufferSlice{mem.SliceBuffer(b)}, &req); err != nil {
				t.Fatal(err)
			}
			runtime.ReadMemStats(&after)
			if p := ProblemOf(&req); p != tc.want {
				t.Fatalf("%d bytes nested %d deep: %q, want %q", len(b), tc.depth, p, tc.want)
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > uint64(64*len(b))+1<<20 {
				t.Errorf("%d bytes nested %d deep allocated %d bytes", len(b), tc.depth, alloc)
			}
			if tc.want == NotUTF8 {
				if req.GetAttributes().GetRequest().GetHttp().GetPath() != "/x" || !allStringsValid(req.ProtoReflect()) {
					t.Fatalf("repaired request: %v", &req)
				}
				v := req.GetAttributes().GetMetadataContext().GetFilterMetadata()["f"]
				for range tc.depth - 1 {
					v = v.GetFields()["a"].GetStructValue()
				}
				if got := v.GetFields()["a"].GetStringValue(); got != "x\uFFFD" {
					t.Fatalf("innermost value %q, want x\\uFFFD", got)
				}
			}
		})
	}
}
