package policy

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
)

// allowlistRule is a decision that allows unless the client is outside the
// allowlist in data.cidrs; rest is the part of a rule body that tests the
// address against cidr c.
func allowlistRule(head, test string) string {
	return "package extauthz\n" + head + `
default in_list := false
in_list if {
	some c in data.cidrs
	` + test + `
}
decision := {"allow": true, "reason": "ok"} if in_list
decision := {"allow": false, "reason": "ip_not_allowed"} if not in_list
`
}

func compileWith(t *testing.T, rego string, data map[string]any) *Engine {
	t.Helper()
	e, err := Compile(context.Background(), &Source{Origin: "dir", Modules: map[string]string{"p.rego": rego}}, data)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestClientIPTracedOnlyWhenEveryUseIsClientIn(t *testing.T) {
	cases := []struct {
		name, head, test string
		traced           bool
	}{
		{"alias", "import input.extauthz as facts", "extauthz.client_in([c], facts.client_ip)", true},
		{"a set", "import input.extauthz as facts", "extauthz.client_in({c}, facts.client_ip)", true},
		{"the list from data", "import input.extauthz as facts", "extauthz.client_in(data.cidrs, facts.client_ip)\n\tc", true},
		{"plain ref", "", "extauthz.client_in([c], input.extauthz.client_ip)", true},
		{"assigned result", "", "x := extauthz.client_in([c], input.extauthz.client_ip)\n\tx", true},
		{"net.cidr_contains: correct, keyed per address", "", "net.cidr_contains(c, input.extauthz.client_ip)", false},
		{"compared", "", "input.extauthz.client_ip == c", false},
		{"through a variable used only there", "", "ip := input.extauthz.client_ip\n\textauthz.client_in([c], ip)", true},
		{"through a variable used elsewhere too", "", "ip := input.extauthz.client_ip\n\textauthz.client_in([c], ip)\n\tip != \"10.0.0.1\"", false},
		{"string test", "", "startswith(input.extauthz.client_ip, c)", false},
		{"address as the network", "", "extauthz.client_in([input.extauthz.client_ip], c)", false},
	}
	for _, c := range cases {
		e := compileWith(t, allowlistRule(c.head, c.test), map[string]any{"cidrs": []any{"10.0.0.0/8"}})
		if p := e.Purity(); !p.Pure || p.TracesClientIP != c.traced || !p.ReadsClientIP {
			t.Errorf("%s: %+v, want traced=%v", c.name, p, c.traced)
		}
	}
	// A policy that never reads the address has nothing to trace, and the
	// address is left out of its memo key.
	if p := compileWith(t, "package extauthz\ndecision := {\"allow\": false, \"reason\": \"x\"}", map[string]any{}).Purity(); p.TracesClientIP || p.ReadsClientIP {
		t.Errorf("no address read: %+v", p)
	}
}

func input(ip string) ast.Value {
	return ast.MustParseTerm(fmt.Sprintf(`{"extauthz": {"client_ip": %q}}`, ip)).Value
}

// TestTracedDecisionsMatchPlainOnes: for random allowlists and addresses
// (IPv4, IPv6, IPv4-mapped, invalid, empty), the traced policy decides as
// the plain one, and its trace matches exactly the addresses that decide
// the same.
func TestTracedDecisionsMatchPlainOnes(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	addr := func() string {
		switch rng.IntN(6) {
		case 0:
			return ""
		case 1:
			return "not-an-ip"
		case 2:
			return fmt.Sprintf("::ffff:10.%d.%d.%d", rng.IntN(4), rng.IntN(256), rng.IntN(256))
		case 3:
			return fmt.Sprintf("2001:db8:%x::%x", rng.IntN(4), rng.IntN(65536))
		}
		return fmt.Sprintf("10.%d.%d.%d", rng.IntN(4), rng.IntN(256), rng.IntN(256))
	}
	cidr := func() string {
		switch rng.IntN(5) {
		case 0:
			return fmt.Sprintf("2001:db8:%x::/48", rng.IntN(4))
		case 1:
			return "bogus"
		}
		return fmt.Sprintf("10.%d.0.0/%d", rng.IntN(4), 14+rng.IntN(3))
	}
	rule := allowlistRule("import input.extauthz as facts", "extauthz.client_in([c], facts.client_ip)")
	for range 40 {
		var cidrs []any
		for range 1 + rng.IntN(3) {
			cidrs = append(cidrs, cidr())
		}
		data := map[string]any{"cidrs": cidrs}
		traced := compileWith(t, rule, data)
		if !traced.Purity().TracesClientIP {
			t.Fatal("not traced")
		}
		plain := compileWith(t, allowlistRule("import input.extauthz as facts", "net.cidr_contains(c, facts.client_ip)"), data) // not traced
		if plain.Purity().TracesClientIP {
			t.Fatal("plain policy traced")
		}
		ips := make([]string, 12)
		for i := range ips {
			ips[i] = addr()
		}
		for _, a := range ips {
			got, err1 := traced.Eval(context.Background(), input(a))
			want, err2 := plain.Eval(context.Background(), input(a))
			// net.cidr_contains fails on an address that is not one ("",
			// "not-an-ip") where client_in answers false: a deny either way.
			if err1 != nil && err2 == nil || got.Allow != (err2 == nil && want.Allow) || err1 == nil && err2 == nil && got.Reason != want.Reason {
				t.Fatalf("%v, %q: traced %+v %v, plain %+v %v", cidrs, a, got, err1, want, err2)
			}
			ipA := net.ParseIP(a)
			if ipA == nil {
				continue // such requests are memoized by their address, not by a trace
			}
			if err1 != nil {
				continue // a failed evaluation (a bogus CIDR reached) is a deny, never memoized
			}
			if !got.IPTests.Matches(ipA) {
				t.Fatalf("%v, %q: trace %+v does not match its own address", cidrs, a, got.IPTests)
			}
			// Another address matches the trace exactly when every test
			// falls the same way, and then it decides the same.
			for _, b := range ips {
				ipB := net.ParseIP(b)
				if ipB == nil || !got.IPTests.Matches(ipB) {
					continue
				}
				other, _ := plain.Eval(context.Background(), input(b))
				if other.Allow != got.Allow || other.Reason != got.Reason {
					t.Fatalf("%v: %q and %q match one trace %+v but decide %v and %v", cidrs, a, b, got.IPTests, got.Allow, other.Allow)
				}
			}
		}
	}
}

// TestAddressBytesMatchParsedText: the sidecar matches traces with the 16
// bytes of its netip.Addr; those must answer every CIDR as the text OPA
// parses does.
func TestAddressBytesMatchParsedText(t *testing.T) {
	for _, s := range []string{"10.1.2.3", "::ffff:10.1.2.3", "2001:db8::1", "0.0.0.0", "::"} {
		a := netip.MustParseAddr(s)
		b16 := a.As16()
		for _, c := range []string{"10.0.0.0/8", "::ffff:10.0.0.0/104", "2001:db8::/32", "0.0.0.0/0", "::/0"} {
			_, n, _ := net.ParseCIDR(c)
			if n.Contains(net.IP(b16[:])) != n.Contains(net.ParseIP(a.String())) {
				t.Errorf("%s in %s: bytes and text disagree", s, c)
			}
		}
	}
}

// A trace with no tests holds for every address.
func TestUntestedDecisionHoldsForAnyAddress(t *testing.T) {
	e := compileWith(t, `package extauthz
import input.extauthz as facts
decision := {"allow": false, "reason": "credentials_missing"} if facts.credential.status == "missing"
decision := {"allow": true, "reason": "ok"} if {
	facts.credential.status != "missing"
	extauthz.client_in(data.cidrs, facts.client_ip)
}`, map[string]any{"cidrs": []any{"10.0.0.0/8"}})
	out, err := e.Eval(context.Background(), ast.MustParseTerm(`{"extauthz": {"client_ip": "192.0.2.1", "credential": {"status": "missing"}}}`).Value)
	if err != nil || out.Reason != "credentials_missing" || len(out.IPTests) != 0 || !out.IPTests.Matches(net.ParseIP("203.0.113.7")) {
		t.Fatalf("%+v %v", out, err)
	}
}

// TestTracingSeesWhatTheCompilerResolves: only a call of the builtin itself
// is traced — not a user function reached through an import alias named
// extauthz, nor a rule named client_in. Every case must decide as its
// rules say.
func TestTracingSeesWhatTheCompilerResolves(t *testing.T) {
	decisions := `
decision := {"allow": true, "reason": "ok"} if allowed
decision := {"allow": false, "reason": "ip_not_allowed"} if not allowed
`
	quarantine := `package lib
client_in(cidrs, ip) if {
	some c in cidrs
	net.cidr_contains(c, ip)
	not net.cidr_contains("10.66.0.0/16", ip)
}
`
	cases := []struct {
		name    string
		modules map[string]string
		want    map[string]string // address -> reason
		traced  bool
	}{
		{"the builtin", map[string]string{
			"p.rego": "package extauthz\n" + `allowed if extauthz.client_in(["10.0.0.0/8"], input.extauthz.client_ip)` + decisions,
		}, map[string]string{"10.1.2.3": "ok", "10.66.1.1": "ok", "192.0.2.1": "ip_not_allowed"}, true},
		{"user function through an import alias named extauthz", map[string]string{
			"lib.rego": quarantine,
			"p.rego": "package extauthz\nimport data.lib as extauthz\n" +
				`allowed if extauthz.client_in(["10.0.0.0/8"], input.extauthz.client_ip)` + decisions,
		}, map[string]string{"10.1.2.3": "ok", "10.66.1.1": "ip_not_allowed", "192.0.2.1": "ip_not_allowed"}, false},
		{"package rule named client_in", map[string]string{
			"p.rego": "package extauthz\n" +
				"client_in(cidrs, ip) if {\n\tstartswith(ip, \"10.1.\")\n}\n" +
				`allowed if client_in(["10.0.0.0/8"], input.extauthz.client_ip)` + decisions,
		}, map[string]string{"10.1.2.3": "ok", "10.2.0.1": "ip_not_allowed"}, false},
	}
	for _, c := range cases {
		e, err := Compile(context.Background(), &Source{Origin: "dir", Modules: c.modules}, map[string]any{})
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if e.Purity().TracesClientIP != c.traced {
			t.Errorf("%s: traced=%v, want %v", c.name, e.Purity().TracesClientIP, c.traced)
		}
		for a, want := range c.want {
			out, err := e.Eval(context.Background(), input(a))
			if err != nil || out.Reason != want {
				t.Errorf("%s (traced=%v): %s gets %q (%v), want %q", c.name, e.Purity().TracesClientIP, a, out.Reason, err, want)
			}
			// And a decision traced for one address is reused only by
			// addresses that decide alike.
			for b, wantB := range c.want {
				if ip := net.ParseIP(b); ip != nil && e.Purity().TracesClientIP && out.IPTests.Matches(ip) && wantB != want {
					t.Errorf("%s: the trace for %s (%s) matches %s (%s)", c.name, a, want, b, wantB)
				}
			}
		}
	}
}
