package policy

import (
	"context"
	"slices"
	"strings"
	"testing"
)

func (p *InputPaths) list(prefix string, out *[]string) {
	if p.All() {
		*out = append(*out, prefix+"*")
		return
	}
	for k, c := range p.Keys() {
		c.list(prefix+k+".", out)
	}
}

func TestInputPaths(t *testing.T) {
	for _, c := range []struct {
		name, rego string
		want       []string
	}{
		{"paths, through an import", `package envoy.authz
import input.attributes.request.http as h
default allow := false
allow if {
	h.method == "GET"
	h.headers["x-user"] == "alice"
	input.parsed_path[0] == "people"
}`, []string{"attributes.request.http.headers.x-user.*", "attributes.request.http.method.*", "parsed_path.*"}},
		{"a variable key reads the whole object", `package envoy.authz
allow if {
	some k
	input.attributes.request.http.headers[k] == "x"
}`, []string{"attributes.request.http.headers.*"}},
		{"a reference as a value", `package envoy.authz
allow if count(input.attributes.request.http.headers) > 2`, []string{"attributes.request.http.headers.*"}},
		{"input as a value", `package envoy.authz
allow := {"allowed": false, "body": json.marshal(input)}`, []string{"*"}},
		{"an index that is itself input", `package envoy.authz
allow if input.attributes.contextExtensions[input.parsed_path[0]] == "y"`, []string{"attributes.contextExtensions.*", "parsed_path.*"}},
		{"with input", `package envoy.authz
allow if f with input as {"a": 1}
f if input.a == 1`, []string{"*"}},
		{"a constant policy reads nothing", `package envoy.authz
allow := true`, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			e, err := CompileOPAEnvoy(context.Background(), &Source{Origin: "t", Modules: map[string]string{"p.rego": c.rego}}, map[string]any{}, "")
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			e.InputPaths().list("", &got)
			slices.Sort(got)
			if !slices.Equal(got, c.want) {
				t.Errorf("readable:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(c.want, "\n"))
			}
		})
	}
}
