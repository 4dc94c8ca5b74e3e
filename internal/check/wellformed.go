package check

import (
	"maps"
	"net/url"
	"slices"
	"strings"

	"github.com/extauthz/extauthz/internal/wire"
)

// malformed marks a request that no conforming client or Envoy sends (see
// wellFormed): it is denied request_invalid like one the codec could not
// take as sent.
const malformed wire.Problem = "malformed"

// wellFormed reports whether the HTTP request in a CheckRequest is one
// Envoy would have let through: a method that is an HTTP token and, where
// the :method and :path pseudo-headers are sent too, the same method and
// path; header names that are lower-case tokens or the request
// pseudo-headers; header values without NUL, CR or LF; no method override
// (methodOverride headers, a _method query parameter) naming another
// method, and no path override (pathOverride headers) naming another path.
// Envoy's codecs
// refuse anything else before ext_authz runs, so whatever else arrives
// did not come from it as the upstream will see it, and is not decided on.
func wellFormed(method, path string, headers map[string]string) bool {
	if !isToken(method, tchar) {
		return false
	}
	if overridesInQuery(method, path) {
		return false
	}
	for k, v := range headers {
		if len(k) > 0 && k[0] == ':' {
			switch k {
			case ":method":
				if v != method {
					return false
				}
			case ":path":
				if path != "" && v != path {
					return false
				}
			case ":authority", ":scheme", ":protocol":
			default:
				return false
			}
		} else if !isToken(k, lowerTchar) {
			return false
		} else if len(k) >= 12 && k[0] == 'x' && methodOverride[k] && !strings.EqualFold(strings.TrimSpace(v), method) {
			return false
		} else if len(k) >= 13 && k[0] == 'x' && pathOverride[k] && !samePath(v, path) {
			return false
		}
		if strings.IndexByte(v, '\n') >= 0 || strings.IndexByte(v, '\r') >= 0 || strings.IndexByte(v, 0) >= 0 {
			return false
		}
	}
	return true
}

// methodOverride are the headers with which frameworks let a client send
// one method and have the upstream act on another. The sidecar decides on
// the method Envoy saw; a request naming a different one there could be
// authorized as a read and executed as a write, so it is refused.
var methodOverride = map[string]bool{"x-http-method-override": true, "x-http-method": true, "x-method-override": true}

// pathOverride are the headers with which frameworks (Symfony before
// CVE-2018-14773, Zend/Laminas, IIS's URL rewrite) let a client send one
// path and have the upstream route another: authorized as /healthz,
// served as /v1/admin. A request naming another path there is refused.
var pathOverride = map[string]bool{"x-original-url": true, "x-rewrite-url": true}

// OverrideHeaders are the method and path override headers the sidecar
// refuses when they name another method or path: a route Envoy serves
// without a check must remove them (extauthz validate --envoy checks it).
func OverrideHeaders() []string {
	var out []string
	for _, m := range []map[string]bool{methodOverride, pathOverride} {
		out = append(out, slices.Collect(maps.Keys(m))...)
	}
	slices.Sort(out)
	return out
}

// samePath reports whether v, a path override header's value (a path, or
// an absolute URL as some proxies write it), names path itself.
func samePath(v, path string) bool {
	v = strings.TrimSpace(v)
	if v == path {
		return true
	}
	u, err := url.Parse(v)
	return err == nil && u.IsAbs() && u.Opaque == "" && u.User == nil && u.Fragment == "" && u.RequestURI() == path
}

// overridesInQuery reports a _method query parameter (Rails, Laravel,
// Symfony, Express's method-override) naming another method than method.
// Pairs are split on '&' and ';' (Rack splits on both) and names and
// values unescaped as those frameworks do ("_%6Dethod" is "_method"); a
// name is compared as PHP makes it a key of $_GET (read up to a NUL byte,
// leading spaces dropped, '.', ' ' and an unclosed '[' made '_': ".method",
// " _method", "[method" and "_method%00x" are "_method"), with or without
// an array suffix ("_method[]"); a '%' that does not start an escape is
// kept as PHP keeps it. Letter case is ignored, which is stricter than
// PHP (some frameworks read the parameter case-insensitively).
func overridesInQuery(method, path string) bool {
	_, q, ok := strings.Cut(path, "?")
	for ok && q != "" {
		var pair string
		if i := strings.IndexAny(q, "&;"); i >= 0 {
			pair, q = q[:i], q[i+1:]
		} else {
			pair, q = q, ""
		}
		name, val, _ := strings.Cut(pair, "=")
		if len(name) < len("method") || !containsFold(name, "ethod") && !strings.Contains(name, "%") {
			continue // cheap: most names cannot be it
		}
		if !isMethodParam(lenientUnescape(name)) {
			continue
		}
		v, err := url.QueryUnescape(val)
		if err != nil || !strings.EqualFold(strings.TrimSpace(v), method) {
			return true
		}
	}
	return false
}

// lenientUnescape decodes a query parameter name as PHP's urldecode and
// Express's qs do: '+' is a space, a valid %XX its byte, and a '%' not
// followed by two hex digits is kept as it is ("_method%zz" is not
// refused by the decoder, it is a name some framework reads).
func lenientUnescape(s string) string {
	if !strings.ContainsAny(s, "%+") {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '+':
			b = append(b, ' ')
		case c == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]):
			b = append(b, unhex(s[i+1])<<4|unhex(s[i+2]))
			i += 2
		default:
			b = append(b, c)
		}
	}
	return string(b)
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

// isMethodParam reports whether n, an unescaped query parameter name, is
// _method as PHP reads it (see overridesInQuery).
func isMethodParam(n string) bool {
	if i := strings.IndexByte(n, 0); i >= 0 {
		n = n[:i] // PHP reads a name up to its first NUL byte
	}
	n = strings.TrimLeft(n, " ")
	if i := strings.IndexByte(n, '['); i >= 0 {
		if strings.IndexByte(n[i:], ']') > 0 {
			n = n[:i] // an array: "_method[]", "_method[a]"
		} else {
			n = n[:i] + "_" + n[i+1:] // PHP makes an unclosed '[' a '_'
		}
	}
	return len(n) == len("_method") && (n[0] == '_' || n[0] == '.') && strings.EqualFold(n[1:], "method")
}

// containsFold reports whether s contains the lower-case ASCII sub in any
// letter case.
func containsFold(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if strings.EqualFold(s[i:i+len(sub)], sub) {
			return true
		}
	}
	return false
}

func isToken(s string, t *[256]bool) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !t[s[i]] {
			return false
		}
	}
	return true
}

// tchar is RFC 9110's token character set; lowerTchar is it without the
// upper-case letters (Envoy sends header names lower-cased).
var tchar, lowerTchar = func() (*[256]bool, *[256]bool) {
	var t, l [256]bool
	for c := 0; c < 256; c++ {
		b := byte(c)
		ok := 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9'
		for i := 0; i < len("!#$%&'*+-.^_`|~"); i++ {
			ok = ok || b == "!#$%&'*+-.^_`|~"[i]
		}
		t[c], l[c] = ok, ok && !('A' <= b && b <= 'Z')
	}
	return &t, &l
}()
