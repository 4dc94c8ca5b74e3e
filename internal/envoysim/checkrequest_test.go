package envoysim

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"
)

var uuid4 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func peer(t *testing.T, hostport string) *authv3.AttributeContext_Peer {
	t.Helper()
	h, p, err := net.SplitHostPort(hostport)
	if err != nil {
		t.Fatal(err)
	}
	port, _ := strconv.Atoi(p)
	return &authv3.AttributeContext_Peer{Address: socketAddress(h, uint32(port))}
}

// TestCheckRequestShape pins the whole CheckRequest for the §1.3 example
// (curl with a repeated header through use_remote_address: true).
func TestCheckRequestShape(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 22, 10, 0, 0, 123456789, time.UTC)
	e := newEnv(t, nil, func(c *Config) { c.Now = func() time.Time { return now } })
	_, _, _, local := e.rawExchange(t, http.MethodGet, "GET /p?q=1 HTTP/1.1\r\n"+
		"Host: 127.0.0.1:10000\r\nUser-Agent: curl/8.x\r\nAccept: */*\r\n"+
		"X-Foo: a\r\nX-Foo: b\r\nX-Bin: a\xffb\r\nX-Mixed-Case: V\r\nConnection: close\r\n\r\n")

	got := e.authz.last(t)
	rid := got.GetAttributes().GetRequest().GetHttp().GetHeaders()[hdrRequestID]
	if !uuid4.MatchString(rid) {
		t.Errorf("x-request-id %q is not a uuid4", rid)
	}
	want := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      peer(t, local),
		Destination: peer(t, e.srv.Listener.Addr().String()),
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
	// The upstream sees the same request id and hop headers.
	up := e.up.last(t)
	wantHeader(t, up.Header, "X-Request-Id", rid)
	wantHeader(t, up.Header, "X-Foo", "a", "b")
	wantHeader(t, up.Header, "Connection")
	wantHeader(t, up.Header, "X-Envoy-Expected-Rq-Timeout-Ms", "15000")
}

func TestCheckRequestStreamIDsAreDistinct(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, nil)
	const n = 16
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := e.client.Get(e.url("/"))
			if err == nil {
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	seen := map[string]bool{}
	e.authz.mu.Lock()
	defer e.authz.mu.Unlock()
	for _, r := range e.authz.reqs {
		id := r.GetAttributes().GetRequest().GetHttp().GetId()
		if seen[id] {
			t.Errorf("duplicate stream id %s", id)
		}
		seen[id] = true
		if id == r.GetAttributes().GetRequest().GetHttp().GetHeaders()[hdrRequestID] {
			t.Error("http.id must be the stream id, not x-request-id")
		}
	}
	if len(seen) != n {
		t.Errorf("got %d check requests, want %d", len(seen), n)
	}
}

