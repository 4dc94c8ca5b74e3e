package pathcanon

import (
	"slices"
	"testing"
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

// FuzzParse: never panics, and a canonical path is a fixed point.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"/", "/a/b", "//admin", "/%61dmin", "/a%2Fb", "/v1/..;/x", "/a?b#c", "/caf%c3%a9/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		p := Parse(raw)
		if p.Problem != "" {
			return
		}
		again := Parse(p.Canonical)
		if again.Problem != "" || again.Canonical != p.Canonical {
			t.Fatalf("canonical %q of %q is not a fixed point: %+v", p.Canonical, raw, again)
		}
	})
}
