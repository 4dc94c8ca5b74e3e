package checkreq

import (
	"bufio"
	"crypto/tls"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/extauthz/extauthz/internal/envoyconfig"
)

var uuid4 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// base is the shape of the shipped config that most tests vary:
// use_remote_address and request ids, no path or host normalisation.
func base() HCM { return HCM{UseRemoteAddress: true, GenerateRequestID: true} }

// rawRequest parses a literal HTTP/1.1 request the way a server does
// (RequestURI verbatim) and sets the TCP peer.
func rawRequest(t *testing.T, raw, remoteAddr string) *http.Request {
	t.Helper()
	r, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
	if err != nil {
		t.Fatalf("parse %q: %v", raw, err)
	}
	r.RemoteAddr = remoteAddr
	return r
}

// target is a request for target (Host: example.test) with hdr as
// name, value pairs, from remoteAddr.
func target(t *testing.T, method, target, remoteAddr string, hdr ...string) *http.Request {
	t.Helper()
	var b strings.Builder
	b.WriteString(method + " " + target + " HTTP/1.1\r\nHost: example.test\r\n")
	for i := 0; i+1 < len(hdr); i += 2 {
		b.WriteString(hdr[i] + ": " + hdr[i+1] + "\r\n")
	}
	b.WriteString("\r\n")
	return rawRequest(t, b.String(), remoteAddr)
}

func build(t *testing.T, r *http.Request, hcm HCM) *authv3.CheckRequest {
	t.Helper()
	cr, err := Build(r, hcm)
	if err != nil {
		t.Fatal(err)
	}
	return cr
}

// TestCheckRequestShape pins the whole CheckRequest for curl with a
// repeated header through use_remote_address: true.
func TestCheckRequestShape(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 22, 10, 0, 0, 123456789, time.UTC)
	hcm := base()
	hcm.Now = func() time.Time { return now }
	hcm.DestinationAddress = "127.0.0.1:10000"
	r := rawRequest(t, "GET /p?q=1 HTTP/1.1\r\n"+
		"Host: 127.0.0.1:10000\r\nUser-Agent: curl/8.x\r\nAccept: */*\r\n"+
		"X-Foo: a\r\nX-Foo: b\r\nX-Bin: a\xffb\r\nX-Mixed-Case: V\r\nConnection: close\r\n\r\n", "127.0.0.1:51000")
	got := build(t, r, hcm)

	rid := got.GetAttributes().GetRequest().GetHttp().GetHeaders()[hdrRequestID]
	if !uuid4.MatchString(rid) {
		t.Errorf("x-request-id %q is not a uuid4", rid)
	}
	addr := func(host string, port uint32) *authv3.AttributeContext_Peer {
		return &authv3.AttributeContext_Peer{Address: socketAddress(host, port)}
	}
	want := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      addr("127.0.0.1", 51000),
		Destination: addr("127.0.0.1", 10000),
		Request: &authv3.AttributeContext_Request{
			Time: timestamppb.New(now),
			Http: &authv3.AttributeContext_HttpRequest{
				Id:     "1",
				Method: "GET",
				Headers: map[string]string{
					":authority":               "127.0.0.1:10000",
					":method":                  "GET",
					":path":                    "/p?q=1",
					":scheme":                  "http",
					"accept":                   "*/*",
					"user-agent":               "curl/8.x",
					"x-foo":                    "a,b",
					"x-bin":                    "a!b",
					"x-mixed-case":             "V",
					"x-forwarded-proto":        "http",
					"x-forwarded-for":          "10.0.0.1",
					"x-envoy-external-address": "127.0.0.1",
					"x-request-id":             rid,
				},
				Path:     "/p?q=1",
				Host:     "127.0.0.1:10000",
				Scheme:   "http",
				Protocol: "HTTP/1.1",
			},
		},
		ContextExtensions:    map[string]string{},
		MetadataContext:      &corev3.Metadata{},
		RouteMetadataContext: &corev3.Metadata{},
	}}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("CheckRequest mismatch (-want +got):\n%s", diff)
	}
	// Set-but-empty messages must be present on the wire (protojson shows {}).
	if got.GetAttributes().MetadataContext == nil || got.GetAttributes().RouteMetadataContext == nil {
		t.Error("metadata_context / route_metadata_context must be set")
	}
}

