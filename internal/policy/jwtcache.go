package policy

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
)

// checkJWTCacheUse refuses a policy for which OPA's io_jwt cache
// (WithJWTVerifyCache) could change a decision. OPA keys a verified token
// on the token and the key alone: io.jwt.decode_verify on the token and
// its constraints' secret or cert (not its alg, checked only when the
// token is verified afresh), io.jwt.verify_* on the token and the key
// string (all of them alike, whatever their algorithm). So a token
// verified by one call would pass another that names another algorithm,
// unchecked. The cache is allowed only where every call sharing a key
// would decide alike: every io.jwt.verify_* call is the same builtin, and
// every io.jwt.decode_verify call gives its constraints as an object
// written in the call with the same alg (or none). Errors name the
// setting and the calls' locations.
func checkJWTCacheUse(c *ast.Compiler) error {
	type use struct {
		what string // the builtin, or decode_verify's alg
		loc  *ast.Location
	}
	var verify, decode *use
	var errs []string
	at := func(l *ast.Location) string {
		if l == nil {
			return "?"
		}
		return fmt.Sprintf("%s:%d", l.File, l.Row)
	}
	conflict := func(first *use, next use, why string) {
		errs = append(errs, fmt.Sprintf("%s: %s, and %s: %s: %s", at(first.loc), first.what, at(next.loc), next.what, why))
	}
	visit := func(op ast.Ref, args []*ast.Term, loc *ast.Location) {
		name := op.String()
		switch {
		case strings.HasPrefix(name, "io.jwt.verify_"):
			u := use{name, loc}
			if verify == nil {
				verify = &u
			} else if verify.what != name {
				conflict(verify, u, "OPA's cache holds one result per token and key for every io.jwt.verify_* builtin")
			}
		case name == "io.jwt.decode_verify":
			alg, ok := "", len(args) >= 2
			if ok {
				var obj ast.Object
				if obj, ok = args[1].Value.(ast.Object); ok {
					if v := obj.Get(ast.InternedTerm("alg")); v != nil {
						var s ast.String
						s, ok = v.Value.(ast.String)
						alg = string(s)
					}
				}
			}
			if !ok {
				errs = append(errs, fmt.Sprintf("%s: io.jwt.decode_verify's constraints are not an object written in the call with a literal alg (or none): OPA's cache ignores their alg, so the policy must show it", at(loc)))
				return
			}
			u := use{"io.jwt.decode_verify with alg " + fmt.Sprintf("%q", alg), loc}
			if alg == "" {
				u.what = "io.jwt.decode_verify without alg"
			}
			if decode == nil {
				decode = &u
			} else if decode.what != u.what {
				conflict(decode, u, "OPA's cache holds one result per token and key whatever the alg")
			}
		}
	}
	for _, name := range slices.Sorted(maps.Keys(c.Modules)) {
		walkCalls(c.Modules[name], visit)
	}
	if len(errs) > 0 {
		return fmt.Errorf("settings.jwt_verify_cache: refused for this policy (turn it off, or verify tokens one way): %s", strings.Join(errs, "; "))
	}
	return nil
}
