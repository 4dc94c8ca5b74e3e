package pathcanon

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParse(t *testing.T) {
	cases := []struct {
		raw, canon, query, problem string
		segs                       []string
	}{
		{raw: "/", canon: "/"},
		{raw: "/v1/orders", canon: "/v1/orders", segs: []string{"v1", "orders"}},
		{raw: "/v1/orders/", canon: "/v1/orders/", segs: []string{"v1", "orders"}},
		{raw: "/v1/orders?limit=5&x=%2F", canon: "/v1/orders", query: "limit=5&x=%2F", segs: []string{"v1", "orders"}},
		{raw: "/%61dmin", canon: "/admin", segs: []string{"admin"}},
		{raw: "/a%2db/%7Euser", canon: "/a-b/~user", segs: []string{"a-b", "~user"}},
		{raw: "/name/caf%c3%a9", canon: "/name/caf%C3%A9", segs: []string{"name", "caf%C3%A9"}},
		{raw: "/ADMIN", canon: "/ADMIN", segs: []string{"ADMIN"}},
		{raw: "/admin?", canon: "/admin", segs: []string{"admin"}},
		// Attack table B6.1: every ambiguous form is refused.
		{raw: "//admin", problem: ProblemEmptySegment},
		{raw: "/a//b", problem: ProblemEmptySegment},
		{raw: "/./admin", problem: ProblemDotSegment},
		{raw: "/public/../admin", problem: ProblemDotSegment},
		{raw: "/public/%2e%2e/admin", problem: ProblemDotSegment},
		{raw: "/public/.%2E/admin", problem: ProblemDotSegment},
		{raw: "/admin%2Fx", problem: ProblemEncodedSlash},
		{raw: "/admin%2fx", problem: ProblemEncodedSlash},
		{raw: "/orders/..%2Fadmin", problem: ProblemEncodedSlash},
		{raw: "/admin%5Cx", problem: ProblemBackslash},
		{raw: "/admin\\x", problem: ProblemBackslash},
		{raw: "/admin;x", problem: ProblemPathParameter},
		{raw: "/v1/..;/admin", problem: ProblemPathParameter},
		{raw: "/admin%3Bx", problem: ProblemPathParameter},
		{raw: "/admin#f", problem: ProblemFragment},
		{raw: "/admin?x=#f", problem: ProblemFragment},
		{raw: "/admin%00", problem: ProblemNUL},
		{raw: "/admin\x00", problem: ProblemNUL},
		{raw: "/admin%0d%0a", problem: ProblemControl},
		{raw: "/adm\xffin", problem: ProblemControl},
		{raw: "/a%zz", problem: ProblemBadEscape},
		{raw: "/v1/orders/%252e%252e/admin", problem: ProblemDoubleEncoded},
		{raw: "/a%2500", problem: ProblemDoubleEncoded},
		{raw: "/a%25zz", canon: "/a%25zz", segs: []string{"a%25zz"}},
		{raw: "/100%25", canon: "/100%25", segs: []string{"100%25"}},
		{raw: "/a%4", problem: ProblemBadEscape},
		{raw: "/a%", problem: ProblemBadEscape},
		{raw: "/a%%41", problem: ProblemBadEscape},
		// Double encoding, however the escapes are split and mixed: once
		// decoded, a '%' must not be followed by a hex digit or 'u'.
		{raw: "/v1/orders/%252%65%252%65/admin", problem: ProblemDoubleEncoded},
		{raw: "/v1/public/%252%65%252%65/admin", problem: ProblemDoubleEncoded},
		{raw: "/v1/public/%252e%252e/admin", problem: ProblemDoubleEncoded},
		{raw: "/v1/orders/%25%32%65%25%32%65/admin", problem: ProblemDoubleEncoded},
		{raw: "/v1/orders/%25%32e/admin", problem: ProblemDoubleEncoded},
		{raw: "/%250%30", problem: ProblemDoubleEncoded},
		{raw: "/%2500", problem: ProblemDoubleEncoded},
		{raw: "/a%252f", problem: ProblemDoubleEncoded},
		{raw: "/a%252%66", problem: ProblemDoubleEncoded},
		{raw: "/a%255c", problem: ProblemDoubleEncoded},
		{raw: "/a%2525", problem: ProblemDoubleEncoded},
		{raw: "/a%252525", problem: ProblemDoubleEncoded},
		{raw: "/a%25%2532%2565", problem: ProblemDoubleEncoded},
		{raw: "/a%25c0%25ae", problem: ProblemDoubleEncoded},
		{raw: "/a%252", problem: ProblemDoubleEncoded}, // a lone hex digit too: one character of look-ahead
		{raw: "/a%25u002e", problem: ProblemDoubleEncoded},
		{raw: "/a%25U002E", problem: ProblemDoubleEncoded},
		{raw: "/a%25%75002e", problem: ProblemDoubleEncoded},
		{raw: "/a%25%zz", problem: ProblemBadEscape},
		{raw: "/a%25%", problem: ProblemBadEscape},
		{raw: "/a%25%25", canon: "/a%25%25", segs: []string{"a%25%25"}},
		{raw: "/a%25g/x", canon: "/a%25g/x", segs: []string{"a%25g", "x"}},
		{raw: "/100%25/off", canon: "/100%25/off", segs: []string{"100%25", "off"}},
		{raw: "/100%25?x=%2525", canon: "/100%25", query: "x=%2525", segs: []string{"100%25"}},
		// Escaped bytes must be UTF-8 (RFC 3629), so that no lenient decoder
		// reads an overlong form as '.', '/' or '\'.
		{raw: "/v1/public/%c0%ae%c0%ae/admin", problem: ProblemBadEscape},
		{raw: "/v1/public/%C0%AE/admin", problem: ProblemBadEscape},
		{raw: "/a%c0%af", problem: ProblemBadEscape},
		{raw: "/a%c1%9c", problem: ProblemBadEscape},
		{raw: "/a%e0%80%ae", problem: ProblemBadEscape},
		{raw: "/a%f0%80%80%ae", problem: ProblemBadEscape},
		{raw: "/a%ed%a0%80", problem: ProblemBadEscape},    // surrogate U+D800
		{raw: "/a%f4%90%80%80", problem: ProblemBadEscape}, // above U+10FFFF
		{raw: "/a%c3", problem: ProblemBadEscape},          // truncated
		{raw: "/a%c3x", problem: ProblemBadEscape},         // truncated
		{raw: "/a%e2%82", problem: ProblemBadEscape},       // truncated
		{raw: "/a%a9", problem: ProblemBadEscape},          // stray continuation
		{raw: "/a%c3%a9%a9", problem: ProblemBadEscape},    // stray continuation
		{raw: "/a%fe", problem: ProblemBadEscape},
		{raw: "/a%ff%ff", problem: ProblemBadEscape},
		{raw: "/a%c2%85", problem: ProblemControl}, // C1 control NEL
		{raw: "/a%c2%9f", problem: ProblemControl},
		{raw: "/a%c2%a0", canon: "/a%C2%A0", segs: []string{"a%C2%A0"}},
		{raw: "/a%ef%bf%bd", canon: "/a%EF%BF%BD", segs: []string{"a%EF%BF%BD"}},
		{raw: "/a%F0%9F%98%80b", canon: "/a%F0%9F%98%80b", segs: []string{"a%F0%9F%98%80b"}},
		{raw: "/%e2%82%ac%c3%a9", canon: "/%E2%82%AC%C3%A9", segs: []string{"%E2%82%AC%C3%A9"}},
		{raw: "/caf\xc3\xa9", problem: ProblemControl}, // raw UTF-8
		{raw: "/a\xc0\xae", problem: ProblemControl},   // raw overlong
		{raw: "/a%20b%3F%2A", canon: "/a%20b%3F%2A", segs: []string{"a%20b%3F%2A"}},
		{raw: "/%7e%2D%5f%2e%41", canon: "/~-_.A", segs: []string{"~-_.A"}},
		// Printable bytes every conforming client percent-encodes.
		{raw: "/v1/orders/a b", problem: ProblemIllegalChar},
		{raw: "/a\"b", problem: ProblemIllegalChar},
		{raw: "/a<b>", problem: ProblemIllegalChar},
		{raw: "/a`b", problem: ProblemIllegalChar},
		{raw: "/a{b}", problem: ProblemIllegalChar},
		{raw: "/a^b", problem: ProblemIllegalChar},
		{raw: "/a?q=x y", problem: ProblemIllegalChar},
		{raw: "/a?q=<x>", problem: ProblemIllegalChar},
		{raw: "/a?q=\"x\"", problem: ProblemIllegalChar},
		{raw: "/a|b/[c]", canon: "/a|b/[c]", segs: []string{"a|b", "[c]"}}, // browsers send these raw
		{raw: "/a?f={\"k\":1}", problem: ProblemIllegalChar},
		{raw: "/a?f={k}|^`[]", canon: "/a", query: "f={k}|^`[]", segs: []string{"a"}},
		{raw: "admin", problem: ProblemNotAbsolute},
		{raw: "*", problem: ProblemNotAbsolute},
		{raw: "", problem: ProblemNotAbsolute},
	}
	for _, c := range cases {
		got := Parse(c.raw)
		if got.Problem != c.problem {
			t.Errorf("Parse(%q).Problem = %q, want %q", c.raw, got.Problem, c.problem)
			continue
		}
		if c.problem != "" {
			continue
		}
		if got.Canonical != c.canon || got.Query != c.query || !slices.Equal(got.Segments, c.segs) {
			t.Errorf("Parse(%q) = %+v, want canon %q query %q segs %q", c.raw, got, c.canon, c.query, c.segs)
		}
	}
}

