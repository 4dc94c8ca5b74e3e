package route

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

func table(t testing.TB, routes string) *Table {
	t.Helper()
	tb, err := Parse(json.RawMessage(routes), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

func TestMatch(t *testing.T) {
	tb := table(t, `[
	  {"id": "list", "methods": ["GET"], "path": "/v1/orders"},
	  {"id": "create", "methods": ["POST"], "path": "/v1/orders"},
	  {"id": "one", "methods": ["GET"], "path": "/v1/orders/{id}"},
	  {"id": "mine", "methods": ["GET"], "path": "/v1/orders/mine"},
	  {"id": "v1", "path": "/v1", "prefix": true},
	  {"id": "items", "path": "/v1/orders/{id}/items", "prefix": true},
	  {"id": "root", "path": "/", "methods": ["GET"]}
	]`)
	cases := []struct {
		method, path, want string
	}{
		{"GET", "/v1/orders", "list"},
		{"POST", "/v1/orders", "create"},
		{"DELETE", "/v1/orders", "v1"},
		{"GET", "/v1/orders/17", "one"},
		{"GET", "/v1/orders/mine", "mine"},
		{"GET", "/v1/orders/17/items", "items"},
		{"GET", "/v1/orders/17/items/3", "items"},
		{"GET", "/v1/other", "v1"},
		{"GET", "/", "root"},
		{"GET", "/v2", ""},
		{"GET", "/V1/orders", ""},
	}
	for _, c := range cases {
		var segs []string
		if p := strings.Trim(c.path, "/"); p != "" {
			segs = strings.Split(p, "/")
		}
		got := ""
		if r := tb.Match(c.method, segs); r != nil {
			got = r.ID
		}
		if got != c.want {
			t.Errorf("%s %s = %q, want %q", c.method, c.path, got, c.want)
		}
	}
}

func TestDefaultRoute(t *testing.T) {
	tb, err := Parse(json.RawMessage(`[]`), json.RawMessage(`{"scopes": ["read"]}`), nil)
	if err != nil {
		t.Fatal(err)
	}
	r := tb.Match("GET", []string{"anything"})
	if r == nil || r.ID != "default" || r.Req.Scopes[0] != "read" || len(r.Req.Auth) != 2 {
		t.Fatalf("default = %+v", r)
	}
}

func TestParseErrorsNameTheField(t *testing.T) {
	cases := []struct{ js, want string }{
		{`[{"path": "/a"}]`, `routes[0].id: required`},
		{`[{"id": "a", "path": "/a"}, {"id": "a", "path": "/b"}]`, `routes[1].id: "a" is already the id of routes[0]`},
		{`[{"id": "a", "path": "a"}]`, `routes[0].path: "a" must start with / (route "a")`},
		{`[{"id": "a", "path": "/a/../b"}]`, `not canonical`},
		{`[{"id": "a", "path": "/a", "auth": ["password"]}]`, `routes[0].auth[0]: "password" is not one of`},
		{`[{"id": "a", "path": "/a", "tenant_headers": [{"header": "X-T", "format": "roman"}]}]`, `routes[0].tenant_headers[0].format`},
		{`[{"id": "a", "path": "/a", "tenant_headers": [{"header": ""}]}]`, `routes[0].tenant_headers[0].header`},
		{`[{"id": "a", "path": "/a", "methods": ["GET"]}, {"id": "b", "path": "/a", "methods": ["get"]}]`, `GET /a is already routed`},
		{`[{"id": "a", "path": "/a"}, {"id": "b", "path": "/b"}, {"id": "c", "path": "/c", "scopse": ["x"]}]`, `routes[2].scopse: unknown field (known: id, methods, path,`},
		{`[{"id": "a", "path": "/a"}, {"id": "b", "path": "/b", "methods": ["GET", "GIT"]}]`, `routes[1].methods[1]: unknown method "GIT"`},
		{`[{"id": "a", "path": "/a", "scopes": ["read", ""]}]`, `routes[0].scopes[1]: empty scope (route "a")`},
		{`{"id": "a"}`, `routes: must be an array`},
	}
	for _, c := range cases {
		_, err := Parse(json.RawMessage(c.js), nil, nil)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.js, err, c.want)
		}
	}
	if _, err := Parse(nil, json.RawMessage(`{"scopes": [""]}`), nil); err == nil || !strings.Contains(err.Error(), `default_route.scopes[0]: empty scope`) {
		t.Errorf("default route scope: %v", err)
	}
	if _, err := Parse(json.RawMessage(`[{"id": "a", "path": "/a", "methods": ["get"]}]`), nil, nil); err != nil {
		t.Errorf("lower-case method: %v", err)
	}
	_, err := Parse(json.RawMessage(`[{"id": "a", "path": "/a", "profile": "nope"}]`), nil, func(string) bool { return false })
	if err == nil || !strings.Contains(err.Error(), `routes[0].profile: unknown profile "nope" (route "a")`) {
		t.Errorf("profile: %v", err)
	}
}

