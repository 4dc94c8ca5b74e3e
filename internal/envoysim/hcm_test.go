package envoysim

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// serve calls the Filter in-process with a chosen TCP peer.
func (e *env) serve(t *testing.T, remoteAddr, target string, hdr ...string) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(http.MethodGet, target, nil)
	r.RemoteAddr = remoteAddr
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Add(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	e.filter.ServeHTTP(rec, r)
	return rec
}

// TestXFF covers §4.1-§4.3: what Envoy appends to x-forwarded-for, when it
// sets x-envoy-external-address, and that source.address stays the TCP peer.
func TestXFF(t *testing.T) {
	t.Parallel()
	const peer = "203.0.113.7:5555"
	cases := []struct {
		name        string
		ura         bool
		hops        int
		remote      string
		hdr         []string
		wantXFF     string // "" = absent
		wantExt     string // "" = absent
		wantTrusted string
	}{
		{"edge_loopback_appends_local_address", true, 0, "127.0.0.1:4000", nil, "10.0.0.1", "127.0.0.1", "127.0.0.1"},
		{"edge_loopback_with_client_xff", true, 0, "127.0.0.1:4000", []string{"X-Forwarded-For", "1.2.3.4"}, "1.2.3.4,10.0.0.1", "127.0.0.1", "127.0.0.1"},
		{"edge_ipv6_loopback", true, 0, "[::1]:4000", nil, "10.0.0.1", "::1", "::1"},
		{"edge_peer_appended", true, 0, peer, []string{"X-Forwarded-For", "1.2.3.4"}, "1.2.3.4,203.0.113.7", "203.0.113.7", "203.0.113.7"},
		{"one_trusted_hop", true, 1, peer, []string{"X-Forwarded-For", "1.2.3.4, 5.6.7.8"}, "1.2.3.4, 5.6.7.8,203.0.113.7", "5.6.7.8", "5.6.7.8"},
		{"two_trusted_hops", true, 2, peer, []string{"X-Forwarded-For", "1.2.3.4, 5.6.7.8"}, "1.2.3.4, 5.6.7.8,203.0.113.7", "1.2.3.4", "1.2.3.4"},
		{"too_few_entries_fall_back_to_peer", true, 3, peer, []string{"X-Forwarded-For", "1.2.3.4, 5.6.7.8"}, "1.2.3.4, 5.6.7.8,203.0.113.7", "203.0.113.7", "203.0.113.7"},
		{"unparsable_entry_falls_back", true, 1, peer, []string{"X-Forwarded-For", "nope"}, "nope,203.0.113.7", "203.0.113.7", "203.0.113.7"},
		{"repeated_xff_lines_coalesced", true, 0, peer, []string{"X-Forwarded-For", "1.1.1.1", "X-Forwarded-For", "2.2.2.2"}, "1.1.1.1,2.2.2.2,203.0.113.7", "203.0.113.7", "203.0.113.7"},
		{"client_external_address_overwritten", true, 0, peer, []string{"X-Envoy-External-Address", "6.6.6.6"}, "203.0.113.7", "203.0.113.7", "203.0.113.7"},
		{"no_use_remote_address_leaves_xff", false, 0, peer, []string{"X-Forwarded-For", "1.2.3.4", "X-Envoy-External-Address", "6.6.6.6"}, "1.2.3.4", "6.6.6.6", "1.2.3.4"},
		{"no_use_remote_address_hops", false, 1, peer, []string{"X-Forwarded-For", "1.2.3.4,5.6.7.8"}, "1.2.3.4,5.6.7.8", "", "1.2.3.4"},
		{"no_use_remote_address_no_xff", false, 0, peer, nil, "", "", "203.0.113.7"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, nil, func(c *Config) {
				c.UseRemoteAddress = tc.ura
				c.XFFNumTrustedHops = tc.hops
			})
			rec := e.serve(t, tc.remote, "/", tc.hdr...)
			if rec.Code != http.StatusOK {
				t.Fatalf("status %d", rec.Code)
			}
			cr := e.authz.last(t).GetAttributes()
			hdrs := cr.GetRequest().GetHttp().GetHeaders()
			check := func(name, got string, present bool, want string) {
				t.Helper()
				if want == "" && present {
					t.Errorf("%s = %q, want absent", name, got)
				} else if want != "" && got != want {
					t.Errorf("%s = %q, want %q", name, got, want)
				}
			}
			xff, okX := hdrs[hdrXFF]
			check("x-forwarded-for", xff, okX, tc.wantXFF)
			ext, okE := hdrs[hdrExternalAddress]
			check("x-envoy-external-address", ext, okE, tc.wantExt)
			if src, _ := splitHostPort(tc.remote); cr.GetSource().GetAddress().GetSocketAddress().GetAddress() != src {
				t.Errorf("source.address = %v, want TCP peer %s", cr.GetSource().GetAddress(), src)
			}
			if d := e.filter.LastDecision(); d.TrustedClientAddress != tc.wantTrusted {
				t.Errorf("trusted client = %q, want %q", d.TrustedClientAddress, tc.wantTrusted)
			}
			// The upstream sees what the check saw.
			up := e.up.last(t)
			if tc.wantXFF != "" {
				wantHeader(t, up.Header, "X-Forwarded-For", tc.wantXFF)
			}
		})
	}
}

