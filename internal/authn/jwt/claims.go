package jwt

import (
	"encoding/json"
	"slices"
	"strings"

	"github.com/extauthz/extauthz/internal/authn"
)

// tenantsOf reads a tenant claim: a string, a number, or an array of those.
// Integers keep their exact digits; a number with a fraction or exponent is
// refused (decimal). Empty strings are dropped and duplicates removed. Any other shape, or a string with a control character
// or invalid UTF-8 (authn.HeaderSafe) or a comma (no tenant header could name
// it, and x-auth-tenant would read as two), is refused (ok false).
func tenantsOf(v any) (out []string, ok bool) {
	switch t := v.(type) {
	case nil:
		return nil, true
	case string, json.Number:
		s, ok := tenantID(t)
		if !ok || s == "" {
			return nil, ok
		}
		return []string{s}, true
	case []any:
		for _, e := range t {
			s, ok := tenantID(e)
			if !ok {
				return nil, false
			}
			if s != "" {
				out = append(out, s)
			}
		}
		return dedupe(out), true
	}
	return nil, false
}

func tenantID(v any) (string, bool) {
	switch t := v.(type) {
	case string:
		return t, authn.HeaderSafe(t) && !strings.Contains(t, ",")
	case json.Number:
		return decimal(t)
	}
	return "", false
}

// decimal reads a JSON number as a tenant id: an integer, exactly as
// written (even beyond int64); a fraction or an exponent is refused
// (authn.IntegerID), as in an API key's tenants.
func decimal(n json.Number) (string, bool) {
	return n.String(), authn.IntegerID(n.String())
}

// scopesOf merges "scope" and "scp". Each may be a string of scopes
// separated by spaces (OAuth 2.0, RFC 8693 section 4.2) or an array of
// strings (as some IdPs emit for scp). Order is kept; duplicates and empty
// items are dropped, and so is anything that is not a scope-token (RFC 6749
// section 3.3): "read admin" in an scp array, or a scope with a tab, a
// non-breaking space or a control character, grants neither part, since
// x-auth-scopes would read it as more than one scope.
func scopesOf(scope, scp any) (out []string, ok bool) {
	for _, v := range [2]any{scope, scp} {
		switch t := v.(type) {
		case nil:
		case string:
			for s := range strings.SplitSeq(t, " ") {
				if authn.ScopeToken(s) {
					out = append(out, s)
				}
			}
		case []any:
			for _, e := range t {
				s, isStr := e.(string)
				if !isStr {
					return nil, false
				}
				if authn.ScopeToken(s) {
					out = append(out, s)
				}
			}
		default:
			return nil, false
		}
	}
	return dedupe(out), true
}

// dedupe removes repeated items in place, keeping the first occurrence.
func dedupe(ss []string) []string {
	if len(ss) < 2 {
		return ss
	}
	out := ss[:0]
	if len(ss) <= 16 {
		for _, s := range ss {
			if !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
		return out
	}
	seen := make(map[string]struct{}, len(ss))
	for _, s := range ss {
		if _, dup := seen[s]; !dup {
			seen[s] = struct{}{}
			out = append(out, s)
		}
	}
	return out
}
