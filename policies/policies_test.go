package policies

import (
	"context"
	"io/fs"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/tester"

	_ "github.com/extauthz/extauthz/internal/policy" // the extauthz.client_in builtin
)

// TestRego runs every _test.rego beside the rules with OPA's tester.
func TestRego(t *testing.T) {
	mods := map[string]*ast.Module{}
	err := fs.WalkDir(FS, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".rego") {
			return err
		}
		b, err := fs.ReadFile(FS, p)
		if err != nil {
			return err
		}
		m, err := ast.ParseModuleWithOpts(p, string(b), ast.ParserOptions{RegoVersion: ast.RegoV1})
		if err != nil {
			return err
		}
		mods[p] = m
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	ch, err := tester.NewRunner().SetModules(mods).RunTests(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for r := range ch {
		n++
		if r.Fail || r.Error != nil {
			t.Errorf("%s.%s: fail=%v error=%v\n%s", r.Package, r.Name, r.Fail, r.Error, r.Output)
		}
	}
	if n < 10 {
		t.Fatalf("ran %d Rego tests; expected the suite in extauthz_test.rego", n)
	}
}
