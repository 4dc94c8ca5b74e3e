package checkreq

import "testing"

func TestCanonicalizePath(t *testing.T) {
	t.Parallel()
	cases := []struct {
		in, want string
		ok       bool
	}{
		{"", "/", true},
		{"/", "/", true},
		{"/a/b/../c", "/a/c", true},
		{"/a/./b", "/a/b", true},
		{"/..", "/", true},
		{"/../../a", "/a", true},
		{"/a/..", "/", true},
		{"/a/.", "/a/", true},
		{"/a/b/..", "/a/", true},
		{"/a/..b", "/a/..b", true},
		{"/a/.b", "/a/.b", true},
		{"/a/b.", "/a/b.", true},
		{"/%2e%2e/a", "/a", true},
		{"/a/%2E", "/a/", true},
		{"/a/.%2e/b", "/b", true},
		{"/%41%7e%5F%2d", "/A~_-", true},
		{"/%2F", "/%2F", true},
		{"/%2f", "/%2f", true},
		{"/%3a%3A", "/%3a%3A", true},
		{"/a b", "/a%20b", true},
		{"/\"<>`{|}^", "/%22%3C%3E%60%7B%7C%7D%5E", true},
		{"/é", "/%C3%A9", true},
		{"/a%zz", "/a%zz", true},
		{"/a%4", "/a%4", true},
		{"/%%30%30", "/%2500", true},
		{"/%00", "/%00", false},
		{"/a\x00", "/a%00", false},
		{`/a\b`, "/a/b", true},
		{`\a`, "/a", true},
		{"a/b", "/a/b", true},
		{"/a//b", "/a//b", true},
		{"/a;b=c/:@!$&'()*+,=", "/a;b=c/:@!$&'()*+,=", true},
	}
	for _, tc := range cases {
		got, ok := canonicalizePath(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("canonicalizePath(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestMergeAndUnescapeSlashes(t *testing.T) {
	t.Parallel()
	merge := map[string]string{
		"//a///b/":      "/a/b/",
		"/a//b?x=//y":   "/a/b?x=//y",
		"/a/b":          "/a/b",
		"//":            "//", // Envoy quirk: prefix "/" + no segments + suffix "/"
		"/a//":          "/a/",
		"/a//b//?q=1//": "/a/b/?q=1//",
	}
	for in, want := range merge {
		if got := mergeSlashes(in); got != want {
			t.Errorf("mergeSlashes(%q) = %q, want %q", in, got, want)
		}
	}
	un := []struct {
		in, want string
		found    bool
	}{
		{"/a%2Fb%2f%5C%5c?q=%2F", `/a/b/\\?q=%2F`, true},
		{"/a%20b", "/a%20b", false},
		{"/a?b=%2F", "/a?b=%2F", false},
	}
	for _, tc := range un {
		got, found := unescapeSlashes(tc.in)
		if got != tc.want || found != tc.found {
			t.Errorf("unescapeSlashes(%q) = %q, %v; want %q, %v", tc.in, got, found, tc.want, tc.found)
		}
	}
}

func TestMaybeNormalizePathOrder(t *testing.T) {
	t.Parallel()
	// Escaped slashes are handled before normalisation, and merging runs last:
	// "/a%2F%2E%2E/b" unescapes to "/a/%2E%2E/b", which normalises to "/b".
	cfg := &HCM{NormalizePath: true, MergeSlashes: true, PathWithEscapedSlashesAction: UnescapeAndForward}
	if got, act := maybeNormalizePath("/a%2F%2E%2E/b", cfg); got != "/b" || act != normContinue {
		t.Errorf("got %q, %v", got, act)
	}
	if got, act := maybeNormalizePath("/x%2F/y", &HCM{PathWithEscapedSlashesAction: UnescapeAndRedirect, MergeSlashes: true}); got != "/x/y" || act != normRedirect {
		t.Errorf("redirect: got %q, %v", got, act)
	}
}
