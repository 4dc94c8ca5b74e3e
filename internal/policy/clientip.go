package policy

import (
	"context"
	"fmt"
	"net"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/types"
)

// Client-address tests a policy author can see. A rulebook usually looks at
// the client address only to test it against allowlists; it says so by
// calling the builtin
//
//	extauthz.client_in(cidrs, input.extauthz.client_ip)
//
// which is true when the address lies in any of cidrs (an array or set of
// CIDR strings) and records each test it makes. When every use of the
// address in a memoizable policy is such a call, a decision depends on the
// address only through the tests its evaluation made: evaluation is
// deterministic, so another address that answers each of those tests alike
// (IPTrace.Matches) gets the same decision. The sidecar's memo then holds
// one decision per credential, tenant and route for every client address
// that falls the same way in its allowlists, instead of one per address.
// Any other use of the address (net.cidr_contains included) is just as
// correct, and memoized per address.

// ClientInBuiltin is the builtin's name.
const ClientInBuiltin = "extauthz.client_in"

var clientInRef = ast.MustParseRef(ClientInBuiltin)

func init() {
	rego.RegisterBuiltin2(&rego.Function{
		Name: ClientInBuiltin,
		Decl: types.NewFunction(types.Args(
			types.Named("cidrs", types.NewAny(types.NewArray(nil, types.S), types.NewSet(types.S))).Description("networks in CIDR notation"),
			types.Named("address", types.S).Description("the client address, input.extauthz.client_ip"),
		), types.Named("result", types.B).Description("whether address lies in any of cidrs")),
		Description: "Whether the client address lies in any of the networks; the sidecar records the tests to share decisions across addresses.",
	}, clientIn)
}

var clientIPRef = ast.MustParseRef("input.extauthz.client_ip")

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

// ipTrace collects the tests of one evaluation.
type ipTrace struct{ tests IPTrace }

// withIPTrace returns ctx carrying a trace for one evaluation.
func withIPTrace(ctx context.Context) (context.Context, *ipTrace) {
	t := &ipTrace{}
	return context.WithValue(ctx, traceKey{}, t), t
}

// clientIn implements extauthz.client_in. It tests the networks in order
// (a set's sorted order) and stops at the first that holds the address, as
// `some c in cidrs; net.cidr_contains(c, address)` would; an address that
// is not an IP lies in none. A network that does not parse is an error (the
// call is then undefined, as for any builtin).
func clientIn(bctx rego.BuiltinContext, cidrs, addr *ast.Term) (*ast.Term, error) {
	s, ok := addr.Value.(ast.String)
	if !ok {
		return nil, fmt.Errorf("operand 2 must be string but got %s", ast.ValueName(addr.Value))
	}
	ip := net.ParseIP(string(s))
	t, _ := bctx.Context.Value(traceKey{}).(*ipTrace)
	found := false
	test := func(c *ast.Term) error {
		cs, ok := c.Value.(ast.String)
		if !ok {
			return fmt.Errorf("operand 1 must hold strings but holds %s", ast.ValueName(c.Value))
		}
		_, n, err := net.ParseCIDR(string(cs))
		if err != nil {
			return err
		}
		found = ip != nil && n.Contains(ip)
		if t != nil {
			t.tests = append(t.tests, IPTest{net: n, In: found})
		}
		return nil
	}
	var list *ast.Array
	switch v := cidrs.Value.(type) {
	case *ast.Array:
		list = v
	case ast.Set:
		list = v.Sorted()
	default:
		return nil, fmt.Errorf("operand 1 must be array or set but got %s", ast.ValueName(cidrs.Value))
	}
	for i := 0; i < list.Len() && !found; i++ {
		if err := test(list.Elem(i)); err != nil {
			return nil, err
		}
	}
	return ast.InternedTerm(found), nil
}

// clientIPUses counts, in compiled modules, the references to
// input.extauthz.client_ip and those among them that are the address
// operand of an extauthz.client_in call (imports resolved, so a user
// function or an alias named like the builtin is not it). The compiler may
// first copy the reference into a local variable of its own
// (__localN__ = input.extauthz.client_ip) that the call then takes; such a
// copy counts when the variable is used nowhere else.
func clientIPUses(c *ast.Compiler) (refs, traced int) {
	isClientIP := func(t *ast.Term) bool {
		r, ok := t.Value.(ast.Ref)
		return ok && r.Equal(clientIPRef)
	}
	for _, m := range c.Modules {
		ast.WalkRefs(m, func(r ast.Ref) bool {
			if r.HasPrefix(clientIPRef) {
				refs++
			}
			return false
		})
		copies := map[ast.Var]bool{} // compiler locals holding the address
		uses := map[ast.Var]int{}
		ast.WalkExprs(m, func(x *ast.Expr) bool {
			if ts, ok := x.Terms.([]*ast.Term); ok && x.IsEquality() && len(ts) == 3 && isClientIP(ts[2]) {
				if v, ok := ts[1].Value.(ast.Var); ok && v.IsGenerated() {
					copies[v] = true
				}
			}
			return false
		})
		ast.WalkVars(m, func(v ast.Var) bool {
			uses[v]++
			return false
		})
		address := func(t *ast.Term) bool {
			if isClientIP(t) {
				return true
			}
			v, ok := t.Value.(ast.Var)
			return ok && copies[v] && uses[v] == 2 // the copy and this call
		}
		ast.WalkExprs(m, func(x *ast.Expr) bool {
			if ts, ok := x.Terms.([]*ast.Term); ok && x.IsCall() && x.Operator().Equal(clientInRef) && len(ts) >= 3 && address(ts[2]) {
				traced++
			}
			return false
		})
		ast.WalkTerms(m, func(t *ast.Term) bool {
			if call, ok := t.Value.(ast.Call); ok && len(call) == 3 && call[0].Value.Compare(clientInRef) == 0 && address(call[2]) {
				traced++
			}
			return false
		})
	}
	return refs, traced
}
