package checkreq

import (
	"errors"
	"net/http"
	"testing"
)

// TestXFF: what Envoy appends to x-forwarded-for, when it sets
// x-envoy-external-address, and that source.address stays the TCP peer.
func TestXFF(t *testing.T) {
	t.Parallel()
	const peer = "203.0.113.7:5555"
	cases := []struct {
		name    string
		ura     bool
		hops    int
		remote  string
		hdr     []string
		wantXFF string // "" = absent
		wantExt string // "" = absent
	}{
		{"edge_loopback_appends_local_address", true, 0, "127.0.0.1:4000", nil, "10.0.0.1", "127.0.0.1"},
		{"edge_loopback_with_client_xff", true, 0, "127.0.0.1:4000", []string{"X-Forwarded-For", "1.2.3.4"}, "1.2.3.4,10.0.0.1", "127.0.0.1"},
		{"edge_ipv6_loopback", true, 0, "[::1]:4000", nil, "10.0.0.1", "::1"},
		{"edge_peer_appended", true, 0, peer, []string{"X-Forwarded-For", "1.2.3.4"}, "1.2.3.4,203.0.113.7", "203.0.113.7"},
		{"one_trusted_hop", true, 1, peer, []string{"X-Forwarded-For", "1.2.3.4, 5.6.7.8"}, "1.2.3.4, 5.6.7.8,203.0.113.7", "5.6.7.8"},
		{"two_trusted_hops", true, 2, peer, []string{"X-Forwarded-For", "1.2.3.4, 5.6.7.8"}, "1.2.3.4, 5.6.7.8,203.0.113.7", "1.2.3.4"},
		{"too_few_entries_fall_back_to_peer", true, 3, peer, []string{"X-Forwarded-For", "1.2.3.4, 5.6.7.8"}, "1.2.3.4, 5.6.7.8,203.0.113.7", "203.0.113.7"},
		{"unparsable_entry_falls_back", true, 1, peer, []string{"X-Forwarded-For", "nope"}, "nope,203.0.113.7", "203.0.113.7"},
		{"repeated_xff_lines_coalesced", true, 0, peer, []string{"X-Forwarded-For", "1.1.1.1", "X-Forwarded-For", "2.2.2.2"}, "1.1.1.1,2.2.2.2,203.0.113.7", "203.0.113.7"},
		{"client_external_address_overwritten", true, 0, peer, []string{"X-Envoy-External-Address", "6.6.6.6"}, "203.0.113.7", "203.0.113.7"},
		{"no_use_remote_address_leaves_xff", false, 0, peer, []string{"X-Forwarded-For", "1.2.3.4", "X-Envoy-External-Address", "6.6.6.6"}, "1.2.3.4", "6.6.6.6"},
		{"no_use_remote_address_hops", false, 1, peer, []string{"X-Forwarded-For", "1.2.3.4,5.6.7.8"}, "1.2.3.4,5.6.7.8", ""},
		{"no_use_remote_address_no_xff", false, 0, peer, nil, "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			hcm := base()
			hcm.UseRemoteAddress = tc.ura
			hcm.XFFNumTrustedHops = tc.hops
			cr := build(t, target(t, http.MethodGet, "/", tc.remote, tc.hdr...), hcm).GetAttributes()
			hdrs := cr.GetRequest().GetHttp().GetHeaders()
			check := func(name, want string) {
				t.Helper()
				got, present := hdrs[name]
				if want == "" && present {
					t.Errorf("%s = %q, want absent", name, got)
				} else if want != "" && got != want {
					t.Errorf("%s = %q, want %q", name, got, want)
				}
			}
			check(hdrXFF, tc.wantXFF)
			check(hdrExternalAddress, tc.wantExt)
			if src, _ := splitHostPort(tc.remote); cr.GetSource().GetAddress().GetSocketAddress().GetAddress() != src {
				t.Errorf("source.address = %v, want TCP peer %s", cr.GetSource().GetAddress(), src)
			}
		})
	}
}