func TestParseTooLong(t *testing.T) {
	long := "/" + string(make([]byte, MaxLen))
	if got := Parse(long); got.Problem != ProblemTooLong {
		t.Fatalf("problem = %q", got.Problem)
	}
}

// problems are the documented Problem values.
var problems = []string{
	ProblemNone, ProblemNotAbsolute, ProblemFragment, ProblemEncodedSlash, ProblemBackslash,
	ProblemDotSegment, ProblemEmptySegment, ProblemPathParameter, ProblemNUL, ProblemControl,
	ProblemBadEscape, ProblemTooLong, ProblemDoubleEncoded, ProblemIllegalChar,
}

// seeds are the corpus both fuzz targets start from, the reported bypasses
// among them.
var seeds = []string{
	"/", "/a/b", "/a/b/", "//admin", "/%61dmin", "/a%2Fb", "/v1/..;/x", "/a?b#c", "/caf%c3%a9/",
	"/%250%30", "/%2500", "/v1/orders/%252%65%252%65/admin", "/v1/orders/%252e%252e/admin",
	"/v1/public/%252%65%252%65/admin", "/v1/public/%c0%ae%c0%ae/admin", "/a%25%32%65",
	"/100%25", "/a%25zz", "/a%25%25", "/a%25u002e", "/a%e0%80%ae", "/a%ed%a0%80", "/a%c3",
	"/a%F0%9F%98%80", "/a%c2%85", "/x?y=%2525",
}

