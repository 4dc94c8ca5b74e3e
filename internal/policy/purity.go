package policy

import (
	"fmt"
	"maps"
	"slices"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/extauthz/extauthz/internal/facts"
)

// Purity is the result of the static analysis of the compiled modules.
type Purity struct {
	Pure bool
	Why  string // the first reason it is not pure
	// Facts read beyond the always-keyed ones.
	ReadsPath, ReadsMethod, ReadsClientIP bool
	// TracesClientIP: the policy reads the client address only through
	// extauthz.client_in, and each evaluation reports its tests
	// (Output.IPTests): a decision holds for every address that answers
	// them alike (see clientip.go).
	TracesClientIP bool
}

// Reads is what the memo key must hold of the facts (facts.Facts.Key).
func (p Purity) Reads() facts.Reads {
	return facts.Reads{Path: p.ReadsPath, Method: p.ReadsMethod, ClientIP: p.ReadsClientIP, ClientIPTraced: p.TracesClientIP}
}

// pureBuiltins are the builtins known to be deterministic and independent of
// time, randomness, I/O and the environment: a policy that calls only these
// (and its own functions) decides the same for the same input and data.
// Anything not listed is impure, including builtins added by later OPA
// versions, until it is reviewed and listed here.
var pureBuiltins = func() map[string]bool {
	m := map[string]bool{ClientInBuiltin: true}
	for _, n := range []string{
		// operators, comparison, assignment, membership
		"eq", "equal", "neq", "lt", "lte", "gt", "gte", "assign", "plus", "minus", "mul", "div", "rem",
		"and", "or", "internal.member_2", "internal.member_3",
		// numbers
		"abs", "ceil", "floor", "round", "numbers.range", "numbers.range_step", "format_int", "to_number",
		"bits.and", "bits.lsh", "bits.negate", "bits.or", "bits.rsh", "bits.xor",
		// aggregates, arrays, sets, objects
		"count", "sum", "product", "max", "min", "sort", "all", "any",
		"array.concat", "array.flatten", "array.reverse", "array.slice",
		"intersection", "union", "set_diff",
		"object.filter", "object.get", "object.keys", "object.remove", "object.subset", "object.union", "object.union_n",
		"json.filter", "json.patch", "json.remove", "walk",
		// strings
		"concat", "contains", "endswith", "startswith", "format_int", "indexof", "indexof_n", "lower", "upper",
		"replace", "split", "sprintf", "substring", "trim", "trim_left", "trim_prefix", "trim_right",
		"trim_space", "trim_suffix", "strings.any_prefix_match", "strings.any_suffix_match", "strings.count",
		"strings.replace_n", "strings.reverse", "strings.split_n", "strings.render_template", "internal.template_string",
		// regex and glob
		"re_match", "regex.match", "regex.is_valid", "regex.find_n", "regex.find_all_string_submatch_n",
		"regex.globs_match", "regex.replace", "regex.split", "regex.template_match", "glob.match", "glob.quote_meta",
		// types
		"is_array", "is_boolean", "is_null", "is_number", "is_object", "is_set", "is_string", "type_name",
		"cast_array", "cast_boolean", "cast_null", "cast_object", "cast_set", "cast_string",
		// encodings
		"base64.decode", "base64.encode", "base64.is_valid", "base64url.decode", "base64url.encode",
		"base64url.encode_no_pad", "hex.decode", "hex.encode", "json.is_valid", "json.marshal",
		"json.marshal_with_options", "json.unmarshal", "yaml.is_valid", "yaml.marshal", "yaml.unmarshal",
		"urlquery.decode", "urlquery.decode_object", "urlquery.encode", "urlquery.encode_object",
		"uri.is_valid", "uri.parse", "units.parse", "units.parse_bytes", "semver.compare", "semver.is_valid",
		"uuid.parse",
		// hashes and signatures that read no clock
		"crypto.md5", "crypto.sha1", "crypto.sha256", "crypto.hmac.equal", "crypto.hmac.md5",
		"crypto.hmac.sha1", "crypto.hmac.sha256", "crypto.hmac.sha512",
		"io.jwt.decode", "io.jwt.verify_eddsa", "io.jwt.verify_es256", "io.jwt.verify_es384",
		"io.jwt.verify_es512", "io.jwt.verify_hs256", "io.jwt.verify_hs384", "io.jwt.verify_hs512",
		"io.jwt.verify_ps256", "io.jwt.verify_ps384", "io.jwt.verify_ps512", "io.jwt.verify_rs256",
		"io.jwt.verify_rs384", "io.jwt.verify_rs512",
		// networks (not net.lookup_ip_addr)
		"net.cidr_contains", "net.cidr_contains_matches", "net.cidr_expand", "net.cidr_intersects",
		"net.cidr_is_valid", "net.cidr_merge", "net.cidr_overlap",
		// graphs
		"graph.reachable", "graph.reachable_paths",
	} {
		m[n] = true
	}
	return m
}()

// analyse decides whether the compiled policy's decision is a function of the
// memo-keyed facts and data alone.
func analyse(c *ast.Compiler) Purity {
	p := Purity{Pure: true}
	impure := func(why string) bool {
		if p.Pure {
			p.Pure, p.Why = false, why
		}
		return true
	}
	for _, name := range slices.Sorted(maps.Keys(c.Modules)) {
		m := c.Modules[name]
		ast.WalkExprs(m, func(x *ast.Expr) bool {
			if len(x.With) > 0 {
				return impure(fmt.Sprintf("%s: uses with", x.Location))
			}
			return false
		})
		walkCalls(m, func(op ast.Ref, _ []*ast.Term, loc *ast.Location) {
			checkCall(op, loc, impure)
		})
		ast.WalkRefs(m, func(r ast.Ref) bool {
			if !r.HasPrefix(ast.InputRootRef) {
				return false
			}
			if len(r) < 3 || !r[1].Equal(ast.StringTerm("extauthz")) {
				return impure(fmt.Sprintf("%s: reads %s", r[0].Location, r))
			}
			field, ok := r[2].Value.(ast.String)
			if !ok || !facts.Keyed(string(field)) {
				return impure(fmt.Sprintf("%s: reads %s", r[0].Location, r))
			}
			p.ReadsPath = p.ReadsPath || field == facts.FieldPath
			p.ReadsMethod = p.ReadsMethod || field == facts.FieldMethod
			return false
		})
	}
	return p
}

// walkCalls calls visit for every call in m: expressions that are calls
// and calls nested in terms (comprehension bodies, arguments).
func walkCalls(m *ast.Module, visit func(op ast.Ref, args []*ast.Term, loc *ast.Location)) {
	ast.WalkExprs(m, func(x *ast.Expr) bool {
		if x.IsCall() {
			visit(x.Operator(), x.Operands(), x.Location)
		}
		return false
	})
	ast.WalkTerms(m, func(t *ast.Term) bool {
		if call, ok := t.Value.(ast.Call); ok && len(call) > 0 {
			if ref, ok := call[0].Value.(ast.Ref); ok {
				visit(ref, call[1:], t.Location)
			}
		}
		return false
	})
}

// checkCall marks a call of anything but a pure builtin or one of the
// policy's own functions (refs into data) impure.
func checkCall(op ast.Ref, loc *ast.Location, impure func(string) bool) {
	if op.HasPrefix(ast.DefaultRootRef) {
		return // a function of the policy: its body is analysed itself
	}
	if name := op.String(); !pureBuiltins[name] {
		impure(fmt.Sprintf("%s: calls %s", loc, name))
	}
}