// Matching cost stays flat from 10 to 10,000 routes.
func BenchmarkMatch(b *testing.B) {
	for _, n := range []int{10, 1000, 10000} {
		var defs []map[string]any
		for i := range n {
			defs = append(defs, map[string]any{"id": fmt.Sprint("r", i), "path": fmt.Sprintf("/v1/svc%d/items/{id}", i), "methods": []string{"GET"}})
		}
		raw, _ := json.Marshal(defs)
		tb := table(b, string(raw))
		segs := []string{"v1", fmt.Sprint("svc", n/2), "items", "42"}
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if tb.Match("GET", segs) == nil {
					b.Fatal("no match")
				}
			}
		})
	}
}

// The default route's id is reserved: a route of the same id would share
// its identity in logs, metadata and the policy's input.
func TestDefaultIDIsReserved(t *testing.T) {
	_, err := Parse([]byte(`[{"id": "default", "path": "/x"}]`), []byte(`{"public": true}`), nil)
	if err == nil || !strings.Contains(err.Error(), "reserved") {
		t.Fatalf("got %v", err)
	}
}

// Overridden routes are interned: one route per base and override, and an
// absent override differs from an empty one.
func TestOverridesAreInterned(t *testing.T) {
	tb, err := Parse([]byte(`[{"id": "r", "path": "/x", "scopes": ["a"]}]`), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	base, _ := tb.ByID("r")
	a1, _ := tb.WithOverrides(base, map[string]string{"scopes": ""})
	a2, _ := tb.WithOverrides(base, map[string]string{"scopes": ""})
	b, _ := tb.WithOverrides(base, map[string]string{"auth": ""})
	if a1 != a2 {
		t.Error("the same override gives two routes")
	}
	if a1 == b || len(a1.Req.Scopes) != 0 || len(b.Req.Scopes) != 1 {
		t.Errorf("scopes \"\" and auth \"\" confused: %+v %+v", a1.Req, b.Req)
	}
}

// A trailing slash is another path: an exact route matches it only when
// written with it, a {param} never matches the empty last segment, a prefix
// route covers both, and a path whose slashless form is an exact route
// never falls through to a prefix or the default route.
func TestTrailingSlash(t *testing.T) {
	tb, err := Parse(json.RawMessage(`[
	  {"id": "health", "methods": ["GET"], "path": "/healthz"},
	  {"id": "one", "methods": ["GET"], "path": "/v1/orders/{id}"},
	  {"id": "list-slash", "methods": ["GET"], "path": "/v1/items/"},
	  {"id": "v2", "path": "/v2", "prefix": true},
	  {"id": "settings", "methods": ["GET"], "path": "/v2/reports/settings"}
	]`), json.RawMessage(`{"scopes": ["read"]}`), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ path, want string }{
		{"/healthz", "health"},
		{"/healthz/", ""}, // not the exact route, and not default_route either
		{"/v1/orders/17", "one"},
		{"/v1/orders/17/", ""},
		{"/v1/orders/", "default"},
		{"/v1/items/", "list-slash"},
		{"/v1/items", ""}, // the other way round: only "/v1/items/" is routed
		{"/v2/", "v2"},
		{"/v2/x/", "v2"},
		{"/v2/reports/settings", "settings"},
		{"/v2/reports/settings/", ""}, // never the weaker prefix route /v2
	} {
		var segs []string
		if p := strings.Trim(c.path, "/"); p != "" {
			segs = strings.Split(p, "/")
		}
		got := ""
		if r := tb.MatchPath("GET", c.path, segs); r != nil {
			got = r.ID
		}
		if got != c.want {
			t.Errorf("GET %s = %q, want %q", c.path, got, c.want)
		}
	}
}

// Route segments a canonical request path can hold load; others cannot
// match any request and are refused.
func TestRoutePathCharacters(t *testing.T) {
	for _, p := range []string{"/v1/a|b", "/v1/[x]", "/v1/a:b@c!$&'()*+,=~_-."} {
		if _, err := Parse(json.RawMessage(`[{"id": "r", "path": "`+p+`"}]`), nil, nil); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	for _, p := range []string{"/v1/café", "/v1/a?b", "/v1/a b", "/v1/a#b", "/v1/a^b"} {
		if _, err := Parse(json.RawMessage(`[{"id": "r", "path": "`+p+`"}]`), nil, nil); err == nil {
			t.Errorf("%s loaded", p)
		}
	}
}

// An escape of a character a route literal may hold reaches that route, as
// the upstream (which decodes it) will serve it, never a weaker prefix.
func TestEscapedLiteralCharactersMatchTheirRoute(t *testing.T) {
	tb := table(t, `[
	  {"id": "strong", "methods": ["POST"], "path": "/v1/users:batchDelete"},
	  {"id": "pipe", "methods": ["POST"], "path": "/v1/a|b"},
	  {"id": "weak", "path": "/v1", "prefix": true}
	]`)
	for path, want := range map[string]string{
		"/v1/users:batchDelete": "strong", "/v1/users%3AbatchDelete": "strong", "/v1/users%3abatchDelete": "strong",
		"/v1/a|b": "pipe", "/v1/a%7Cb": "pipe", "/v1/a%7cb": "pipe",
		"/v1/a%2Fb": "weak", "/v1/a%25b": "weak",
	} {
		segs := strings.Split(strings.Trim(path, "/"), "/")
		got := ""
		if r := tb.MatchPath("POST", path, segs); r != nil {
			got = r.ID
		}
		if got != want {
			t.Errorf("POST %s = %q, want %q", path, got, want)
		}
	}
}
