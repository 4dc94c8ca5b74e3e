// Package pathcanon turns the raw `:path` Envoy sends into the one canonical
// form that routes are matched against, and refuses every path whose meaning a
// downstream server could read differently (CVE-2019-9901, CVE-2021-29492,
// CVE-2021-32779, istio#27409).
//
// The canonical form decodes percent-escapes of unreserved characters
// ("/%61dmin" is "/admin") and keeps every other escape, upper-cased
// ("caf%c3%a9" is "caf%C3%A9"). It is a fixed point: parsing a canonical path
// accepts it and gives back the same Canonical and Segments.
//
// What is refused, and the Problem it is refused with:
//
//   - longer than MaxLen: ProblemTooLong; a '#': ProblemFragment; not starting
//     with '/': ProblemNotAbsolute.
//   - raw bytes: NUL is ProblemNUL; other C0 controls, DEL and every byte
//     >= 0x80 (raw non-ASCII, valid UTF-8 or not) are ProblemControl; '\' is
//     ProblemBackslash; a raw space, '"', '<' or '>' anywhere, or '`', '{', '}'
//     or '^' in the path (bytes every conforming client percent-encodes there)
//     is ProblemIllegalChar.
//   - an empty segment ("//", "/a//b") is ProblemEmptySegment; a segment that
//     is "." or ".." once decoded ("%2e%2E") is ProblemDotSegment; ';' raw or
//     escaped is ProblemPathParameter.
//   - escapes: '%' not followed by two hex digits is ProblemBadEscape; an
//     escaped '/' is ProblemEncodedSlash, '\' ProblemBackslash, NUL ProblemNUL,
//     other C0 controls and DEL ProblemControl.
//   - escaped bytes >= 0x80 must decode to UTF-8 (RFC 3629: no overlong forms
//     such as "%c0%ae", which lenient decoders read as '.', no surrogates, no
//     truncated or stray continuation bytes, nothing above U+10FFFF), else
//     ProblemBadEscape. An escaped C1 control (U+0080-U+009F, "%c2%85") is
//     ProblemControl.
//   - double encoding, ProblemDoubleEncoded. The rule is about the path once
//     decoded (every escape decoded, however escapes and literals are mixed):
//     a '%' in it, which can only come from "%25", must not be followed by a
//     hex digit or by 'u'/'U'. So "%252e", "%252%65", "%25%32%65" and
//     "%250%30" (once decoded "%2e", "%2e", "%2e", "%00") are refused, and so is
//     "%25u002e" (IIS-style "%u002e"), while "100%25" and "%25zz" are accepted.
//     This is stricter than "a second decode changes nothing" (it also refuses
//     a '%' followed by a single hex digit) so that one character of look-ahead
//     decides it. For an accepted path a second round of percent-decoding,
//     strict or lenient, changes nothing: whatever a server that decodes once
//     or twice sees is what the checks above already saw.
//
// Not covered: valid non-ASCII characters that Unicode normalisation (NFKC)
// folds to '.', '/' or '\' (U+FF0E, U+FF0F, U+FF3C, U+2024, ...) are accepted
// as they are; no percent-decoding turns them into those bytes.
package pathcanon

import (
	"strings"
	"unicode/utf8"
)

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
	ProblemIllegalChar   = "illegal_character"
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
	if prob := scan(p, pathIllegal); prob != "" {
		return Path{Problem: prob}
	}
	if prob := scan(q, queryIllegal); prob != "" {
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

// scan refuses bytes that never belong in a request target, and the
// printable ones in illegal.
func scan(raw string, illegal *[256]bool) string {
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case c == 0:
			return ProblemNUL
		case c < 0x20 || c == 0x7f || c >= 0x80:
			return ProblemControl
		case c == '\\':
			return ProblemBackslash
		case illegal[c]:
			return ProblemIllegalChar
		}
	}
	return ""
}

// The printable ASCII bytes RFC 3986 does not allow in a path or a query
// that every conforming client percent-encodes there (the WHATWG URL
// standard's path and query percent-encode sets). '|', '[' and ']', which
// browsers send as they are, are left to the server.
var pathIllegal, queryIllegal = illegalSet(" \"<>`{}^"), illegalSet(" \"<>")

func illegalSet(chars string) *[256]bool {
	var t [256]bool
	for i := 0; i < len(chars); i++ {
		t[chars[i]] = true
	}
	return &t
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

// escapeAt decodes the escape "%XX" at s[i] (s[i] is '%').
func escapeAt(s string, i int) (byte, bool) {
	if i+2 >= len(s) {
		return 0, false
	}
	hi, ok1 := unhex(s[i+1])
	lo, ok2 := unhex(s[i+2])
	return hi<<4 | lo, ok1 && ok2
}

// decodedAt is the byte that s[i:] starts with once decoded: an escape's value
// or a literal byte. ok is false at the end of s or at a malformed escape.
func decodedAt(s string, i int) (byte, bool) {
	if i >= len(s) {
		return 0, false
	}
	if s[i] == '%' {
		return escapeAt(s, i)
	}
	return s[i], true
}

// utf8Escapes is how many consecutive escapes starting at s[i] (whose value
// is >= 0x80) spell one UTF-8 encoded character, and the character; n is 0 if
// they do not spell a valid one (overlong, surrogate, truncated, stray
// continuation byte, above U+10FFFF).
func utf8Escapes(s string, i int) (n int, r rune) {
	var buf [utf8.UTFMax]byte
	k := 0
	for j := i; k < len(buf) && j < len(s) && s[j] == '%'; j += 3 {
		v, ok := escapeAt(s, j)
		if !ok || v < 0x80 {
			break
		}
		buf[k] = v
		k++
	}
	r, size := utf8.DecodeRune(buf[:k])
	if r == utf8.RuneError && size <= 1 {
		return 0, r
	}
	return size, r
}

func isLowerHex(c byte) bool { return 'a' <= c && c <= 'f' }

// decodeSegment decodes percent-escaped unreserved characters in one segment
// and upper-cases the escapes it keeps. It refuses the escapes the package
// comment lists. A segment that is already canonical is returned as it is,
// without allocating.
func decodeSegment(s string) (string, string) {
	if strings.IndexByte(s, ';') >= 0 {
		return "", ProblemPathParameter
	}
	if strings.IndexByte(s, '%') < 0 {
		return s, ""
	}
	changed := false
	for i := 0; i < len(s); {
		if s[i] != '%' {
			i++
			continue
		}
		v, ok := escapeAt(s, i)
		if !ok {
			return "", ProblemBadEscape
		}
		n := 1 // escapes consumed
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
		case v == '%':
			// Once decoded this is a '%'; what follows it once decoded
			// must not make it an escape for a server that decodes again:
			// "%252e", "%252%65", "%25%32%65" all become "%2e".
			if c, ok := decodedAt(s, i+3); ok && (isHex(c) || c == 'u' || c == 'U') {
				return "", ProblemDoubleEncoded
			}
		case v >= 0x80:
			var r rune
			if n, r = utf8Escapes(s, i); n == 0 {
				return "", ProblemBadEscape
			}
			if r < 0xa0 {
				return "", ProblemControl // C1 control
			}
		case unreserved(v):
			changed = true
		}
		for end := i + 3*n; i < end; i += 3 {
			if isLowerHex(s[i+1]) || isLowerHex(s[i+2]) {
				changed = true
			}
		}
	}
	if !changed {
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
		if v, _ := escapeAt(s, i); unreserved(v) {
			b.WriteByte(v)
		} else {
			// Keep reserved/non-ASCII escapes, upper-cased (RFC 3986 §6.2.2.1).
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
