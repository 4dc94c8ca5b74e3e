package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/extauthz/extauthz/internal/envoybin"
	"github.com/extauthz/extauthz/internal/envoytest"
)

// The reference vectors T1-T25 (docs/envoy.md): how Envoy's ext_authz
// filter turns a CheckResponse (or an error) into what the client and the
// upstream see. A fake authorization server answers each vector's canned
// response, selected by the request's x-vector header; one Envoy serves
// every vector, one listener per filter setting.

const (
	hdrFailureAllowed = "x-envoy-auth-failure-mode-allowed"
	hdrPartialBody    = "x-envoy-auth-partial-body"
)

// vectorListeners are the ext_authz settings the vectors need, by listener
// name. Every listener has use_remote_address, GET /healthz* with ext_authz
// disabled and everything else routed to the upstream. "deftimeout" keeps
// Envoy's 200ms default Check deadline; the others allow 5s so a loaded
// -race run cannot turn an answer into a timeout.
var vectorListeners = map[string]map[string]any{
	"base":       {},
	"deftimeout": {"timeout": nil},
	"fma":        {"failure_mode_allow": true},
	"fmahdr":     {"failure_mode_allow": true, "failure_mode_allow_header_add": true},
	"fmahdrfast": {"failure_mode_allow": true, "failure_mode_allow_header_add": true, "timeout": "0.05s"},
	"soe":        {"status_on_error": map[string]any{"code": "ServiceUnavailable"}},
	"trunc":      {"max_denied_response_body_bytes": 4},
	"vm":         {"validate_mutations": true},
	"body4":      {"with_request_body": map[string]any{"max_request_bytes": 4}},
	"partial":    {"with_request_body": map[string]any{"max_request_bytes": 4, "allow_partial_message": true}},
}

func vectorListener(name string, settings map[string]any) map[string]any {
	authz := map[string]any{
		"@type":                 "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
		"transport_api_version": "V3",
		"grpc_service":          map[string]any{"envoy_grpc": map[string]any{"cluster_name": "authz"}, "timeout": "5s"},
	}
	for k, v := range settings {
		if k == "timeout" {
			gs := authz["grpc_service"].(map[string]any)
			if v == nil {
				delete(gs, "timeout")
			} else {
				gs["timeout"] = v
			}
			continue
		}
		authz[k] = v
	}
	disabled := map[string]any{"envoy.filters.http.ext_authz": map[string]any{
		"@type":    "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
		"disabled": true,
	}}
	hcm := map[string]any{
		"@type":              "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
		"stat_prefix":        name,
		"use_remote_address": true,
		"route_config": map[string]any{"virtual_hosts": []any{map[string]any{
			"name": "vh", "domains": []any{"*"},
			"routes": []any{
				map[string]any{"match": map[string]any{"prefix": "/healthz"}, "route": map[string]any{"cluster": "upstream"}, "typed_per_filter_config": disabled},
				map[string]any{"match": map[string]any{"prefix": "/"}, "route": map[string]any{"cluster": "upstream"}},
			},
		}}},
		"http_filters": []any{
			map[string]any{"name": "envoy.filters.http.ext_authz", "typed_config": authz},
			map[string]any{"name": "envoy.filters.http.router", "typed_config": map[string]any{"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
		},
	}
	return map[string]any{
		"name":    name,
		"address": map[string]any{"socket_address": map[string]any{"address": "127.0.0.1", "port_value": 0}},
		"filter_chains": []any{map[string]any{"filters": []any{map[string]any{
			"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm,
		}}}},
	}
}

func cluster(name, addr string, h2 bool) map[string]any {
	host, port, _ := net.SplitHostPort(addr)
	c := map[string]any{
		"name": name, "type": "STATIC", "connect_timeout": "1s",
		"load_assignment": map[string]any{"cluster_name": name, "endpoints": []any{map[string]any{"lb_endpoints": []any{map[string]any{
			"endpoint": map[string]any{"address": map[string]any{"socket_address": map[string]any{"address": host, "port_value": port}}},
		}}}}},
	}
	if h2 {
		c["typed_extension_protocol_options"] = map[string]any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": map[string]any{
			"@type":                "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
			"explicit_http_config": map[string]any{"http2_protocol_options": map[string]any{}},
		}}
	}
	return c
}

type checkFunc func(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error)