func TestRequestIDAndForwardedProto(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name       string
		mutate     func(*Config)
		hdr        []string
		wantRID    string // "uuid" = freshly generated, "" = absent
		wantXFP    string
		wantScheme string
	}{
		{"edge_replaces_client_request_id", nil, []string{"X-Request-Id", "abc", "X-Forwarded-Proto", "https"}, "uuid", "http", "http"},
		{"edge_preserve_external", func(c *Config) { c.PreserveExternalRequestID = true }, []string{"X-Request-Id", "abc"}, "abc", "http", "http"},
		{"edge_generates_missing", nil, nil, "uuid", "http", "http"},
		{"trusted_hop_keeps_xfp", func(c *Config) { c.XFFNumTrustedHops = 1 }, []string{"X-Forwarded-Proto", "https"}, "uuid", "https", "https"},
		{"internal_keeps_request_id", func(c *Config) { c.UseRemoteAddress = false }, []string{"X-Request-Id", "abc", "X-Forwarded-Proto", "https"}, "abc", "https", "https"},
		{"internal_generates_missing", func(c *Config) { c.UseRemoteAddress = false }, []string{"X-Forwarded-Proto", "gopher"}, "uuid", "gopher", "http"},
		{"generation_off", func(c *Config) { c.GenerateRequestID = false }, nil, "", "http", "http"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, nil, tc.mutate)
			e.serve(t, "192.0.2.10:1000", "/", tc.hdr...)
			hr := e.authz.last(t).GetAttributes().GetRequest().GetHttp()
			rid, ok := hr.GetHeaders()[hdrRequestID]
			switch tc.wantRID {
			case "uuid":
				if !uuid4.MatchString(rid) {
					t.Errorf("x-request-id = %q, want a fresh uuid4", rid)
				}
			case "":
				if ok {
					t.Errorf("x-request-id = %q, want absent", rid)
				}
			default:
				if rid != tc.wantRID {
					t.Errorf("x-request-id = %q, want %q", rid, tc.wantRID)
				}
			}
			if got := hr.GetHeaders()[hdrXFP]; got != tc.wantXFP {
				t.Errorf("x-forwarded-proto = %q, want %q", got, tc.wantXFP)
			}
			if hr.GetScheme() != tc.wantScheme || hr.GetHeaders()[":scheme"] != tc.wantScheme {
				t.Errorf("scheme = %q / %q, want %q", hr.GetScheme(), hr.GetHeaders()[":scheme"], tc.wantScheme)
			}
		})
	}
}