var tooLong = "/" + strings.Repeat("a", MaxLen)

// decode is one round of lenient percent-decoding, as a permissive server
// does it: "%XX" is decoded, any other '%' is kept; with iis it also decodes
// "%uXXXX".
func decode(s string, iis bool) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '%' {
			if v, ok := escapeAt(s, i); ok {
				b.WriteByte(v)
				i += 2
				continue
			}
			if iis && i+5 < len(s) && (s[i+1] == 'u' || s[i+1] == 'U') {
				if n, err := strconv.ParseUint(s[i+2:i+6], 16, 16); err == nil {
					b.WriteRune(rune(n))
					i += 5
					continue
				}
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// checkInvariants asserts what Parse promises about raw.
func checkInvariants(t *testing.T, raw string) {
	t.Helper()
	p := Parse(raw)
	if !slices.Contains(problems, p.Problem) {
		t.Fatalf("Parse(%q).Problem = %q: not a documented Problem", raw, p.Problem)
	}
	if p.Problem != "" {
		return
	}
	// 1. The canonical form is a fixed point.
	again := Parse(p.Canonical)
	if again.Problem != "" || again.Canonical != p.Canonical || !slices.Equal(again.Segments, p.Segments) {
		t.Fatalf("canonical %q of %q is not a fixed point: %+v, first %+v", p.Canonical, raw, again, p)
	}
	if strings.Contains(raw, "?") { // else the '?' could take it over MaxLen
		if q := Parse(p.Canonical + "?" + p.Query); q.Problem != "" || q.Canonical != p.Canonical || q.Query != p.Query {
			t.Fatalf("canonical %q with query %q of %q: %+v", p.Canonical, p.Query, raw, q)
		}
	}
	for i := 0; i < len(p.Canonical); i++ {
		if c := p.Canonical[i]; c < 0x20 || c >= 0x7f || strings.IndexByte(";\\?# \"<>`{}^", c) >= 0 {
			t.Fatalf("canonical %q of %q has byte %#x", p.Canonical, raw, c)
		}
	}
	path, _, _ := strings.Cut(raw, "?")
	// The canonical form means what the raw path means.
	d1 := decode(path, false)
	if c := decode(p.Canonical, false); c != d1 {
		t.Fatalf("%q decodes to %q, its canonical %q to %q", raw, d1, p.Canonical, c)
	}
	// 3. Escaped bytes are UTF-8 (raw ones are ASCII).
	if !utf8.ValidString(d1) {
		t.Fatalf("%q accepted, decodes to invalid UTF-8 %q", raw, d1)
	}
	// 2. A second round of decoding, strict or lenient, changes nothing, so
	// no server that decodes twice (or more) reads another path.
	if d2 := decode(d1, false); d2 != d1 {
		t.Fatalf("%q accepted, decodes to %q then %q", raw, d1, d2)
	}
	if d2 := decode(d1, true); d2 != d1 {
		t.Fatalf("%q accepted, decodes to %q then (%%u) %q", raw, d1, d2)
	}
	// Once decoded: the same segments, none of them a dot segment, no
	// backslash, NUL or control character.
	want := strings.Split(strings.TrimSuffix(path[1:], "/"), "/")
	got := strings.Split(strings.TrimSuffix(d1[1:], "/"), "/")
	if path == "/" {
		want, got = nil, nil
	}
	if len(got) != len(want) || len(got) != len(p.Segments) {
		t.Fatalf("%q accepted: %d raw segments, %d decoded (%q), %d parsed", raw, len(want), len(got), d1, len(p.Segments))
	}
	for i, g := range got {
		if g == "" || g == "." || g == ".." || strings.ContainsAny(g, "\\;\x00") || decode(p.Segments[i], false) != g {
			t.Fatalf("%q accepted: decoded segment %d is %q, parsed %q", raw, i, g, p.Segments[i])
		}
		for _, r := range g {
			if r < 0x20 || 0x7f <= r && r < 0xa0 {
				t.Fatalf("%q accepted: decoded segment %q has control %U", raw, g, r)
			}
		}
	}
}

func TestInvariantsOnTable(t *testing.T) {
	for _, s := range seeds {
		checkInvariants(t, s)
	}
}

// FuzzParse: on any input Parse does not panic, names a documented Problem,
// and what it accepts is a fixed point that no further decoding changes.
func FuzzParse(f *testing.F) {
	for _, s := range seeds {
		f.Add(s)
	}
	// Over MaxLen: the too_long branch is in the baseline coverage rather
	// than found by a long mutated input that then has to be minimised
	// (minimising is quadratic in the input's length).
	f.Add(tooLong)
	f.Fuzz(func(t *testing.T, raw string) {
		checkInvariants(t, raw)
	})
}

// encodings are the ways FuzzEncodings spells one byte c of a path: literal,
// escaped, and double escaped with the inner escape split and mixed.
var encodings = []func(c byte) string{
	func(c byte) string { return string(c) },
	func(c byte) string { return fmt.Sprintf("%%%02x", c) },
	func(c byte) string { return fmt.Sprintf("%%%02X", c) },
	func(c byte) string { return fmt.Sprintf("%%25%02x", c) },
	func(c byte) string { h := fmt.Sprintf("%02x", c); return fmt.Sprintf("%%25%%%02x%%%02x", h[0], h[1]) },
	func(c byte) string { h := fmt.Sprintf("%02x", c); return fmt.Sprintf("%%25%c%%%02x", h[0], h[1]) },
	func(c byte) string { h := fmt.Sprintf("%02x", c); return fmt.Sprintf("%%25%%%02x%c", h[0], h[1]) },
	func(c byte) string { return fmt.Sprintf("%%2525%02x", c) },
	func(c byte) string { return fmt.Sprintf("%%25u00%02x", c) },
	func(c byte) string { return fmt.Sprintf("%%%%%02x", c) },
}

// FuzzEncodings: a path spelt with every byte encoded its own way (plan
// picks the way for each byte) satisfies the same invariants; in particular a
// "..", "/" or "\" hidden under two layers of escapes is refused.
func FuzzEncodings(f *testing.F) {
	f.Add("/v1/orders/../admin", []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 6, 0})
	f.Add("/v1/public/../admin", []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 4, 0})
	f.Add("/a/../b", []byte{0, 0, 0, 3, 7, 0})
	f.Add("/a/./b", []byte{0, 0, 0, 8})
	f.Add("/a\\b", []byte{0, 0, 3})
	f.Add("/a/b", []byte{0, 1, 0, 2})
	f.Add("/\xc0\xae\xc0\xae/x", []byte{0, 1, 1, 2, 2})
	f.Add("/00", []byte{0, 5, 1})
	f.Add(tooLong, []byte(nil)) // see FuzzParse
	f.Fuzz(func(t *testing.T, path string, plan []byte) {
		var b strings.Builder
		for i := 0; i < len(path); i++ {
			k := 0
			if i < len(plan) {
				k = int(plan[i]) % len(encodings)
			}
			b.WriteString(encodings[k](path[i]))
		}
		checkInvariants(t, b.String())
	})
}