func TestCheckRequestBody(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name        string
		settings    BufferSettings
		body        string
		wantBody    string
		wantRaw     []byte
		wantPartial string
		wantSize    int64
	}{
		{"whole_body", BufferSettings{MaxRequestBytes: 16}, "hello", "hello", nil, "false", 5},
		{"exactly_max", BufferSettings{MaxRequestBytes: 5}, "hello", "hello", nil, "false", 5},
		{"invalid_utf8_sanitised", BufferSettings{MaxRequestBytes: 16}, "a\xffb", "a!b", nil, "false", 3},
		{"pack_as_bytes", BufferSettings{MaxRequestBytes: 16, PackAsBytes: true}, "a\xffb", "", []byte("a\xffb"), "false", 3},
		{"partial_pack_as_bytes", BufferSettings{MaxRequestBytes: 2, AllowPartialMessage: true, PackAsBytes: true}, "abcd", "", []byte("ab"), "true", 4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, nil, func(c *Config) { c.WithRequestBody = &tc.settings })
			resp, _ := e.do(t, newReq(t, http.MethodPost, e.url("/"), strings.NewReader(tc.body)))
			wantStatus(t, resp, http.StatusOK)
			hr := e.authz.last(t).GetAttributes().GetRequest().GetHttp()
			if hr.GetBody() != tc.wantBody || string(hr.GetRawBody()) != string(tc.wantRaw) ||
				hr.GetHeaders()[hdrPartialBody] != tc.wantPartial || hr.GetSize() != tc.wantSize {
				t.Errorf("body=%q raw=%q partial=%q size=%d", hr.GetBody(), hr.GetRawBody(), hr.GetHeaders()[hdrPartialBody], hr.GetSize())
			}
			if got := string(e.up.last(t).Body); got != tc.body {
				t.Errorf("upstream body = %q, want %q", got, tc.body)
			}
		})
	}

	t.Run("no_body_no_buffering", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, nil, func(c *Config) { c.WithRequestBody = &BufferSettings{MaxRequestBytes: 4} })
		e.get(t, "/", "X-Envoy-Auth-Partial-Body", "true")
		hr := e.authz.last(t).GetAttributes().GetRequest().GetHttp()
		if _, ok := hr.GetHeaders()[hdrPartialBody]; ok || hr.GetSize() != 0 || hr.GetBody() != "" {
			t.Errorf("GET without body: headers=%v size=%d", hr.GetHeaders(), hr.GetSize())
		}
		// Dropped from the check only; the upstream still gets it.
		wantHeader(t, e.up.last(t).Header, "X-Envoy-Auth-Partial-Body", "true")
	})
	t.Run("without_with_request_body_size_is_zero", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, nil, nil)
		e.do(t, newReq(t, http.MethodPost, e.url("/"), strings.NewReader("0123456789")))
		hr := e.authz.last(t).GetAttributes().GetRequest().GetHttp()
		if hr.GetSize() != 0 || hr.GetBody() != "" || hr.GetHeaders()["content-length"] != "10" {
			t.Errorf("size=%d body=%q headers=%v", hr.GetSize(), hr.GetBody(), hr.GetHeaders())
		}
		if got := string(e.up.last(t).Body); got != "0123456789" {
			t.Errorf("upstream body = %q", got)
		}
	})
	t.Run("route_override", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, nil, func(c *Config) {
			c.VirtualHosts = []VirtualHost{{Domains: []string{"*"}, Routes: []Route{
				{Prefix: "/big", WithRequestBody: &BufferSettings{MaxRequestBytes: 2}},
				{Prefix: "/"},
			}}}
		})
		resp, _ := e.do(t, newReq(t, http.MethodPost, e.url("/big"), strings.NewReader("abc")))
		wantStatus(t, resp, http.StatusRequestEntityTooLarge)
		resp, _ = e.do(t, newReq(t, http.MethodPost, e.url("/small"), strings.NewReader("abc")))
		wantStatus(t, resp, http.StatusOK)
		if hr := e.authz.last(t).GetAttributes().GetRequest().GetHttp(); hr.GetBody() != "" {
			t.Errorf("route without settings buffered %q", hr.GetBody())
		}
	})
	t.Run("413_for_grpc_client", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, nil, func(c *Config) { c.WithRequestBody = &BufferSettings{MaxRequestBytes: 2} })
		resp, body := e.do(t, newReq(t, http.MethodPost, e.url("/s/M"), strings.NewReader("abcdef"),
			"Content-Type", "application/grpc"))
		wantStatus(t, resp, http.StatusOK)
		wantHeader(t, resp.Header, "Grpc-Status", "2") // 413 -> UNKNOWN
		wantHeader(t, resp.Header, "Grpc-Message", "Payload Too Large")
		wantBody(t, body, "")
	})
}

func TestContextExtensionsAndRouting(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, func(c *Config) {
		c.VirtualHosts = []VirtualHost{
			{
				Name:              "api",
				Domains:           []string{"api.example.com"},
				ContextExtensions: map[string]string{"vh": "api", "shared": "vhost"},
				Routes: []Route{
					{Path: "/exact", ContextExtensions: map[string]string{"route": "exact", "shared": "route"}},
					{Prefix: "/pub", Disabled: true},
					{Prefix: "/api"},
				},
			},
			{
				Name:              "wild",
				Domains:           []string{"*.example.com"},
				ContextExtensions: map[string]string{"vh": "wild"},
				Routes:            []Route{{Prefix: "/"}},
			},
			{
				Name:    "prefix",
				Domains: []string{"internal.*"},
				Routes:  []Route{{Prefix: "/", ContextExtensions: map[string]string{"vh": "prefix"}}},
			},
		}
	})
	get := func(host, path string) *http.Response {
		t.Helper()
		req := newReq(t, http.MethodGet, e.url(path), nil)
		req.Host = host
		resp, _ := e.do(t, req)
		return resp
	}
	ce := func() map[string]string { return e.authz.last(t).GetAttributes().GetContextExtensions() }

	cases := []struct {
		host, path string
		want       map[string]string
	}{
		{"api.example.com", "/exact?x=1", map[string]string{"vh": "api", "shared": "route", "route": "exact"}},
		{"API.example.com:8443", "/api/v1", map[string]string{"vh": "api", "shared": "vhost"}},
		{"x.example.com", "/anything", map[string]string{"vh": "wild"}},
		{"internal.corp", "/", map[string]string{"vh": "prefix"}},
	}
	for _, tc := range cases {
		resp := get(tc.host, tc.path)
		wantStatus(t, resp, http.StatusOK)
		if diff := cmp.Diff(tc.want, ce()); diff != "" {
			t.Errorf("%s%s context_extensions (-want +got):\n%s", tc.host, tc.path, diff)
		}
	}

	// /exact/sub does not match the exact route, nor any prefix: 404 from the
	// router, no check.
	before := e.authz.calls()
	resp := get("api.example.com", "/exact/sub")
	wantStatus(t, resp, http.StatusNotFound)
	resp = get("unknown.org", "/")
	wantStatus(t, resp, http.StatusNotFound)
	resp = get("api.example.com", "/pub/x")
	wantStatus(t, resp, http.StatusOK)
	if e.authz.calls() != before {
		t.Error("authz called for unrouted or disabled requests")
	}
	if d := e.filter.LastDecision(); d.Verdict != VerdictSkipped {
		t.Errorf("verdict = %s", d.Verdict)
	}
}