// vectorAuthz answers with answers[x-vector] and records the requests.
type vectorAuthz struct {
	authv3.UnimplementedAuthorizationServer
	mu      sync.Mutex
	answers map[string]checkFunc
	reqs    map[string][]*authv3.CheckRequest
}

func (s *vectorAuthz) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	v := req.GetAttributes().GetRequest().GetHttp().GetHeaders()["x-vector"]
	s.mu.Lock()
	s.reqs[v] = append(s.reqs[v], proto.Clone(req).(*authv3.CheckRequest))
	answer := s.answers[v]
	s.mu.Unlock()
	if answer == nil {
		return nil, status.Errorf(codes.NotFound, "no answer for vector %q", v)
	}
	return answer(ctx, req)
}

func (s *vectorAuthz) calls(v string) []*authv3.CheckRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reqs[v]
}

type upstreamReq struct {
	Method, Host, RequestURI string
	Header                   http.Header
	Body                     []byte
}

// vectorUpstream records requests per x-vector and answers 200
// "upstream-ok", or what respond[x-vector] writes.
type vectorUpstream struct {
	mu      sync.Mutex
	got     map[string][]upstreamReq
	respond map[string]http.HandlerFunc
}

func (u *vectorUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	v := r.Header.Get("X-Vector")
	u.mu.Lock()
	u.got[v] = append(u.got[v], upstreamReq{r.Method, r.Host, r.RequestURI, r.Header.Clone(), body})
	respond := u.respond[v]
	u.mu.Unlock()
	if respond != nil {
		respond(w, r)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	_, _ = io.WriteString(w, "upstream-ok")
}

func (u *vectorUpstream) calls(v string) []upstreamReq {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.got[v]
}

type vectorEnv struct {
	envoy  *envoytest.Envoy
	authz  *vectorAuthz
	up     *vectorUpstream
	client *http.Client
}

func (e *vectorEnv) url(listener, path string) string {
	return "http://" + e.envoy.Addr(listener) + path
}

// get sends GET path on listener with x-vector: v plus extra header pairs.
func (e *vectorEnv) send(t *testing.T, listener, v, method, path string, body io.Reader, hdr ...string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, e.url(listener, path), body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Vector", v)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// raw writes a literal HTTP/1.1 GET and returns the response head as sent.
func (e *vectorEnv) rawHead(t *testing.T, listener, v, path string) string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", e.envoy.Addr(listener), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: example.test\r\nX-Vector: %s\r\nConnection: close\r\n\r\n", path, v)
	all, err := io.ReadAll(conn)
	if err != nil {
		t.Fatal(err)
	}
	head, _, _ := strings.Cut(string(all), "\r\n\r\n")
	return head
}

func startVectorEnv(t *testing.T, answers map[string]checkFunc, respond map[string]http.HandlerFunc) *vectorEnv {
	t.Helper()
	bin := envoytest.Require(t)
	e := &vectorEnv{
		authz: &vectorAuthz{answers: answers, reqs: map[string][]*authv3.CheckRequest{}},
		up:    &vectorUpstream{got: map[string][]upstreamReq{}, respond: respond},
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	authv3.RegisterAuthorizationServer(g, e.authz)
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	up := httptest.NewServer(e.up)
	t.Cleanup(up.Close)

	b := envoybin.Bootstrap{"static_resources": map[string]any{
		"clusters": []any{cluster("authz", lis.Addr().String(), true), cluster("upstream", strings.TrimPrefix(up.URL, "http://"), false)},
	}}
	for name, settings := range vectorListeners {
		b.AddListener(vectorListener(name, settings))
	}
	b["admin"] = map[string]any{"address": map[string]any{"socket_address": map[string]any{"address": "127.0.0.1", "port_value": 0}}}
	e.envoy = envoytest.Start(t, bin, b)
	e.client = &http.Client{Timeout: 15 * time.Second}
	t.Cleanup(e.client.CloseIdleConnections)
	return e
}

func hv(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v}}
}

func hvAppend(k, v string, appendValue bool) *corev3.HeaderValueOption {
	o := hv(k, v)
	//lint:ignore SA1019 the vectors exercise the deprecated append field on purpose: it is the portable overwrite across Envoy versions (see internal/check/response.go)
	o.Append = wrapperspb.Bool(appendValue)
	return o
}

func respond(resp *authv3.CheckResponse) checkFunc {
	return func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) { return resp, nil }
}

func fail(err error) checkFunc {
	return func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) { return nil, err }
}

