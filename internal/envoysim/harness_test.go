package envoysim

import (
	"bufio"
	"bytes"
	"context"
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
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// checkFunc is what the fake authorization server answers.
type checkFunc func(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error)

// fakeAuthz is an authv3.AuthorizationServer with a swappable answer that
// records every CheckRequest it receives.
type fakeAuthz struct {
	authv3.UnimplementedAuthorizationServer
	mu     sync.Mutex
	answer checkFunc
	reqs   []*authv3.CheckRequest
}

func (s *fakeAuthz) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	s.mu.Lock()
	s.reqs = append(s.reqs, proto.Clone(req).(*authv3.CheckRequest))
	answer := s.answer
	s.mu.Unlock()
	if answer == nil {
		return &authv3.CheckResponse{}, nil
	}
	return answer(ctx, req)
}

func (s *fakeAuthz) calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.reqs)
}

func (s *fakeAuthz) last(t *testing.T) *authv3.CheckRequest {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.reqs) == 0 {
		t.Fatal("authz server was not called")
	}
	return s.reqs[len(s.reqs)-1]
}

// startAuthz serves s on a loopback port chosen by the kernel.
func startAuthz(t *testing.T, s *fakeAuthz) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	authv3.RegisterAuthorizationServer(srv, s)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// upstreamReq is what the echo upstream saw.
type upstreamReq struct {
	Method, Host, RequestURI, RemoteAddr string
	Header                               http.Header
	Body                                 []byte
}

// echoUpstream records requests and answers 200 "upstream-ok", or whatever
// respond writes.
type echoUpstream struct {
	mu      sync.Mutex
	got     []upstreamReq
	respond func(w http.ResponseWriter, r *http.Request)
}

func (u *echoUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	u.mu.Lock()
	u.got = append(u.got, upstreamReq{r.Method, r.Host, r.RequestURI, r.RemoteAddr, r.Header.Clone(), body})
	respond := u.respond
	u.mu.Unlock()
	if respond != nil {
		respond(w, r)
		return
	}
	w.Header().Set("X-Upstream", "1")
	w.Header().Set("Content-Type", "text/plain")
	_, _ = io.WriteString(w, "upstream-ok")
}

func (u *echoUpstream) setRespond(fn func(w http.ResponseWriter, r *http.Request)) {
	u.mu.Lock()
	u.respond = fn
	u.mu.Unlock()
}

func (u *echoUpstream) calls() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.got)
}

func (u *echoUpstream) last(t *testing.T) upstreamReq {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.got) == 0 {
		t.Fatal("upstream was not called")
	}
	return u.got[len(u.got)-1]
}

// env is one emulated Envoy in front of an echo upstream and a fake authz.
type env struct {
	authz  *fakeAuthz
	up     *echoUpstream
	filter *Filter
	srv    *httptest.Server
	client *http.Client
}

// baseConfig is the shape of our shipped Envoy config: use_remote_address,
// request ids, normalisation and strict escaped-slash handling.
// The check timeout is generous so a loaded -race run cannot turn an allow
// into an Error; tests of the 200ms default reset it to zero.
func baseConfig() Config {
	return Config{
		UseRemoteAddress:  true,
		GenerateRequestID: true,
		Timeout:           3 * time.Second,
	}
}

func newEnv(t *testing.T, answer checkFunc, mutate func(*Config)) *env {
	t.Helper()
	e := &env{authz: &fakeAuthz{answer: answer}, up: &echoUpstream{}}
	addr := startAuthz(t, e.authz)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	waitReady(t, conn)
	cfg := baseConfig()
	cfg.AuthzConn = conn
	cfg.Upstream = e.up
	if mutate != nil {
		mutate(&cfg)
	}
	e.filter, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.srv = httptest.NewUnstartedServer(e.filter)
	// Envoy routes "OPTIONS *" like any request; net/http answers it itself
	// unless told not to.
	e.srv.Config.DisableGeneralOptionsHandler = true
	e.srv.Start()
	t.Cleanup(e.srv.Close)
	e.client = e.srv.Client()
	e.client.Timeout = 5 * time.Second
	return e
}

// waitReady connects conn eagerly so the first Check does not pay for dialling.
func waitReady(t *testing.T, conn *grpc.ClientConn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn.Connect()
	for s := conn.GetState(); s != connectivity.Ready; s = conn.GetState() {
		if !conn.WaitForStateChange(ctx, s) {
			t.Fatalf("authz connection not ready: %v", s)
		}
	}
}

