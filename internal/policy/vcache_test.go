package policy

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// TestVirtualCacheLikeTopdowns drives the flat cache and topdown's own
// with the same random operations (frames pushed and popped, values and
// undefined put, references reused as topdown reuses them) and requires
// the same answers from both, in short frames and in indexed ones.
func TestVirtualCacheLikeTopdowns(t *testing.T) {
	var refs []ast.Ref
	for i := range 60 {
		refs = append(refs, ast.MustParseRef(fmt.Sprintf("data.p.r%d", i%20)))
		if i%3 == 0 {
			refs[i] = append(refs[i], ast.IntNumberTerm(i))
		}
	}
	refs = append(refs, ast.MustParseRef("data.p"), append(ast.MustParseRef("data.p.f"), ast.ArrayTerm(ast.StringTerm("x"), ast.IntNumberTerm(1))))
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 7))
		ours, theirs := getVirtualCache(), topdown.NewVirtualCache()
		depth := 1
		buf := make(ast.Ref, 0, 8)
		for op := range 3000 {
			switch n := rng.IntN(100); {
			case n < 3:
				ours.Push()
				theirs.Push()
				depth++
			case n < 6 && depth > 1:
				ours.Pop()
				theirs.Pop()
				depth--
			case n < 50:
				r := refs[rng.IntN(len(refs))]
				buf = append(buf[:0], r...) // the caller's slice, reused below
				var v *ast.Term
				if rng.IntN(4) > 0 {
					v = ast.IntNumberTerm(op)
				}
				ours.Put(buf, v)
				theirs.Put(slices.Clone(buf), v)
				for i := range buf {
					buf[i] = ast.StringTerm("overwritten")
				}
			default:
				r := refs[rng.IntN(len(refs))]
				gv, gu := ours.Get(r)
				wv, wu := theirs.Get(r)
				if gu != wu || !gv.Equal(wv) && (gv != nil || wv != nil) {
					t.Fatalf("seed %d op %d: Get(%v) = %v, %v; topdown's %v, %v", seed, op, r, gv, gu, wv, wu)
				}
			}
			if op%500 == 0 {
				if g, w := refStrings(ours.Keys()), refStrings(theirs.Keys()); !slices.Equal(g, w) {
					t.Fatalf("seed %d op %d: Keys %v; topdown's %v", seed, op, g, w)
				}
			}
		}
		putVirtualCache(ours)
	}
}

func refStrings(rs []ast.Ref) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.String()
	}
	slices.Sort(out)
	return out
}

// TestVirtualCacheReusedAcrossEvaluations: the evaluations of one engine
// share reused caches; no value may leak from one check into the next
// (an allow remembered from the check before would be wrong), including
// values cached inside `with` frames and functions called many times.
func TestVirtualCacheReusedAcrossEvaluations(t *testing.T) {
	const mod = `package envoy.authz

user := input.user

double(x) := x * 2

total := sum([double(i) | some i in numbers.range(1, input.n)])

default admin := false

admin if {
	user == "alice"
}

default admin_as_bob := false

admin_as_bob if {
	admin with input.user as "bob"
}

allow := {"allowed": admin, "headers": {"x-total": format_int(total, 10)}, "body": sprintf("%v", [admin_as_bob])}
`
	src := &Source{Origin: "t", Modules: map[string]string{"p.rego": mod}}
	ctx := context.Background()
	eng, err := CompileOPAEnvoy(ctx, src, map[string]any{}, "envoy/authz/allow")
	if err != nil {
		t.Fatal(err)
	}
	// topdown's own cache, rego's own result conversion: the reference.
	ref, err := rego.New(rego.Query("data.envoy.authz.allow"), rego.Module("p.rego", mod)).PrepareForEval(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range []struct {
		user string
		n    int
	}{{"alice", 40}, {"bob", 3}, {"alice", 3}, {"carol", 25}, {"alice", 40}} {
		in := ast.MustInterfaceToValue(map[string]any{"user": c.user, "n": c.n})
		got, err := eng.Eval(ctx, in)
		if err != nil {
			t.Fatal(err)
		}
		rs, err := ref.Eval(ctx, rego.EvalParsedInput(in))
		if err != nil {
			t.Fatal(err)
		}
		want, err := parseEnvoyOutput(rs[0].Expressions[0].Value)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got.Envoy) != fmt.Sprint(want.Envoy) || got.Allow != want.Allow {
			t.Errorf("check %d (%+v): %+v, want %+v", i, c, got.Envoy, want.Envoy)
		}
		if got.Allow != (c.user == "alice") || got.Envoy.Body != "false" {
			t.Errorf("check %d (%+v): allowed %v body %q", i, c, got.Allow, got.Envoy.Body)
		}
		if wantTotal := fmt.Sprint(c.n * (c.n + 1)); !strings.Contains(fmt.Sprint(got.Envoy.Headers), wantTotal) {
			t.Errorf("check %d (%+v): headers %v, want x-total %s", i, c, got.Envoy.Headers, wantTotal)
		}
	}
}
