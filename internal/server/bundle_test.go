package server

import (
	"bytes"
	"io/fs"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/util"

	"github.com/extauthz/extauthz/policies"
)

// demoBundle packs the embedded policy and demo data as an OPA bundle.
func demoBundle(t *testing.T) []byte {
	t.Helper()
	b := bundle.Bundle{Data: map[string]any{}}
	ents, _ := fs.ReadDir(policies.FS, ".")
	for _, e := range ents {
		raw, _ := fs.ReadFile(policies.FS, e.Name())
		switch {
		case e.Name() == "data.json":
			if err := util.UnmarshalJSON(raw, &b.Data); err != nil {
				t.Fatal(err)
			}
		case strings.HasSuffix(e.Name(), ".rego"):
			b.Modules = append(b.Modules, bundle.ModuleFile{Path: "/" + e.Name(), URL: "/" + e.Name(), Raw: raw,
				Parsed: ast.MustParseModuleWithOpts(string(raw), ast.ParserOptions{RegoVersion: ast.RegoV1})})
		}
	}
	var buf bytes.Buffer
	if err := bundle.Write(&buf, b); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