// TestOrdinaryPathsDoNotAllocate: internal/check passes its own segment
// storage, and paths already in canonical form cost no allocation.
func TestOrdinaryPathsDoNotAllocate(t *testing.T) {
	for _, raw := range []string{"/", "/v1/orders/17", "/v1/orders/17/items?limit=5", "/v1/public/docs/", "/name/caf%C3%A9", "/100%25"} {
		var segs [6]string
		if n := testing.AllocsPerRun(100, func() { ParseInto(raw, segs[:0]) }); n != 0 {
			t.Errorf("ParseInto(%q): %.0f allocations", raw, n)
		}
	}
}

// BenchmarkParseInto: the per-request cost with the caller's segment storage,
// as internal/check calls it. Ordinary paths must not allocate.
func BenchmarkParseInto(b *testing.B) {
	for _, raw := range []string{
		"/v1/orders/17",
		"/v1/orders/17/items?limit=5&cursor=abc",
		"/v1/public/docs/",
		"/name/caf%C3%A9",
		"/%61dmin/orders",
	} {
		b.Run(raw, func(b *testing.B) {
			var segs [6]string
			b.ReportAllocs()
			for b.Loop() {
				if p := ParseInto(raw, segs[:0]); p.Problem != "" {
					b.Fatal(p.Problem)
				}
			}
		})
	}
}