func TestHCMSanitisesRequestHeaders(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, nil)
	e.serve(t, "192.0.2.10:1000", "/",
		"Connection", "keep-alive, X-Hop",
		"Keep-Alive", "timeout=5",
		"Proxy-Connection", "keep-alive",
		"Upgrade", "h2c",
		"TE", "gzip, trailers",
		"Expect", "100-continue",
		"X-Envoy-Internal", "true",
		"X-Envoy-Retry-On", "5xx",
		"X-Envoy-Upstream-Rq-Timeout-Ms", "1",
		"X-Envoy-Downstream-Service-Cluster", "spoofed",
		"X-Forwarded-Client-Cert", "Hash=abc",
		"Referer", "/relative",
		"X-Keep", "yes",
	)
	hdrs := e.authz.last(t).GetAttributes().GetRequest().GetHttp().GetHeaders()
	for _, k := range []string{"connection", "keep-alive", "proxy-connection", "upgrade", "expect",
		"x-envoy-internal", "x-envoy-retry-on", "x-envoy-upstream-rq-timeout-ms",
		"x-envoy-downstream-service-cluster", "x-forwarded-client-cert", "referer"} {
		if v, ok := hdrs[k]; ok {
			t.Errorf("%s = %q survived HCM", k, v)
		}
	}
	if hdrs["te"] != "trailers" || hdrs["x-keep"] != "yes" {
		t.Errorf("te=%q x-keep=%q", hdrs["te"], hdrs["x-keep"])
	}
	if src := e.authz.last(t).GetAttributes().GetSource(); src.GetService() != "" {
		t.Errorf("source.service = %q from a stripped header", src.GetService())
	}
	up := e.up.last(t)
	wantHeader(t, up.Header, "Connection")
	wantHeader(t, up.Header, "X-Envoy-Retry-On")
	wantHeader(t, up.Header, "Te", "trailers")

	// Behind a trusted edge (no use_remote_address) the service cluster header
	// is kept and reported as source.service; a valid referer survives.
	e2 := newEnv(t, nil, func(c *Config) { c.UseRemoteAddress = false })
	e2.serve(t, "192.0.2.10:1000", "/", "X-Envoy-Downstream-Service-Cluster", "front", "Referer", "https://a.example/x")
	attrs := e2.authz.last(t).GetAttributes()
	if attrs.GetSource().GetService() != "front" || attrs.GetRequest().GetHttp().GetHeaders()["referer"] != "https://a.example/x" {
		t.Errorf("service=%q referer=%q", attrs.GetSource().GetService(), attrs.GetRequest().GetHttp().GetHeaders()["referer"])
	}
}

func TestHeadersWithUnderscores(t *testing.T) {
	t.Parallel()
	t.Run("allow", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, nil, nil)
		e.get(t, "/", "X_User", "u")
		if got := e.authz.last(t).GetAttributes().GetRequest().GetHttp().GetHeaders()["x_user"]; got != "u" {
			t.Errorf("x_user = %q", got)
		}
	})
	t.Run("reject", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, nil, func(c *Config) { c.HeadersWithUnderscoresAction = RejectUnderscores })
		resp, body, _ := e.raw(t, http.MethodGet, "/", "X_User", "u")
		wantStatus(t, resp, http.StatusBadRequest)
		wantBody(t, body, "Bad Request")
		if !resp.Close {
			t.Error("connection should be closed after a codec error")
		}
		if e.authz.calls() != 0 || e.up.calls() != 0 {
			t.Error("request went further than the codec")
		}
		if d := e.filter.LastDecision(); d.Verdict != VerdictLocalReply || d.Status != http.StatusBadRequest {
			t.Errorf("decision = %+v", d)
		}
	})
	t.Run("drop", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, nil, func(c *Config) { c.HeadersWithUnderscoresAction = DropUnderscores })
		e.get(t, "/", "X_User", "u", "X-Ok", "1")
		hdrs := e.authz.last(t).GetAttributes().GetRequest().GetHttp().GetHeaders()
		if _, ok := hdrs["x_user"]; ok || hdrs["x-ok"] != "1" {
			t.Errorf("headers = %v", hdrs)
		}
		wantHeader(t, e.up.last(t).Header, "X_user")
	})
}

