package policy

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/types"
)

// Client-address tracing. A rulebook usually looks at the client address
// only to test it against allowlists: net.cidr_contains(cidr,
// input.extauthz.client_ip). When every use of the address in a pure policy
// is such a test, Compile rewrites each into a call of clientIPIn, which
// makes the same test and records it. A decision then depends on the
// address only through the tests its evaluation made: evaluation is
// deterministic, so another address that gives the same answer to each of
// those tests (IPTrace.Matches) gets the same decision. The sidecar's memo
// can then hold one decision per credential, tenant and route for every
// client address that falls the same way in its allowlists, instead of one
// per address — most decisions test none, and hold for every address.

// clientIPBuiltin is the name the rewritten policy calls.
const clientIPBuiltin = "extauthz_client_ip_in"

var clientIPFunc = &rego.Function{Name: clientIPBuiltin, Decl: types.NewFunction(types.Args(types.S), types.B)}

var (
	cidrContainsRef = ast.MustParseRef("net.cidr_contains")
	clientIPRef     = ast.MustParseRef("input.extauthz.client_ip")
	clientIPCallRef = ast.Ref{ast.VarTerm(clientIPBuiltin)}
)

// IPTest is one test of the client address an evaluation made: whether it
// lies in a network.
type IPTest struct {
	net *net.IPNet
	In  bool
}

// IPTrace is every test of the client address one evaluation made, in order.
type IPTrace []IPTest

// Matches reports whether ip answers every test in t as the traced address
// did. ip must be what net.ParseIP returns for the address's text (or the
// same 16 bytes).
func (t IPTrace) Matches(ip net.IP) bool {
	for _, x := range t {
		if x.net.Contains(ip) != x.In {
			return false
		}
	}
	return true
}

type traceKey struct{}

// ipTrace is the tracing state of one evaluation.
type ipTrace struct {
	ip    net.IP // nil: the address is not an IP; every test fails as net.cidr_contains would
	tests IPTrace
}

// clientIPIn is net.cidr_contains(cidr, input.extauthz.client_ip), recorded.
// Its errors are net.cidr_contains's for those operands (an error makes the
// call undefined, as for any built-in).
func clientIPIn(bctx rego.BuiltinContext, a *ast.Term) (*ast.Term, error) {
	t, _ := bctx.Context.Value(traceKey{}).(*ipTrace)
	s, ok := a.Value.(ast.String)
	if !ok {
		return nil, fmt.Errorf("operand 1 must be string but got %s", ast.ValueName(a.Value))
	}
	_, n, err := net.ParseCIDR(string(s))
	if err != nil {
		return nil, err
	}
	if t == nil || t.ip == nil {
		return nil, errors.New("client_ip is not a valid textual representation of an IP address")
	}
	in := n.Contains(t.ip)
	t.tests = append(t.tests, IPTest{net: n, In: in})
	return ast.InternedTerm(in), nil
}

// withIPTrace returns ctx carrying a trace for input's client address.
func withIPTrace(ctx context.Context, input ast.Value) (context.Context, *ipTrace) {
	t := &ipTrace{}
	if v, err := input.Find(clientIPRef[1:]); err == nil {
		if s, ok := v.(ast.String); ok {
			t.ip = net.ParseIP(string(s))
		}
	}
	return context.WithValue(ctx, traceKey{}, t), t
}

// clientIPRefs counts the references to input.extauthz.client_ip in the
// compiled modules (imports resolved, local variables told apart).
func clientIPRefs(c *ast.Compiler) int {
	refs := 0
	for _, m := range c.Modules {
		ast.WalkRefs(m, func(r ast.Ref) bool {
			if r.HasPrefix(clientIPRef) {
				refs++
			}
			return false
		})
	}
	return refs
}

// compileTraced parses src's modules again and compiles them with every
// net.cidr_contains(x, input.extauthz.client_ip) replaced by
// extauthz_client_ip_in(x). The rewrite runs as a compiler stage once
// references are resolved and local variables renamed, so it sees the
// built-in where the policy calls the built-in — not a user function
// reached through an import alias or a rule named like it — and the
// address wherever an import alias names it; and what it inserts is not
// resolved against the policy's own rules. It returns the compiler and the
// number of calls replaced.
func compileTraced(src *Source) (*ast.Compiler, int, error) {
	mods, err := parseModules(src) // Compile consumed the first parse
	if err != nil {
		return nil, 0, err
	}
	rewrites := 0
	c := ast.NewCompiler().WithDefaultRegoVersion(ast.RegoV1).
		WithBuiltins(map[string]*ast.Builtin{clientIPBuiltin: {Name: clientIPBuiltin, Decl: clientIPFunc.Decl}}).
		WithStageAfterID(ast.StageRewriteLocalVars, ast.CompilerStageDefinition{
			Name: "TraceClientIP", MetricName: "compile_stage_trace_client_ip",
			Stage: func(c *ast.Compiler) *ast.Error {
				for _, name := range slices.Sorted(maps.Keys(c.Modules)) {
					rewrites += rewriteClientIPTests(c.Modules[name])
				}
				return nil
			},
		})
	if c.Compile(mods); c.Failed() {
		return nil, 0, c.Errors
	}
	return c, rewrites, nil
}

// rewriteClientIPTests rewrites module m (references resolved) in place and
// returns how many calls it replaced.
func rewriteClientIPTests(m *ast.Module) int {
	n := 0
	ast.WalkExprs(m, func(x *ast.Expr) bool {
		if ts, ok := x.Terms.([]*ast.Term); ok && x.IsCall() && x.Operator().Equal(cidrContainsRef) && len(ts) == 3 && isClientIP(ts[2]) {
			x.Terms = []*ast.Term{ast.NewTerm(clientIPCallRef.Copy()), ts[1]}
			n++
		}
		return false
	})
	ast.WalkTerms(m, func(t *ast.Term) bool {
		if call, ok := t.Value.(ast.Call); ok && len(call) == 3 && call[0].Value.Compare(cidrContainsRef) == 0 && isClientIP(call[2]) {
			t.Value = ast.Call{ast.NewTerm(clientIPCallRef.Copy()), call[1]}
			n++
		}
		return false
	})
	return n
}

func isClientIP(t *ast.Term) bool {
	r, ok := t.Value.(ast.Ref)
	return ok && r.Equal(clientIPRef)
}

// clientIPCalls counts the calls of extauthz_client_ip_in in compiled
// modules.
func clientIPCalls(c *ast.Compiler) int {
	n := 0
	for _, m := range c.Modules {
		ast.WalkExprs(m, func(x *ast.Expr) bool {
			if x.IsCall() && x.Operator().Equal(clientIPCallRef) {
				n++
			}
			return false
		})
	}
	return n
}
