// Package pathcanon turns the raw `:path` Envoy sends into the one canonical
// form that routes are matched against, and refuses every path whose meaning a
// downstream server could read differently (CVE-2019-9901, CVE-2021-29492,
// CVE-2021-32779, istio#27409).
package pathcanon

import "strings"

// Problem names why a path was refused. The empty string means the path is fine.
const (
	ProblemNone          = ""
	ProblemNotAbsolute   = "not_absolute"
	ProblemFragment      = "fragment"
	ProblemEncodedSlash  = "encoded_slash"
	ProblemBackslash     = "backslash"
	ProblemDotSegment    = "dot_segment"
	ProblemEmptySegment  = "empty_segment"
	ProblemPathParameter = "path_parameter"
	ProblemNUL           = "nul"
	ProblemControl       = "control_character"
	ProblemBadEscape     = "bad_percent_escape"
	ProblemTooLong       = "too_long"
	ProblemDoubleEncoded = "double_encoded"
)

// MaxLen is the longest :path (with query) accepted.
const MaxLen = 8192

// Path is a canonical request path.
type Path struct {
	Canonical string   // "/a/b" (a trailing slash is kept: "/a/b/")
	Segments  []string // ["a","b"]; nil for "/"
	Query     string   // raw query without '?'
	Problem   string   // non-empty when the path must be refused
}

// Parse canonicalises raw. It decodes percent-encoded unreserved characters
// (RFC 3986 §6.2.2.2: "/%61dmin" is "/admin") and refuses anything ambiguous.
func Parse(raw string) Path { return ParseInto(raw, nil) }

// ParseInto is Parse with the segments appended to segs[:0], so a caller
// can keep them in storage it already has.
func ParseInto(raw string, segs []string) Path {
	if len(raw) > MaxLen {
		return Path{Problem: ProblemTooLong}
	}
	p, q, _ := strings.Cut(raw, "?")
	if strings.IndexByte(raw, '#') >= 0 {
		return Path{Problem: ProblemFragment}
	}
	if !strings.HasPrefix(p, "/") {
		return Path{Problem: ProblemNotAbsolute}
	}
	if prob := scan(raw); prob != "" {
		return Path{Problem: prob}
	}
	if p == "/" {
		return Path{Canonical: "/", Query: q}
	}
	body := p[1:]
	trailing := strings.HasSuffix(body, "/")
	if trailing {
		body = body[:len(body)-1]
	}
	if n := strings.Count(body, "/") + 1; cap(segs) < n {
		segs = make([]string, 0, n)
	}
	segs = segs[:0]
	changed := false
	for s := range strings.SplitSeq(body, "/") {
		d, prob := decodeSegment(s)
		if prob != "" {
			return Path{Problem: prob}
		}
		if d == "" {
			return Path{Problem: ProblemEmptySegment}
		}
		if d == "." || d == ".." {
			return Path{Problem: ProblemDotSegment}
		}
		if d != s {
			changed = true
		}
		segs = append(segs, d)
	}
	canon := p
	if changed {
		canon = "/" + strings.Join(segs, "/")
		if trailing {
			canon += "/"
		}
	}
	return Path{Canonical: canon, Segments: segs, Query: q}
}

// scan refuses bytes that never belong in a request target.
func scan(raw string) string {
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case c == 0:
			return ProblemNUL
		case c < 0x20 || c == 0x7f || c >= 0x80:
			return ProblemControl
		case c == '\\':
			return ProblemBackslash
		}
	}
	return ""
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

func isHex(c byte) bool { _, ok := unhex(c); return ok }

func unreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

// decodeSegment decodes percent-escaped unreserved characters in one segment.
// Escapes of reserved or special bytes are refused when they would change how
// the path splits or is read (/, \, ;, NUL); other reserved escapes are kept.
func decodeSegment(s string) (string, string) {
	if strings.IndexByte(s, ';') >= 0 {
		return "", ProblemPathParameter
	}
	if strings.IndexByte(s, '%') < 0 {
		return s, ""
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '%' {
			b.WriteByte(c)
			continue
		}
		if i+2 >= len(s) {
			return "", ProblemBadEscape
		}
		hi, ok1 := unhex(s[i+1])
		lo, ok2 := unhex(s[i+2])
		if !ok1 || !ok2 {
			return "", ProblemBadEscape
		}
		v := hi<<4 | lo
		switch {
		case v == '/':
			return "", ProblemEncodedSlash
		case v == '\\':
			return "", ProblemBackslash
		case v == 0:
			return "", ProblemNUL
		case v == ';':
			return "", ProblemPathParameter
		case v < 0x20 || v == 0x7f:
			return "", ProblemControl
		case v == '%' && i+4 < len(s) && isHex(s[i+3]) && isHex(s[i+4]):
			// %25XX decodes to %XX: a server that decodes twice would see
			// another path ("%252e%252e" -> ".."). Refuse it.
			return "", ProblemDoubleEncoded
		case unreserved(v):
			b.WriteByte(v)
		default:
			// Keep reserved/non-ASCII escapes as they are, upper-cased (RFC 3986 §6.2.2.1).
			b.WriteByte('%')
			b.WriteByte(upperHex(s[i+1]))
			b.WriteByte(upperHex(s[i+2]))
		}
		i += 2
	}
	return b.String(), ""
}

func upperHex(c byte) byte {
	if 'a' <= c && c <= 'f' {
		return c - 'a' + 'A'
	}
	return c
}