func deniedResp(code int32, httpStatus int, body string, hdrs ...*corev3.HeaderValueOption) *authv3.CheckResponse {
	dr := &authv3.DeniedHttpResponse{Headers: hdrs, Body: body}
	if httpStatus > 0 {
		dr.Status = &typev3.HttpStatus{Code: typev3.StatusCode(httpStatus)}
	}
	return &authv3.CheckResponse{Status: &rpcstatus.Status{Code: code}, HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: dr}}
}

func okResp(ok *authv3.OkHttpResponse) *authv3.CheckResponse {
	return &authv3.CheckResponse{Status: &rpcstatus.Status{}, HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: ok}}
}

func wantStatus(t *testing.T, resp *http.Response, want int) {
	t.Helper()
	if resp.StatusCode != want {
		t.Errorf("status = %d, want %d", resp.StatusCode, want)
	}
}

// wantHeader: no values means the header must be absent.
func wantHeader(t *testing.T, h http.Header, name string, want ...string) {
	t.Helper()
	got := h.Values(name)
	if strings.Join(got, "\x00") != strings.Join(want, "\x00") {
		t.Errorf("%s = %q, want %q", name, got, want)
	}
}

func wantBody(t *testing.T, got, want string) {
	t.Helper()
	if got != want {
		t.Errorf("body = %q, want %q", got, want)
	}
}

// wantStd: Envoy's own response headers.
func wantStd(t *testing.T, resp *http.Response) {
	t.Helper()
	wantHeader(t, resp.Header, "Server", "envoy")
	if resp.Header.Get("Date") == "" {
		t.Error("date header missing")
	}
}

func slowCheck(ctx context.Context, _ *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	select {
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	case <-time.After(3 * time.Second):
		return &authv3.CheckResponse{}, nil
	}
}