func TestRequestIDAndForwardedProto(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name       string
		mutate     func(*HCM)
		hdr        []string
		wantRID    string // "uuid" = freshly generated, "" = absent
		wantXFP    string
		wantScheme string
	}{
		{"edge_replaces_client_request_id", nil, []string{"X-Request-Id", "abc", "X-Forwarded-Proto", "https"}, "uuid", "http", "http"},
		{"edge_preserve_external", func(c *HCM) { c.PreserveExternalRequestID = true }, []string{"X-Request-Id", "abc"}, "abc", "http", "http"},
		{"edge_generates_missing", nil, nil, "uuid", "http", "http"},
		{"trusted_hop_keeps_xfp", func(c *HCM) { c.XFFNumTrustedHops = 1 }, []string{"X-Forwarded-Proto", "https"}, "uuid", "https", "https"},
		{"internal_keeps_request_id", func(c *HCM) { c.UseRemoteAddress = false }, []string{"X-Request-Id", "abc", "X-Forwarded-Proto", "https"}, "abc", "https", "https"},
		{"internal_generates_missing", func(c *HCM) { c.UseRemoteAddress = false }, []string{"X-Forwarded-Proto", "gopher"}, "uuid", "gopher", "http"},
		{"generation_off", func(c *HCM) { c.GenerateRequestID = false }, nil, "", "http", "http"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			hcm := base()
			if tc.mutate != nil {
				tc.mutate(&hcm)
			}
			hr := build(t, target(t, http.MethodGet, "/", "192.0.2.10:1000", tc.hdr...), hcm).GetAttributes().GetRequest().GetHttp()
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
	r := target(t, http.MethodGet, "/", "192.0.2.10:1000",
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
		"X-Envoy-Auth-Partial-Body", "true",
		"Referer", "/relative",
		"X-Keep", "yes",
	)
	attrs := build(t, r, base()).GetAttributes()
	hdrs := attrs.GetRequest().GetHttp().GetHeaders()
	for _, k := range []string{"connection", "keep-alive", "proxy-connection", "upgrade", "expect",
		"x-envoy-internal", "x-envoy-retry-on", "x-envoy-upstream-rq-timeout-ms",
		"x-envoy-downstream-service-cluster", "x-forwarded-client-cert", "x-envoy-auth-partial-body", "referer"} {
		if v, ok := hdrs[k]; ok {
			t.Errorf("%s = %q survived HCM", k, v)
		}
	}
	if hdrs["te"] != "trailers" || hdrs["x-keep"] != "yes" {
		t.Errorf("te=%q x-keep=%q", hdrs["te"], hdrs["x-keep"])
	}
	if src := attrs.GetSource(); src.GetService() != "" {
		t.Errorf("source.service = %q from a stripped header", src.GetService())
	}

	// Behind a trusted edge (no use_remote_address) the service cluster header
	// is kept and reported as source.service; a valid referer survives.
	r = target(t, http.MethodGet, "/", "192.0.2.10:1000", "X-Envoy-Downstream-Service-Cluster", "front", "Referer", "https://a.example/x")
	attrs = build(t, r, HCM{GenerateRequestID: true}).GetAttributes()
	if attrs.GetSource().GetService() != "front" || attrs.GetRequest().GetHttp().GetHeaders()["referer"] != "https://a.example/x" {
		t.Errorf("service=%q referer=%q", attrs.GetSource().GetService(), attrs.GetRequest().GetHttp().GetHeaders()["referer"])
	}
}

func TestHeadersWithUnderscores(t *testing.T) {
	t.Parallel()
	req := func() *http.Request {
		return target(t, http.MethodGet, "/", "192.0.2.10:1000", "X_User", "u", "X-Ok", "1")
	}

	hdrs := build(t, req(), base()).GetAttributes().GetRequest().GetHttp().GetHeaders()
	if hdrs["x_user"] != "u" {
		t.Errorf("allow: x_user = %q", hdrs["x_user"])
	}

	hcm := base()
	hcm.HeadersWithUnderscoresAction = DropUnderscores
	hdrs = build(t, req(), hcm).GetAttributes().GetRequest().GetHttp().GetHeaders()
	if _, ok := hdrs["x_user"]; ok || hdrs["x-ok"] != "1" {
		t.Errorf("drop: headers = %v", hdrs)
	}

	hcm.HeadersWithUnderscoresAction = RejectUnderscores
	var lre *LocalReplyError
	if _, err := Build(req(), hcm); !errors.As(err, &lre) || lre.Status != http.StatusBadRequest || lre.Details != "http1.unexpected_underscore" {
		t.Errorf("reject: err = %v", err)
	}
}

// TestPathHandling runs raw request targets through HCM path handling.
func TestPathHandling(t *testing.T) {
	t.Parallel()
	hardened := func(c *HCM) {
		c.NormalizePath = true
		c.MergeSlashes = true
		c.PathWithEscapedSlashesAction = RejectRequest
	}
	cases := []struct {
		name       string
		mutate     func(*HCM)
		target     string
		hdr        []string
		wantStatus int    // Envoy's local reply; 0 = checked
		wantPath   string // :path seen by authz when checked
	}{
		{"dot_segments_and_slashes", hardened, "/a/./b/../c//d/%7Euser?x=/../y", nil, 0, "/a/c/d/~user?x=/../y"},
		{"encoded_dots", hardened, "/a/%2e%2E/admin", nil, 0, "/admin"},
		{"unreserved_decoded", hardened, "/%61dmin", nil, 0, "/admin"},
		{"escaped_slash_rejected", hardened, "/admin%2Fusers", nil, 400, ""},
		{"escaped_backslash_rejected", hardened, "/admin%5cusers", nil, 400, ""},
		{"escaped_slash_in_query_ok", hardened, "/a?next=%2Fb", nil, 0, "/a?next=%2Fb"},
		{"backslash_becomes_slash", hardened, `/a\b`, nil, 0, "/a/b"},
		{"nul_rejected", hardened, "/a%00b", nil, 400, ""},
		{"fragment_rejected", hardened, "/a#frag", nil, 400, ""},
		{"keep_unchanged_default", nil, "/a%2Fb//c/../d", nil, 0, "/a%2Fb//c/../d"},
		{"unescape_and_forward", func(c *HCM) {
			c.NormalizePath = true
			c.PathWithEscapedSlashesAction = UnescapeAndForward
		}, "/a%2fb%5Cc", nil, 0, "/a/b/c"},
		{"unescape_and_redirect", func(c *HCM) { c.PathWithEscapedSlashesAction = UnescapeAndRedirect }, "/a%2Fb?q=1", nil, 307, ""},
		{"unescape_and_redirect_grpc_is_400", func(c *HCM) { c.PathWithEscapedSlashesAction = UnescapeAndRedirect },
			"/a%2Fb", []string{"Content-Type", "application/grpc"}, 400, ""},
		{"absolute_form", hardened, "http://example.test/abs/../x?y=1", nil, 0, "/x?y=1"},
		{"asterisk_form_404", nil, "*", nil, 404, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			hcm := base()
			if tc.mutate != nil {
				tc.mutate(&hcm)
			}
			method := http.MethodGet
			if tc.target == "*" {
				method = http.MethodOptions
			}
			cr, err := Build(target(t, method, tc.target, "192.0.2.10:1000", tc.hdr...), hcm)
			if tc.wantStatus != 0 {
				var lre *LocalReplyError
				if !errors.As(err, &lre) || lre.Status != tc.wantStatus {
					t.Errorf("err = %v, want a local reply %d", err, tc.wantStatus)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := cr.GetAttributes().GetRequest().GetHttp().GetPath(); got != tc.wantPath {
				t.Errorf("check path = %q, want %q", got, tc.wantPath)
			}
		})
	}
}