func TestBuildCheckRequest(t *testing.T) {
	t.Parallel()
	cfg := Config{UseRemoteAddress: true, WithRequestBody: &BufferSettings{MaxRequestBytes: 8}}
	r := httptest.NewRequest(http.MethodPost, "http://svc.local/a/b?c=d", strings.NewReader("body"))
	r.RemoteAddr = "198.51.100.9:4444"
	r.Header.Set("Authorization", "Bearer x")
	got, err := BuildCheckRequest(r, cfg)
	if err != nil {
		t.Fatal(err)
	}
	hr := got.GetAttributes().GetRequest().GetHttp()
	if hr.GetId() != "1" || hr.GetPath() != "/a/b?c=d" || hr.GetHost() != "svc.local" || hr.GetBody() != "body" ||
		hr.GetHeaders()["authorization"] != "Bearer x" || hr.GetHeaders()[hdrXFF] != "198.51.100.9" ||
		hr.GetHeaders()[hdrExternalAddress] != "198.51.100.9" {
		t.Errorf("unexpected http request: %v", hr)
	}
	src := got.GetAttributes().GetSource().GetAddress().GetSocketAddress()
	if src.GetAddress() != "198.51.100.9" || src.GetPortValue() != 4444 {
		t.Errorf("source = %v", src)
	}
	dst := got.GetAttributes().GetDestination().GetAddress().GetSocketAddress()
	if dst.GetAddress() != "127.0.0.1" || dst.GetPortValue() != 10000 {
		t.Errorf("destination = %v", dst)
	}
	// The buffered body is replayed for the caller.
	b := make([]byte, 8)
	n, _ := r.Body.Read(b)
	if string(b[:n]) != "body" {
		t.Errorf("body not replayed: %q", b[:n])
	}

	big := httptest.NewRequest(http.MethodPost, "/", strings.NewReader("0123456789"))
	var lre *LocalReplyError
	if _, err := BuildCheckRequest(big, cfg); !errors.As(err, &lre) || lre.Status != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized body: err = %v", err)
	}
	cfg.VirtualHosts = []VirtualHost{{Domains: []string{"*"}, Routes: []Route{{Prefix: "/", Disabled: true}}}}
	if _, err := BuildCheckRequest(httptest.NewRequest(http.MethodGet, "/", nil), cfg); !errors.Is(err, ErrCheckSkipped) {
		t.Errorf("disabled route: err = %v", err)
	}
	cfg = Config{PathWithEscapedSlashesAction: RejectRequest}
	if _, err := BuildCheckRequest(httptest.NewRequest(http.MethodGet, "/a%2Fb", nil), cfg); !errors.As(err, &lre) || lre.Status != http.StatusBadRequest {
		t.Errorf("escaped slash: err = %v", err)
	}
}

func TestHTTP2Downstream(t *testing.T) {
	t.Parallel()
	authz := &fakeAuthz{answer: respond(deniedResp(7, 401, ""))}
	addr := startAuthz(t, authz)
	f, err := New(Config{Target: addr, Upstream: &echoUpstream{}, UseRemoteAddress: true, Timeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	srv := httptest.NewUnstartedServer(f)
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	client := srv.Client()
	client.Timeout = 5 * time.Second
	resp, err := client.Get(srv.URL + "/h2?x=1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("proto %s status %d", resp.Proto, resp.StatusCode)
	}
	hr := authz.last(t).GetAttributes().GetRequest().GetHttp()
	if hr.GetProtocol() != "HTTP/2" || hr.GetScheme() != "https" || hr.GetHeaders()[hdrXFP] != "https" ||
		hr.GetPath() != "/h2?x=1" || hr.GetHost() != strings.TrimPrefix(srv.URL, "https://") {
		t.Errorf("protocol=%q scheme=%q xfp=%q path=%q host=%q", hr.GetProtocol(), hr.GetScheme(),
			hr.GetHeaders()[hdrXFP], hr.GetPath(), hr.GetHost())
	}
}