func TestVectors(t *testing.T) {
	rpcErr := fail(status.Error(codes.PermissionDenied, "nope"))
	answers := map[string]checkFunc{
		"T01": respond(&authv3.CheckResponse{}),
		"T02": respond(&authv3.CheckResponse{Status: &rpcstatus.Status{Code: 7}}),
		"T03": respond(deniedResp(7, 401, "x")),
		"T04": respond(deniedResp(7, 401, `{"a":1}`, hv("content-type", "application/json"))),
		"T05": respond(deniedResp(7, 401, `{"a":1}`, hv("content-type", "application/json"), hv("content-length", "999"))),
		"T06": respond(deniedResp(7, 0, "", hv("content-type", "application/json"))),
		"T07": respond(deniedResp(7, 0, "", hvAppend("x-a", "1", true), hvAppend("x-b", "2", false))),
		"T08": respond(deniedResp(7, 0, "", hv("set-cookie", "a=1"), hv("Set-Cookie", "b=2"))),
		"T09": respond(deniedResp(7, 0, "", hv("server", "authz"))),
		"T10": respond(&authv3.CheckResponse{Status: &rpcstatus.Status{Code: 14}}),
		"T11": rpcErr,
		"T12": slowCheck,
		"T13": rpcErr,
		"T14": respond(deniedResp(7, 401, "no", hv("x-extra", "1"))),
		"T15": respond(deniedResp(7, 0, "abc")),
		"T16": respond(deniedResp(7, 0, "abcdefgh")),
		"T17": respond(deniedResp(7, 401, "x", hv("bad name", "v"))),
		"T18": respond(okResp(&authv3.OkHttpResponse{Headers: []*corev3.HeaderValueOption{hv("x-user", "u")}})),
		"T19": respond(okResp(&authv3.OkHttpResponse{Headers: []*corev3.HeaderValueOption{hvAppend("x-tag", "b", true)}})),
		"T20": respond(okResp(&authv3.OkHttpResponse{HeadersToRemove: []string{":path", "host", "authorization", "Host"}})),
		"T21": respond(okResp(&authv3.OkHttpResponse{QueryParametersToSet: []*corev3.QueryParameter{{Key: "q", Value: "2"}}})),
		"T22": respond(okResp(&authv3.OkHttpResponse{ResponseHeadersToAdd: []*corev3.HeaderValueOption{hv("k", "v")}})),
		"T24": respond(&authv3.CheckResponse{}),
		"T25": respond(deniedResp(7, 0, "")),
	}
	upstreamAnswers := map[string]http.HandlerFunc{
		"T22": func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("K", "u")
			_, _ = io.WriteString(w, "hi")
		},
	}
	e := startVectorEnv(t, answers, upstreamAnswers)
	stat := func(listener, name string) int {
		return e.envoy.Stat(t, "http."+listener+".ext_authz."+name)
	}
	get := func(t *testing.T, listener, v, path string, hdr ...string) (*http.Response, string) {
		t.Helper()
		return e.send(t, listener, v, http.MethodGet, path, nil, hdr...)
	}
	lastUp := func(t *testing.T, v string) upstreamReq {
		t.Helper()
		got := e.up.calls(v)
		if len(got) == 0 {
			t.Fatal("upstream was not called")
		}
		return got[len(got)-1]
	}
	noUpstream := func(t *testing.T, v string) {
		t.Helper()
		if n := len(e.up.calls(v)); n != 0 {
			t.Errorf("upstream called %d times", n)
		}
	}

	t.Run("T01_empty_response_allows", func(t *testing.T) {
		resp, body := get(t, "base", "T01", "/p?q=1", "X-Foo", "a")
		wantStatus(t, resp, http.StatusOK)
		wantBody(t, body, "upstream-ok")
		wantStd(t, resp)
		up := lastUp(t, "T01")
		if up.RequestURI != "/p?q=1" || up.Method != http.MethodGet {
			t.Errorf("upstream got %s %s", up.Method, up.RequestURI)
		}
		wantHeader(t, up.Header, "X-Foo", "a")
		wantHeader(t, up.Header, hdrFailureAllowed)
	})
	t.Run("T02_status_7_bare_403", func(t *testing.T) {
		denied := stat("base", "denied")
		resp, body := get(t, "base", "T02", "/p")
		wantStatus(t, resp, http.StatusForbidden)
		wantHeader(t, resp.Header, "Content-Length", "0")
		wantHeader(t, resp.Header, "Content-Type")
		wantStd(t, resp)
		wantBody(t, body, "")
		if head := strings.ToLower(e.rawHead(t, "base", "T02", "/p")); !strings.Contains(head, "\r\ncontent-length: 0") {
			t.Errorf("wire head lacks content-length: 0:\n%s", head)
		}
		noUpstream(t, "T02")
		if got := stat("base", "denied") - denied; got != 2 {
			t.Errorf("ext_authz.denied grew by %d, want 2", got)
		}
	})
	t.Run("T03_denied_401_body_text_plain", func(t *testing.T) {
		resp, body := get(t, "base", "T03", "/")
		wantStatus(t, resp, http.StatusUnauthorized)
		wantHeader(t, resp.Header, "Content-Type", "text/plain")
		wantHeader(t, resp.Header, "Content-Length", "1")
		wantBody(t, body, "x")
		wantStd(t, resp)
	})
	t.Run("T04_denied_json_content_type_kept", func(t *testing.T) {
		resp, body := get(t, "base", "T04", "/")
		wantStatus(t, resp, http.StatusUnauthorized)
		wantHeader(t, resp.Header, "Content-Type", "application/json")
		wantHeader(t, resp.Header, "Content-Length", "7")
		wantBody(t, body, `{"a":1}`)
	})
	t.Run("T05_content_length_recomputed", func(t *testing.T) {
		resp, body := get(t, "base", "T05", "/")
		wantHeader(t, resp.Header, "Content-Length", "7")
		wantBody(t, body, `{"a":1}`)
	})
	t.Run("T06_empty_body_drops_content_type", func(t *testing.T) {
		resp, body := get(t, "base", "T06", "/")
		wantStatus(t, resp, http.StatusForbidden)
		wantHeader(t, resp.Header, "Content-Type")
		wantHeader(t, resp.Header, "Content-Length", "0")
		wantBody(t, body, "")
	})
	t.Run("T07_append_true_dropped", func(t *testing.T) {
		resp, _ := get(t, "base", "T07", "/")
		wantHeader(t, resp.Header, "X-A")
		wantHeader(t, resp.Header, "X-B", "2")
	})
	t.Run("T08_repeated_set_cookie_kept_in_order", func(t *testing.T) {
		resp, _ := get(t, "base", "T08", "/")
		wantHeader(t, resp.Header, "Set-Cookie", "a=1", "b=2")
	})
	t.Run("T09_server_overwritten", func(t *testing.T) {
		resp, _ := get(t, "base", "T09", "/")
		wantHeader(t, resp.Header, "Server", "envoy")
	})
	t.Run("T10_unavailable_in_status_is_denial", func(t *testing.T) {
		denied, errs := stat("base", "denied"), stat("base", "error")
		resp, _ := get(t, "base", "T10", "/")
		wantStatus(t, resp, http.StatusForbidden)
		if stat("base", "denied")-denied != 1 || stat("base", "error") != errs {
			t.Error("not counted as a denial")
		}
	})
	t.Run("T11_grpc_error_is_error", func(t *testing.T) {
		t.Run("fail_closed", func(t *testing.T) {
			errs := stat("base", "error")
			resp, body := get(t, "base", "T11", "/", "X-Foo", "a")
			wantStatus(t, resp, http.StatusForbidden)
			wantBody(t, body, "")
			wantHeader(t, resp.Header, "Content-Type")
			wantHeader(t, resp.Header, "Content-Length", "0")
			wantStd(t, resp)
			noUpstream(t, "T11")
			if stat("base", "error")-errs != 1 {
				t.Error("not counted as an error")
			}
		})
		t.Run("failure_mode_allow", func(t *testing.T) {
			allowed := stat("fma", "failure_mode_allowed")
			resp, body := get(t, "fma", "T11", "/p", "X-Foo", "a")
			wantStatus(t, resp, http.StatusOK)
			wantBody(t, body, "upstream-ok")
			up := lastUp(t, "T11")
			wantHeader(t, up.Header, hdrFailureAllowed)
			wantHeader(t, up.Header, "X-Foo", "a")
			if stat("fma", "failure_mode_allowed")-allowed != 1 {
				t.Error("failure_mode_allowed not counted")
			}
		})
		t.Run("failure_mode_allow_header_add", func(t *testing.T) {
			resp, _ := get(t, "fmahdr", "T11", "/p")
			wantStatus(t, resp, http.StatusOK)
			wantHeader(t, lastUp(t, "T11").Header, hdrFailureAllowed, "true")
		})
	})
	t.Run("T12_timeout_is_error", func(t *testing.T) {
		t.Run("fail_closed", func(t *testing.T) {
			errs := stat("deftimeout", "error")
			resp, body := get(t, "deftimeout", "T12", "/")
			wantStatus(t, resp, http.StatusForbidden)
			wantBody(t, body, "")
			noUpstream(t, "T12")
			if stat("deftimeout", "error")-errs != 1 {
				t.Error("not counted as an error")
			}
		})
		t.Run("failure_mode_allow", func(t *testing.T) {
			resp, _ := get(t, "fmahdrfast", "T12", "/")
			wantStatus(t, resp, http.StatusOK)
			wantHeader(t, lastUp(t, "T12").Header, hdrFailureAllowed, "true")
		})
	})
	t.Run("T13_status_on_error_503", func(t *testing.T) {
		resp, body := get(t, "soe", "T13", "/")
		wantStatus(t, resp, http.StatusServiceUnavailable)
		wantBody(t, body, "")
		wantHeader(t, resp.Header, "Content-Type")
	})
	t.Run("T14_grpc_client_trailers_only", func(t *testing.T) {
		resp, body := e.send(t, "base", "T14", http.MethodPost, "/pkg.Svc/Method", strings.NewReader("\x00\x00\x00\x00\x00"),
			"Content-Type", "application/grpc", "TE", "trailers")
		wantStatus(t, resp, http.StatusOK)
		wantHeader(t, resp.Header, "Content-Type", "application/grpc")
		wantHeader(t, resp.Header, "Grpc-Status", "16")
		wantHeader(t, resp.Header, "Grpc-Message", "no")
		wantHeader(t, resp.Header, "X-Extra", "1")
		wantBody(t, body, "")
	})
	t.Run("T15_head_keeps_content_length", func(t *testing.T) {
		resp, body := e.send(t, "base", "T15", http.MethodHead, "/", nil)
		wantStatus(t, resp, http.StatusForbidden)
		wantHeader(t, resp.Header, "Content-Length", "3")
		wantBody(t, body, "")
	})
	t.Run("T16_body_truncated", func(t *testing.T) {
		resp, body := get(t, "trunc", "T16", "/")
		wantBody(t, body, "abcd")
		wantHeader(t, resp.Header, "Content-Length", "4")
	})
	t.Run("T17_validate_mutations_invalid_name", func(t *testing.T) {
		denied, invalid := stat("vm", "denied"), stat("vm", "invalid")
		resp, body := get(t, "vm", "T17", "/")
		wantStatus(t, resp, http.StatusInternalServerError)
		wantBody(t, body, "")
		// ext_authz counts the denial before validating the headers.
		if stat("vm", "denied")-denied != 1 || stat("vm", "invalid")-invalid != 1 {
			t.Errorf("denied +%d, invalid +%d; want +1, +1", stat("vm", "denied")-denied, stat("vm", "invalid")-invalid)
		}
	})
	t.Run("T18_ok_header_overwrites_client_value", func(t *testing.T) {
		resp, _ := get(t, "base", "T18", "/", "X-User", "evil", "X-User", "evil2")
		wantStatus(t, resp, http.StatusOK)
		wantHeader(t, lastUp(t, "T18").Header, "X-User", "u")
		reqs := e.authz.calls("T18")
		if got := reqs[len(reqs)-1].GetAttributes().GetRequest().GetHttp().GetHeaders()["x-user"]; got != "evil,evil2" {
			t.Errorf("check header x-user = %q", got)
		}
	})
	t.Run("T19_ok_append_only_when_present", func(t *testing.T) {
		get(t, "base", "T19", "/", "X-Tag", "a")
		wantHeader(t, lastUp(t, "T19").Header, "X-Tag", "a,b")
		get(t, "base", "T19", "/")
		wantHeader(t, lastUp(t, "T19").Header, "X-Tag")
	})
	t.Run("T20_headers_to_remove_skips_pseudo_and_host", func(t *testing.T) {
		get(t, "base", "T20", "/keep/me?x=1", "Authorization", "Bearer t")
		up := lastUp(t, "T20")
		wantHeader(t, up.Header, "Authorization")
		if up.RequestURI != "/keep/me?x=1" || !strings.HasPrefix(up.Host, "127.0.0.1:") {
			t.Errorf("upstream path/host changed: %q %q", up.RequestURI, up.Host)
		}
	})
	t.Run("T21_query_parameters_to_set", func(t *testing.T) {
		get(t, "base", "T21", "/p?q=1&r=3")
		if got := lastUp(t, "T21").RequestURI; got != "/p?q=2&r=3" {
			t.Errorf("upstream :path = %q, want /p?q=2&r=3", got)
		}
	})
	t.Run("T22_response_headers_to_add_adds_a_line", func(t *testing.T) {
		resp, body := get(t, "base", "T22", "/")
		wantHeader(t, resp.Header, "K", "u", "v")
		wantBody(t, body, "hi")
		wantStd(t, resp)
	})
	t.Run("T23_body_too_large_413_no_check", func(t *testing.T) {
		resp, body := e.send(t, "body4", "T23", http.MethodPost, "/upload", strings.NewReader("0123456789"))
		wantStatus(t, resp, http.StatusRequestEntityTooLarge)
		wantBody(t, body, "Payload Too Large")
		wantHeader(t, resp.Header, "Content-Type", "text/plain")
		if n := len(e.authz.calls("T23")); n != 0 {
			t.Errorf("authz called %d times", n)
		}
		noUpstream(t, "T23")
	})
	t.Run("T24_partial_body", func(t *testing.T) {
		resp, _ := e.send(t, "partial", "T24", http.MethodPost, "/upload", strings.NewReader("0123456789"),
			"X-Envoy-Auth-Partial-Body", "false")
		wantStatus(t, resp, http.StatusOK)
		reqs := e.authz.calls("T24")
		if len(reqs) != 1 {
			t.Fatalf("authz called %d times", len(reqs))
		}
		hr := reqs[0].GetAttributes().GetRequest().GetHttp()
		if hr.GetBody() != "0123" || hr.GetHeaders()[hdrPartialBody] != "true" || hr.GetSize() < 4 {
			t.Errorf("body=%q partial=%q size=%d", hr.GetBody(), hr.GetHeaders()[hdrPartialBody], hr.GetSize())
		}
		if got := string(lastUp(t, "T24").Body); got != "0123456789" {
			t.Errorf("upstream body = %q", got)
		}
	})
	t.Run("T25_route_disabled_skips_check", func(t *testing.T) {
		resp, _ := get(t, "base", "T25", "/healthz")
		wantStatus(t, resp, http.StatusOK)
		if n := len(e.authz.calls("T25")); n != 0 {
			t.Errorf("authz called %d times", n)
		}
		resp, _ = get(t, "base", "T25", "/other")
		wantStatus(t, resp, http.StatusForbidden)
	})
}
