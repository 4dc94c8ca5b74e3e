package policy

import (
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
)

// The allowlist names real builtins, and none that reads a clock, a random
// source, the network, files or the environment.
func TestPureBuiltinsAreDeterministic(t *testing.T) {
	for name := range pureBuiltins {
		if name == ClientInBuiltin {
			continue
		}
		b, ok := ast.BuiltinMap[name]
		if !ok {
			t.Errorf("%s is not an OPA builtin", name)
			continue
		}
		if b.Nondeterministic {
			t.Errorf("%s is nondeterministic", name)
		}
		for _, p := range []string{"time.", "http.", "net.lookup", "rand.", "uuid.rfc", "crypto.x509.", "opa.runtime", "io.jwt.decode_verify", "io.jwt.encode", "providers.", "trace", "print", "internal.print", "json.match_schema", "json.verify_schema"} {
			if strings.HasPrefix(name, p) {
				t.Errorf("%s depends on time, randomness or I/O", name)
			}
		}
	}
}

// Anything not on the allowlist makes a policy impure, whether called as an
// expression or nested in a term.
func TestUnlistedBuiltinsAreImpure(t *testing.T) {
	for _, body := range []string{
		`crypto.x509.parse_and_verify_certificates("x")`,
		`x := crypto.x509.parse_and_verify_certificates_with_options("x", {})`,
		`count([y | y := time.now_ns()]) > 0`,
		`x := {"a": uuid.rfc4122("k")}`,
		`net.lookup_ip_addr("example.com")`,
	} {
		src := &Source{Origin: "t", Modules: map[string]string{"p.rego": "package extauthz\nimport rego.v1\nd if {\n\t" + body + "\n}\ndecision := {\"allow\": false, \"reason\": \"internal_error\"}\n"}}
		mods, err := parseModules(src)
		if err != nil {
			t.Fatal(err)
		}
		c := ast.NewCompiler()
		if c.Compile(mods); c.Failed() {
			t.Fatalf("%s: %v", body, c.Errors)
		}
		if p := analyse(c); p.Pure {
			t.Errorf("%s: classified pure", body)
		}
	}
}
