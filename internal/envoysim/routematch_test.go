package envoysim

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestHeaderMatchers covers route.v3.HeaderMatcher semantics, including
// HeaderUtility::matchHeaders' rules for a missing header.
func TestHeaderMatchers(t *testing.T) {
	t.Parallel()
	h := headerMap{{":method", "GET"}, {"x-a", "Alpha"}, {"x-m", "1"}, {"x-m", "2"}}
	cases := []struct {
		name string
		m    HeaderMatcher
		want bool
	}{
		{"method_exact", HeaderMatcher{Name: ":method", Value: "GET"}, true},
		{"method_exact_other", HeaderMatcher{Name: ":method", Value: "POST"}, false},
		{"method_inverted", HeaderMatcher{Name: ":method", Value: "POST", Invert: true}, true},
		{"exact_is_case_sensitive", HeaderMatcher{Name: "x-a", Value: "alpha"}, false},
		{"exact_ignore_case", HeaderMatcher{Name: "x-a", Value: "alpha", IgnoreCase: true}, true},
		{"prefix", HeaderMatcher{Name: "x-a", Kind: HeaderPrefix, Value: "Al"}, true},
		{"suffix", HeaderMatcher{Name: "x-a", Kind: HeaderSuffix, Value: "pha"}, true},
		{"contains", HeaderMatcher{Name: "x-a", Kind: HeaderContains, Value: "lph"}, true},
		{"repeated_values_joined", HeaderMatcher{Name: "x-m", Value: "1,2"}, true},
		{"present", HeaderMatcher{Name: "x-a", Kind: HeaderPresent, Present: true}, true},
		{"present_false_on_present", HeaderMatcher{Name: "x-a", Kind: HeaderPresent}, false},
		{"missing_exact", HeaderMatcher{Name: "x-none", Value: ""}, false},
		{"missing_exact_inverted", HeaderMatcher{Name: "x-none", Value: "v", Invert: true}, true},
		{"missing_present_true", HeaderMatcher{Name: "x-none", Kind: HeaderPresent, Present: true}, false},
		{"missing_present_false", HeaderMatcher{Name: "x-none", Kind: HeaderPresent}, true},
		{"missing_present_inverted", HeaderMatcher{Name: "x-none", Kind: HeaderPresent, Present: true, Invert: true}, false},
		{"missing_as_empty", HeaderMatcher{Name: "x-none", Value: "", TreatMissingAsEmpty: true}, true},
		{"missing_as_empty_inverted", HeaderMatcher{Name: "x-none", Value: "v", TreatMissingAsEmpty: true, Invert: true}, true},
	}
	for _, tc := range cases {
		if got := tc.m.matches(h); got != tc.want {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestRouteMethodMatch: routes differing only in a ":method" matcher are
// selected by method; a request no route matches gets the router's 404.
func TestRouteMethodMatch(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, func(c *Config) {
		c.VirtualHosts = []VirtualHost{{Name: "vh", Domains: []string{"*"}, Routes: []Route{
			{Path: "/orders", Headers: []HeaderMatcher{{Name: ":method", Value: "GET"}}, ContextExtensions: map[string]string{"route": "read"}},
			{Path: "/orders", Headers: []HeaderMatcher{{Name: ":method", Value: "POST"}}, ContextExtensions: map[string]string{"route": "write"}},
			{Prefix: "/other"},
		}}}
	})
	for _, tc := range []struct{ method, want string }{{"GET", "read"}, {"POST", "write"}} {
		resp, _ := e.do(t, newReq(t, tc.method, e.url("/orders?x=1"), nil))
		wantStatus(t, resp, http.StatusOK)
		if got := e.authz.last(t).GetAttributes().GetContextExtensions()["route"]; got != tc.want {
			t.Errorf("%s: route %q, want %q", tc.method, got, tc.want)
		}
	}
	calls := e.authz.calls()
	resp, _ := e.do(t, newReq(t, http.MethodDelete, e.url("/orders"), nil))
	wantStatus(t, resp, http.StatusNotFound)
	if e.authz.calls() != calls {
		t.Error("a request without a route reached the authorization server")
	}
}

// TestHostNormalization: strip_trailing_host_dot and strip_any_host_port
// rewrite :authority before routing, the Check call and the upstream.
func TestHostNormalization(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name       string
		dot, port  bool
		host, want string
	}{
		{"off", false, false, "api.example.com:8000", "api.example.com:8000"},
		{"port", false, true, "api.example.com:8000", "api.example.com"},
		{"port_non_numeric_kept", false, true, "api.example.com:http", "api.example.com:http"},
		{"port_empty_kept", false, true, "api.example.com:", "api.example.com:"},
		{"ipv6_port", false, true, "[::1]:8000", "[::1]"},
		{"ipv6_no_port", false, true, "[::1]", "[::1]"},
		{"dot", true, false, "api.example.com.", "api.example.com"},
		{"dot_before_port", true, false, "api.example.com.:8000", "api.example.com:8000"},
		{"dot_and_port", true, true, "api.example.com.:8000", "api.example.com"},
		{"dot_off", false, true, "api.example.com.:8000", "api.example.com."},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f, err := newFilter(Config{StripTrailingHostDot: tc.dot, StripAnyHostPort: tc.port})
			if err != nil {
				t.Fatal(err)
			}
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.Host = tc.host
			cr, err := f.BuildCheckRequest(r)
			if err != nil {
				t.Fatal(err)
			}
			if got := cr.GetAttributes().GetRequest().GetHttp().GetHost(); got != tc.want {
				t.Errorf("host %q, want %q", got, tc.want)
			}
		})
	}
	// The trailing dot no longer sends the request to the catch-all vhost.
	cfg := Config{StripTrailingHostDot: true, StripAnyHostPort: true, VirtualHosts: []VirtualHost{
		{Name: "api", Domains: []string{"api.example.com"}, ContextExtensions: map[string]string{"vh": "api"}, Routes: []Route{{}}},
		{Name: "all", Domains: []string{"*"}, ContextExtensions: map[string]string{"vh": "all"}, Routes: []Route{{}}},
	}}
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.Host = "api.example.com.:8000"
	cr, err := BuildCheckRequest(r, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := cr.GetAttributes().GetContextExtensions()["vh"]; got != "api" {
		t.Errorf("vhost %q, want api", got)
	}
}