func (e *env) url(path string) string { return e.srv.URL + path }

// do sends req and returns the response with its body read.
func (e *env) do(t *testing.T, req *http.Request) (*http.Response, string) {
	t.Helper()
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

func (e *env) get(t *testing.T, path string, hdr ...string) (*http.Response, string) {
	t.Helper()
	req := newReq(t, http.MethodGet, e.url(path), nil, hdr...)
	return e.do(t, req)
}

func newReq(t *testing.T, method, url string, body io.Reader, hdr ...string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	return req
}

// raw writes a literal HTTP/1.1 request (Host: example.test and
// Connection: close are added) and returns the parsed response, its body and
// the raw header block.
func (e *env) raw(t *testing.T, method, target string, hdr ...string) (*http.Response, string, string) {
	t.Helper()
	var b strings.Builder
	b.WriteString(method + " " + target + " HTTP/1.1\r\nHost: example.test\r\nConnection: close\r\n")
	for i := 0; i+1 < len(hdr); i += 2 {
		b.WriteString(hdr[i] + ": " + hdr[i+1] + "\r\n")
	}
	b.WriteString("\r\n")
	resp, body, head, _ := e.rawExchange(t, method, b.String())
	return resp, body, head
}

// rawExchange sends request bytes verbatim on a fresh loopback connection and
// also returns the client's local address (the TCP peer Envoy sees).
func (e *env) rawExchange(t *testing.T, method, request string) (*http.Response, string, string, string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", e.srv.Listener.Addr().String(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(conn, request); err != nil {
		t.Fatal(err)
	}
	all, err := io.ReadAll(conn)
	if err != nil {
		t.Fatal(err)
	}
	head, _, _ := bytes.Cut(all, []byte("\r\n\r\n"))
	req, _ := http.NewRequest(method, "http://example.test/", nil)
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(all)), req)
	if err != nil {
		t.Fatalf("parse response: %v\n%s", err, all)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body), string(head), conn.LocalAddr().String()
}

// CheckResponse builders.

func hv(k, v string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v}}
}

func hvAppend(k, v string, appendValue bool) *corev3.HeaderValueOption {
	o := hv(k, v)
	o.Append = wrapperspb.Bool(appendValue)
	return o
}

func respond(resp *authv3.CheckResponse) checkFunc {
	return func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
		return resp, nil
	}
}

func fail(err error) checkFunc {
	return func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
		return nil, err
	}
}

func deniedResp(code int32, httpStatus int, body string, hdrs ...*corev3.HeaderValueOption) *authv3.CheckResponse {
	dr := &authv3.DeniedHttpResponse{Headers: hdrs, Body: body}
	if httpStatus > 0 {
		dr.Status = &typev3.HttpStatus{Code: typev3.StatusCode(httpStatus)}
	}
	return &authv3.CheckResponse{
		Status:       &rpcstatus.Status{Code: code},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: dr},
	}
}

func okResp(ok *authv3.OkHttpResponse) *authv3.CheckResponse {
	return &authv3.CheckResponse{
		Status:       &rpcstatus.Status{Code: 0},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: ok},
	}
}

// assertions

func wantStatus(t *testing.T, resp *http.Response, want int) {
	t.Helper()
	if resp.StatusCode != want {
		t.Errorf("status = %d, want %d", resp.StatusCode, want)
	}
}

func wantHeader(t *testing.T, h http.Header, key string, want ...string) {
	t.Helper()
	got := h.Values(key)
	if len(want) == 0 {
		if len(got) != 0 {
			t.Errorf("header %s = %q, want absent", key, got)
		}
		return
	}
	if strings.Join(got, "\x00") != strings.Join(want, "\x00") {
		t.Errorf("header %s = %q, want %q", key, got, want)
	}
}

func wantBody(t *testing.T, got, want string) {
	t.Helper()
	if got != want {
		t.Errorf("body = %q, want %q", got, want)
	}
}

// wantStd checks the headers HCM adds to every response (§8 "Std").
func wantStd(t *testing.T, resp *http.Response) {
	t.Helper()
	wantHeader(t, resp.Header, "Server", "envoy")
	if resp.Header.Get("Date") == "" {
		t.Error("date header missing")
	}
}

func wantStats(t *testing.T, f *Filter, want Stats) {
	t.Helper()
	if got := f.Stats(); got != want {
		t.Errorf("stats = %+v, want %+v", got, want)
	}
}