// TestPathHandling runs raw request targets through HCM path handling with
// the options of our shipped config.
func TestPathHandling(t *testing.T) {
	t.Parallel()
	hardened := func(c *Config) {
		c.NormalizePath = true
		c.MergeSlashes = true
		c.PathWithEscapedSlashesAction = RejectRequest
	}
	cases := []struct {
		name       string
		mutate     func(*Config)
		target     string
		hdr        []string
		wantStatus int
		wantPath   string // :path seen by authz and upstream when forwarded
		wantLoc    string
	}{
		{"dot_segments_and_slashes", hardened, "/a/./b/../c//d/%7Euser?x=/../y", nil, 200, "/a/c/d/~user?x=/../y", ""},
		{"encoded_dots", hardened, "/a/%2e%2E/admin", nil, 200, "/admin", ""},
		{"unreserved_decoded", hardened, "/%61dmin", nil, 200, "/admin", ""},
		{"escaped_slash_rejected", hardened, "/admin%2Fusers", nil, 400, "", ""},
		{"escaped_backslash_rejected", hardened, "/admin%5cusers", nil, 400, "", ""},
		{"escaped_slash_in_query_ok", hardened, "/a?next=%2Fb", nil, 200, "/a?next=%2Fb", ""},
		{"backslash_becomes_slash", hardened, `/a\b`, nil, 200, "/a/b", ""},
		{"nul_rejected", hardened, "/a%00b", nil, 400, "", ""},
		{"fragment_rejected", hardened, "/a#frag", nil, 400, "", ""},
		{"keep_unchanged_default", nil, "/a%2Fb//c/../d", nil, 200, "/a%2Fb//c/../d", ""},
		{"unescape_and_forward", func(c *Config) {
			c.NormalizePath = true
			c.PathWithEscapedSlashesAction = UnescapeAndForward
		}, "/a%2fb%5Cc", nil, 200, "/a/b/c", ""},
		{"unescape_and_redirect", func(c *Config) { c.PathWithEscapedSlashesAction = UnescapeAndRedirect }, "/a%2Fb?q=1", nil, 307, "", "/a/b?q=1"},
		{"unescape_and_redirect_grpc_is_400", func(c *Config) { c.PathWithEscapedSlashesAction = UnescapeAndRedirect },
			"/a%2Fb", []string{"Content-Type", "application/grpc"}, 200 /* gRPC local reply */, "", ""},
		{"absolute_form", hardened, "http://example.test/abs/../x?y=1", nil, 200, "/x?y=1", ""},
		{"asterisk_form_404", nil, "*", nil, 404, "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, nil, tc.mutate)
			method := http.MethodGet
			if tc.target == "*" {
				method = http.MethodOptions
			}
			resp, body, _ := e.raw(t, method, tc.target, tc.hdr...)
			wantStatus(t, resp, tc.wantStatus)
			if tc.wantPath == "" {
				if e.authz.calls() != 0 || e.up.calls() != 0 {
					t.Errorf("request was forwarded (authz %d, upstream %d)", e.authz.calls(), e.up.calls())
				}
				wantBody(t, body, "")
				if tc.wantLoc != "" {
					wantHeader(t, resp.Header, "Location", tc.wantLoc)
				}
				if tc.hdr != nil {
					wantHeader(t, resp.Header, "Grpc-Status", "13") // 400 -> INTERNAL
				}
				return
			}
			if got := e.authz.last(t).GetAttributes().GetRequest().GetHttp().GetPath(); got != tc.wantPath {
				t.Errorf("check path = %q, want %q", got, tc.wantPath)
			}
			if got := e.up.last(t).RequestURI; got != tc.wantPath {
				t.Errorf("upstream path = %q, want %q", got, tc.wantPath)
			}
		})
	}
}