// TestBuild covers a client-side request (http.NewRequest: no RequestURI),
// the default destination, a body that is left alone, and a local reply.
func TestBuild(t *testing.T) {
	t.Parallel()
	r := httptest.NewRequest(http.MethodPost, "http://svc.local/a/b?c=d", strings.NewReader("body"))
	r.RequestURI = ""
	r.RemoteAddr = "198.51.100.9:4444"
	r.Header.Set("Authorization", "Bearer x")
	got := build(t, r, HCM{UseRemoteAddress: true})
	hr := got.GetAttributes().GetRequest().GetHttp()
	if hr.GetId() != "1" || hr.GetPath() != "/a/b?c=d" || hr.GetHost() != "svc.local" || hr.GetBody() != "" ||
		hr.GetHeaders()["authorization"] != "Bearer x" || hr.GetHeaders()[hdrXFF] != "198.51.100.9" ||
		hr.GetHeaders()[hdrExternalAddress] != "198.51.100.9" {
		t.Errorf("unexpected http request: %v", hr)
	}
	if _, ok := hr.GetHeaders()[hdrRequestID]; ok {
		t.Error("x-request-id without GenerateRequestID")
	}
	src := got.GetAttributes().GetSource().GetAddress().GetSocketAddress()
	if src.GetAddress() != "198.51.100.9" || src.GetPortValue() != 4444 {
		t.Errorf("source = %v", src)
	}
	dst := got.GetAttributes().GetDestination().GetAddress().GetSocketAddress()
	if dst.GetAddress() != "127.0.0.1" || dst.GetPortValue() != 10000 {
		t.Errorf("destination = %v", dst)
	}
	b := make([]byte, 8)
	if n, _ := r.Body.Read(b); string(b[:n]) != "body" {
		t.Errorf("body consumed: %q left", b[:n])
	}

	var lre *LocalReplyError
	_, err := Build(httptest.NewRequest(http.MethodGet, "/a%2Fb", nil), HCM{PathWithEscapedSlashesAction: RejectRequest})
	if !errors.As(err, &lre) || lre.Status != http.StatusBadRequest || lre.Details != "path_normalization_failed" {
		t.Errorf("escaped slash: err = %v", err)
	}
	if _, err := Build(r, HCM{XFFNumTrustedHops: -1}); err == nil || errors.As(err, &lre) {
		t.Errorf("negative hops: err = %v", err)
	}
}

// TestHTTP2AndTLS: protocol, :scheme and x-forwarded-proto follow the
// downstream connection.
func TestHTTP2AndTLS(t *testing.T) {
	t.Parallel()
	r := httptest.NewRequest(http.MethodGet, "https://svc.local/h2?x=1", nil)
	r.ProtoMajor, r.ProtoMinor, r.Proto = 2, 0, "HTTP/2.0"
	r.TLS = &tls.ConnectionState{}
	hr := build(t, r, base()).GetAttributes().GetRequest().GetHttp()
	if hr.GetProtocol() != "HTTP/2" || hr.GetScheme() != "https" || hr.GetHeaders()[hdrXFP] != "https" ||
		hr.GetPath() != "/h2?x=1" || hr.GetHost() != "svc.local" {
		t.Errorf("protocol=%q scheme=%q xfp=%q path=%q host=%q", hr.GetProtocol(), hr.GetScheme(),
			hr.GetHeaders()[hdrXFP], hr.GetPath(), hr.GetHost())
	}
}

