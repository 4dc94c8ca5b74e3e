package envoyconfig

import (
	"slices"
	"strings"
	"testing"
)

func TestJSONPathAt(t *testing.T) {
	data := []byte(`{"a":{"b":[1,{"c":"x\"y","d":true}]},"e":"f"}`)
	for _, tc := range []struct{ at, want string }{
		{`"a"`, "a"},
		{`"b"`, "a.b"},
		{`1,`, "a.b[0]"},
		{`"c"`, "a.b[1].c"},
		{`"x`, "a.b[1].c"},
		{`"d"`, "a.b[1].d"},
		{`true`, "a.b[1].d"},
		{`"e"`, "e"},
		{`"f"`, "e"},
	} {
		off := strings.Index(string(data), tc.at)
		if got := jsonPathAt(data, off).String(); got != tc.want {
			t.Errorf("jsonPathAt(%q) = %q, want %q", tc.at, got, tc.want)
		}
	}
}

func TestPathRoundTrip(t *testing.T) {
	p := fieldPath{"static_resources", "listeners"}.index(0).field("typed_per_filter_config").key("envoy.filters.http.ext_authz").field("disabled")
	s := p.String()
	if want := "static_resources.listeners[0].typed_per_filter_config[envoy.filters.http.ext_authz].disabled"; s != want {
		t.Fatalf("String() = %q, want %q", s, want)
	}
	if q := parsePath(s); !slices.Equal(q, p) {
		t.Errorf("parsePath(%q) = %q, want %q", s, q, p)
	}
}

func TestGoFieldToPath(t *testing.T) {
	for in, want := range map[string]string{
		"StaticResources":      "static_resources",
		"Listeners[3]":         "listeners[3]",
		"Http2ProtocolOptions": "http2_protocol_options",
		"TypedPerFilterConfig[envoy.filters.http.x]": "typed_per_filter_config[envoy.filters.http.x]",
	} {
		if got := goFieldToPath(in).String(); got != want {
			t.Errorf("goFieldToPath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestLocate(t *testing.T) {
	src := []byte("a:\n  bB_c:\n    - x: 1\n    - yY: 2\n")
	for _, tc := range []struct {
		path      string
		line, col int
	}{
		{"a.bb_c[1].y_y", 4, 7},     // snake_case path, camel/odd YAML keys
		{"a.bb_c[1].missing", 4, 7}, // deepest existing node
		{"a", 1, 1},
	} {
		e := &FieldError{Path: tc.path}
		(&locator{src: src}).locate(e)
		if e.Line != tc.line || e.Column != tc.col {
			t.Errorf("locate(%s) = %d:%d, want %d:%d", tc.path, e.Line, e.Column, tc.line, tc.col)
		}
	}
}
