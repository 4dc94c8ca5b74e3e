package policies

import (
	"context"
	"fmt"
	"io/fs"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/tester"

	"github.com/extauthz/extauthz/internal/authn"
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
	ch, err := tester.NewRunner().RaiseBuiltinErrors(true).SetModules(mods).RunTests(context.Background(), nil)
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

// TestTenantKeyAgreesWithGo: the rulebook's tenant_key (the allowlists'
// key into data.extauthz.tenants) names every tenant as authn.TenantKey
// does (limits.tenants, x-auth-tenant, decision logs).
func TestTenantKeyAgreesWithGo(t *testing.T) {
	b, err := fs.ReadFile(FS, "extauthz.rego")
	if err != nil {
		t.Fatal(err)
	}
	for _, dim := range []string{"tenant", "workspace", "brand"} {
		for _, id := range []string{"42", "w1", "a:b", "tenant:7", "workspace:7", ":", "x:", "zoë"} {
			q := fmt.Sprintf("data.extauthz.tenant_key(%q, %q)", dim, id)
			rs, err := rego.New(rego.Query(q), rego.Module("extauthz.rego", string(b))).Eval(context.Background())
			if err != nil || len(rs) != 1 {
				t.Fatalf("%s: %v %v", q, rs, err)
			}
			if got, want := rs[0].Expressions[0].Value, authn.TenantKey(dim, id); got != want {
				t.Errorf("%s = %v; authn.TenantKey = %q", q, got, want)
			}
		}
	}
}