// TestHostNormalization: strip_trailing_host_dot and strip_any_host_port
// rewrite :authority before the Check call.
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
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Host = tc.host
		hr := build(t, r, HCM{StripTrailingHostDot: tc.dot, StripAnyHostPort: tc.port}).GetAttributes().GetRequest().GetHttp()
		if hr.GetHost() != tc.want || hr.GetHeaders()[":authority"] != tc.want {
			t.Errorf("%s: host %q, :authority %q, want %q", tc.name, hr.GetHost(), hr.GetHeaders()[":authority"], tc.want)
		}
	}
}

// TestShippedHCMIsEnvoyYAML: ShippedHCM is read off envoy/envoy.yaml's HTTP
// connection manager, so editing the shipped config without it (or the
// other way round) fails here.
func TestShippedHCMIsEnvoyYAML(t *testing.T) {
	t.Parallel()
	yml, err := os.ReadFile("../../envoy/envoy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	b, err := envoyconfig.Parse(yml)
	if err != nil {
		t.Fatal(err)
	}
	var hcms []*hcmv3.HttpConnectionManager
	for _, l := range b.GetStaticResources().GetListeners() {
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				h := &hcmv3.HttpConnectionManager{}
				if f.GetTypedConfig().MessageIs(h) {
					if err := f.GetTypedConfig().UnmarshalTo(h); err != nil {
						t.Fatal(err)
					}
					hcms = append(hcms, h)
				}
			}
		}
	}
	if len(hcms) != 1 {
		t.Fatalf("envoy/envoy.yaml has %d HTTP connection managers, want 1", len(hcms))
	}
	if diff := cmp.Diff(fromHCM(t, hcms[0]), ShippedHCM(), cmpopts.IgnoreFields(HCM{}, "Now")); diff != "" {
		t.Errorf("ShippedHCM differs from envoy/envoy.yaml (-yaml +ShippedHCM):\n%s", diff)
	}
}

// fromHCM reads the settings HCM models off an HttpConnectionManager,
// applying Envoy's defaults.
func fromHCM(t *testing.T, h *hcmv3.HttpConnectionManager) HCM {
	t.Helper()
	out := HCM{
		UseRemoteAddress:          h.GetUseRemoteAddress().GetValue(),
		XFFNumTrustedHops:         int(h.GetXffNumTrustedHops()),
		GenerateRequestID:         h.GetGenerateRequestId() == nil || h.GetGenerateRequestId().GetValue(),
		PreserveExternalRequestID: h.GetPreserveExternalRequestId(),
		NormalizePath:             h.GetNormalizePath().GetValue(),
		MergeSlashes:              h.GetMergeSlashes(),
		StripAnyHostPort:          h.GetStripAnyHostPort(),
		StripTrailingHostDot:      h.GetStripTrailingHostDot(),
	}
	switch a := h.GetPathWithEscapedSlashesAction(); a {
	case hcmv3.HttpConnectionManager_IMPLEMENTATION_SPECIFIC_DEFAULT, hcmv3.HttpConnectionManager_KEEP_UNCHANGED:
		out.PathWithEscapedSlashesAction = KeepUnchanged
	case hcmv3.HttpConnectionManager_REJECT_REQUEST:
		out.PathWithEscapedSlashesAction = RejectRequest
	case hcmv3.HttpConnectionManager_UNESCAPE_AND_REDIRECT:
		out.PathWithEscapedSlashesAction = UnescapeAndRedirect
	case hcmv3.HttpConnectionManager_UNESCAPE_AND_FORWARD:
		out.PathWithEscapedSlashesAction = UnescapeAndForward
	default:
		t.Fatalf("path_with_escaped_slashes_action %v", a)
	}
	switch a := h.GetCommonHttpProtocolOptions().GetHeadersWithUnderscoresAction(); a {
	case corev3.HttpProtocolOptions_ALLOW:
		out.HeadersWithUnderscoresAction = AllowUnderscores
	case corev3.HttpProtocolOptions_REJECT_REQUEST:
		out.HeadersWithUnderscoresAction = RejectUnderscores
	case corev3.HttpProtocolOptions_DROP_HEADER:
		out.HeadersWithUnderscoresAction = DropUnderscores
	default:
		t.Fatalf("headers_with_underscores_action %v", a)
	}
	return out
}
