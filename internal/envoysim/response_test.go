package envoysim

import (
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
	"github.com/google/go-cmp/cmp"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/structpb"
)

func TestClassification(t *testing.T) {
	t.Parallel()
	t.Run("ok_status_with_denied_response_allows", func(t *testing.T) {
		t.Parallel()
		resp := deniedResp(0, 401, "ignored", hv("x-a", "1"))
		e := newEnv(t, respond(resp), nil)
		r, body := e.get(t, "/")
		wantStatus(t, r, http.StatusOK)
		wantBody(t, body, "upstream-ok")
		wantHeader(t, r.Header, "X-A")
	})
	t.Run("denied_status_with_ok_response_is_bare_403", func(t *testing.T) {
		t.Parallel()
		resp := okResp(&authv3.OkHttpResponse{Headers: []*corev3.HeaderValueOption{hv("x-user", "u")}})
		resp.Status = &rpcstatus.Status{Code: 16}
		e := newEnv(t, respond(resp), nil)
		r, body := e.get(t, "/")
		wantStatus(t, r, http.StatusForbidden)
		wantBody(t, body, "")
		if e.up.calls() != 0 {
			t.Error("upstream called")
		}
	})
	t.Run("error_response", func(t *testing.T) {
		t.Parallel()
		resp := &authv3.CheckResponse{
			Status: &rpcstatus.Status{Code: 14},
			HttpResponse: &authv3.CheckResponse_ErrorResponse{ErrorResponse: &authv3.DeniedHttpResponse{
				Status:  &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable},
				Headers: []*corev3.HeaderValueOption{hv("retry-after", "1")},
				Body:    `{"error":"unavailable"}`,
			}},
		}
		e := newEnv(t, respond(resp), nil)
		r, body := e.get(t, "/")
		wantStatus(t, r, http.StatusServiceUnavailable)
		wantHeader(t, r.Header, "Retry-After", "1")
		wantBody(t, body, `{"error":"unavailable"}`)
		wantStats(t, e.filter, Stats{Error: 1})

		e2 := newEnv(t, respond(resp), func(c *Config) { c.FailureModeAllow = true })
		r, _ = e2.get(t, "/")
		wantStatus(t, r, http.StatusOK)
		wantStats(t, e2.filter, Stats{Error: 1, FailureModeAllowed: 1})
	})
	t.Run("unreachable_server_via_target", func(t *testing.T) {
		t.Parallel()
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := lis.Addr().String()
		lis.Close() // nothing listens there any more
		up := &echoUpstream{}
		f, err := New(Config{Target: addr, Upstream: up, Timeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		r := newReq(t, http.MethodGet, "http://svc/", nil)
		r.RemoteAddr = "127.0.0.1:1"
		rec := httptest.NewRecorder()
		f.ServeHTTP(rec, r)
		if rec.Code != http.StatusForbidden || rec.Body.Len() != 0 || up.calls() != 0 {
			t.Errorf("status %d body %q upstream %d", rec.Code, rec.Body, up.calls())
		}
		if s := f.Stats(); s.Error != 1 {
			t.Errorf("stats = %+v", s)
		}
	})
	t.Run("status_on_error_out_of_range_is_403", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, fail(fmt.Errorf("boom")), func(c *Config) { c.StatusOnError = 999 })
		r, _ := e.get(t, "/")
		wantStatus(t, r, http.StatusForbidden)
	})
	t.Run("error_for_grpc_client", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, fail(fmt.Errorf("boom")), func(c *Config) { c.StatusOnError = 503 })
		r, body := e.do(t, newReq(t, http.MethodPost, e.url("/s/M"), strings.NewReader("x"), "Content-Type", "application/grpc+proto"))
		wantStatus(t, r, http.StatusOK)
		wantHeader(t, r.Header, "Grpc-Status", "14")
		wantHeader(t, r.Header, "Grpc-Message")
		wantBody(t, body, "")
	})
}

func TestDeniedLocalReplyDetails(t *testing.T) {
	t.Parallel()
	t.Run("grpc_status_from_authz_and_encoded_message", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, respond(deniedResp(7, 403, "100% é~", hv("grpc-status", "5"), hv("content-type", "text/html"))), nil)
		r, body := e.do(t, newReq(t, http.MethodPost, e.url("/s/M"), strings.NewReader("x"), "Content-Type", "application/grpc"))
		wantStatus(t, r, http.StatusOK)
		wantHeader(t, r.Header, "Grpc-Status", "5")
		wantHeader(t, r.Header, "Grpc-Message", "100%25 %C3%A9%7E")
		wantHeader(t, r.Header, "Content-Type", "application/grpc")
		wantBody(t, body, "")
	})
	t.Run("grpc_web_is_not_grpc", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, respond(deniedResp(7, 401, "no")), nil)
		r, body := e.do(t, newReq(t, http.MethodPost, e.url("/s/M"), strings.NewReader("x"), "Content-Type", "application/grpc-web"))
		wantStatus(t, r, http.StatusUnauthorized)
		wantBody(t, body, "no")
	})
	t.Run("hop_by_hop_stripped_date_kept_x_envoy_kept", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, respond(deniedResp(7, 429, "slow down",
			hv("connection", "close"), hv("transfer-encoding", "chunked"), hv("keep-alive", "1"),
			hv("date", "Mon, 02 Jan 2006 15:04:05 GMT"), hv("x-envoy-ratelimited", "true"),
			hv("WWW-Authenticate", "Bearer"))), nil)
		r, body := e.get(t, "/")
		wantStatus(t, r, http.StatusTooManyRequests)
		wantBody(t, body, "slow down")
		wantHeader(t, r.Header, "Keep-Alive")
		wantHeader(t, r.Header, "Transfer-Encoding")
		if r.Close {
			t.Error("authz connection: close leaked to the client")
		}
		wantHeader(t, r.Header, "Date", "Mon, 02 Jan 2006 15:04:05 GMT")
		wantHeader(t, r.Header, "X-Envoy-Ratelimited", "true")
		wantHeader(t, r.Header, "Www-Authenticate", "Bearer")
	})
	t.Run("redirect_denial_and_unrepresentable_status", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, respond(deniedResp(7, 302, "", hv("location", "/login"))), nil)
		e.client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
		r, _ := e.get(t, "/")
		wantStatus(t, r, http.StatusFound)
		wantHeader(t, r.Header, "Location", "/login")

		e2 := newEnv(t, respond(deniedResp(7, 103, "")), nil)
		r, _ = e2.get(t, "/")
		wantStatus(t, r, http.StatusBadGateway)
		wantHeader(t, r.Header, "X-Envoysim-Unrepresentable-Status", "103")
	})
	t.Run("validate_mutations_checks_values", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, respond(deniedResp(7, 401, "x", hv("x-a", "a\nb"))), func(c *Config) { c.ValidateMutations = true })
		r, _ := e.get(t, "/")
		wantStatus(t, r, http.StatusInternalServerError)
		// Without validation the same response is a plain 401.
		e2 := newEnv(t, respond(deniedResp(7, 401, "x", hvAppend("bad name", "v", true))), func(c *Config) { c.ValidateMutations = true })
		r, _ = e2.get(t, "/")
		wantStatus(t, r, http.StatusUnauthorized) // append:true entries are dropped before validation
	})
}

func TestOKMutations(t *testing.T) {
	t.Parallel()
	t.Run("rewrite_path_method_and_authority", func(t *testing.T) {
		t.Parallel()
		ok := okResp(&authv3.OkHttpResponse{Headers: []*corev3.HeaderValueOption{
			hv(":path", "/rewritten?z=1"), hv("Host", "other.internal"), hv("X-Envoy-Retry-On", "5xx"),
			hvAppend("x-multi", "m", true), hv("x-set", "1"), hv("x-set", "2"),
		}})
		e := newEnv(t, respond(ok), nil)
		e.get(t, "/orig", "X-Multi", "a", "X-Multi", "c")
		up := e.up.last(t)
		if up.RequestURI != "/rewritten?z=1" || up.Host != "other.internal" {
			t.Errorf("upstream %q %q", up.RequestURI, up.Host)
		}
		// No mutation rules: even x-envoy-* can be injected (§2.3).
		wantHeader(t, up.Header, "X-Envoy-Retry-On", "5xx")
		// append joins onto the first entry; the last set wins.
		wantHeader(t, up.Header, "X-Multi", "a,m", "c")
		wantHeader(t, up.Header, "X-Set", "2")
	})
	t.Run("sets_before_appends", func(t *testing.T) {
		t.Parallel()
		ok := okResp(&authv3.OkHttpResponse{Headers: []*corev3.HeaderValueOption{
			hvAppend("x-tag", "b", true), hv("x-tag", "a"),
		}})
		e := newEnv(t, respond(ok), nil)
		e.get(t, "/")
		wantHeader(t, e.up.last(t).Header, "X-Tag", "a,b")
	})
	t.Run("remove_and_query_remove", func(t *testing.T) {
		t.Parallel()
		ok := okResp(&authv3.OkHttpResponse{
			HeadersToRemove:         []string{"X-Api-Key", ":authority"},
			QueryParametersToRemove: []string{"api_key"},
		})
		e := newEnv(t, respond(ok), nil)
		e.get(t, "/p?b=1&api_key=secret&a=2", "X-Api-Key", "k")
		up := e.up.last(t)
		wantHeader(t, up.Header, "X-Api-Key")
		if up.RequestURI != "/p?a=2&b=1" {
			t.Errorf("upstream path %q", up.RequestURI)
		}
	})
	t.Run("validate_mutations", func(t *testing.T) {
		t.Parallel()
		bad := []*authv3.OkHttpResponse{
			{Headers: []*corev3.HeaderValueOption{hv("x-a", "a\r\nb")}},
			{Headers: []*corev3.HeaderValueOption{hvAppend("bad name", "v", true)}},
			{ResponseHeadersToAdd: []*corev3.HeaderValueOption{hv("bad name", "v")}},
			{QueryParametersToSet: []*corev3.QueryParameter{{Key: "q", Value: "a b"}}},
			{ResponseHeadersToAdd: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "k", Value: "v"}, AppendAction: 42}}},
		}
		for i, ok := range bad {
			e := newEnv(t, respond(okResp(ok)), func(c *Config) { c.ValidateMutations = true })
			r, body := e.get(t, "/")
			if r.StatusCode != http.StatusInternalServerError || body != "" || e.up.calls() != 0 {
				t.Errorf("case %d: status %d body %q upstream %d", i, r.StatusCode, body, e.up.calls())
			}
			wantStats(t, e.filter, Stats{Invalid: 1})
		}
		// Invalid names in headers_to_remove are skipped, not fatal.
		e := newEnv(t, respond(okResp(&authv3.OkHttpResponse{HeadersToRemove: []string{"bad name", "x-a"}})),
			func(c *Config) { c.ValidateMutations = true })
		r, _ := e.get(t, "/", "X-A", "1")
		wantStatus(t, r, http.StatusOK)
		wantHeader(t, e.up.last(t).Header, "X-A")
		// Without validate_mutations an unknown append action is ignored.
		e = newEnv(t, respond(okResp(bad[4])), nil)
		r, _ = e.get(t, "/")
		wantStatus(t, r, http.StatusOK)
		wantHeader(t, r.Header, "K")
	})
	t.Run("header_count_limit", func(t *testing.T) {
		t.Parallel()
		var hs []*corev3.HeaderValueOption
		for i := range 100 {
			hs = append(hs, hv(fmt.Sprintf("x-h%d", i), "v"))
		}
		e := newEnv(t, respond(okResp(&authv3.OkHttpResponse{Headers: hs})), nil)
		r, _ := e.get(t, "/")
		wantStatus(t, r, http.StatusInternalServerError)
		wantStats(t, e.filter, Stats{Invalid: 1})
	})
	t.Run("response_header_actions", func(t *testing.T) {
		t.Parallel()
		opt := func(k, v string, a corev3.HeaderValueOption_HeaderAppendAction) *corev3.HeaderValueOption {
			o := hv(k, v)
			o.AppendAction = a
			return o
		}
		ok := okResp(&authv3.OkHttpResponse{ResponseHeadersToAdd: []*corev3.HeaderValueOption{
			hvAppend("x-set", "authz", false),
			hvAppend("x-add", "authz", true),
			opt("x-if-absent", "authz", corev3.HeaderValueOption_ADD_IF_ABSENT),
			opt("x-new-if-absent", "authz", corev3.HeaderValueOption_ADD_IF_ABSENT),
			opt("x-overwrite", "authz", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS),
			opt("x-missing-overwrite", "authz", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS),
			opt("x-set2", "authz", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
			hv("Server", "authz"),
		}})
		e := newEnv(t, respond(ok), nil)
		e.up.setRespond(func(w http.ResponseWriter, _ *http.Request) {
			for _, k := range []string{"X-Set", "X-Add", "X-If-Absent", "X-Overwrite", "X-Set2"} {
				w.Header().Set(k, "up")
			}
			w.WriteHeader(http.StatusCreated)
		})
		r, _ := e.get(t, "/")
		wantStatus(t, r, http.StatusCreated)
		wantHeader(t, r.Header, "X-Set", "authz")
		wantHeader(t, r.Header, "X-Add", "up", "authz")
		wantHeader(t, r.Header, "X-If-Absent", "up")
		wantHeader(t, r.Header, "X-New-If-Absent", "authz")
		wantHeader(t, r.Header, "X-Overwrite", "authz")
		wantHeader(t, r.Header, "X-Missing-Overwrite")
		wantHeader(t, r.Header, "X-Set2", "authz")
		wantHeader(t, r.Header, "Server", "envoy") // HCM runs after ext_authz
	})
}

func TestDynamicMetadata(t *testing.T) {
	t.Parallel()
	md, _ := structpb.NewStruct(map[string]any{"user": "u"})
	override, _ := structpb.NewStruct(map[string]any{"legacy": true})
	var (
		mu   sync.Mutex
		seen []Decision
	)
	onDecision := func(c *Config) {
		c.OnDecision = func(d Decision) {
			mu.Lock()
			seen = append(seen, d)
			mu.Unlock()
		}
	}

	ok := okResp(&authv3.OkHttpResponse{})
	ok.DynamicMetadata = md
	e := newEnv(t, respond(ok), onDecision)
	e.get(t, "/")
	d := e.filter.LastDecision()
	if d.DynamicMetadata.GetFields()["user"].GetStringValue() != "u" {
		t.Errorf("metadata = %v", d.DynamicMetadata)
	}
	if _, ok := d.DynamicMetadata.GetFields()["ext_authz_duration"]; !ok {
		t.Error("ext_authz_duration missing on OK")
	}
	if _, ok := md.GetFields()["ext_authz_duration"]; ok {
		t.Error("the authz server's message was mutated")
	}
	mu.Lock()
	if len(seen) != 1 || seen[0].Verdict != VerdictOK || seen[0].CheckRequest == nil || seen[0].CheckResponse == nil {
		t.Errorf("OnDecision saw %+v", seen)
	}
	mu.Unlock()

	// ok_response.dynamic_metadata (deprecated) overrides the outer field.
	ok2 := okResp(&authv3.OkHttpResponse{DynamicMetadata: override})
	ok2.DynamicMetadata = md
	e2 := newEnv(t, respond(ok2), nil)
	e2.get(t, "/")
	want, _ := structpb.NewStruct(map[string]any{"legacy": true})
	got := e2.filter.LastDecision().DynamicMetadata
	delete(got.GetFields(), "ext_authz_duration")
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("override (-want +got):\n%s", diff)
	}

	// Denied responses keep their metadata but get no duration.
	den := deniedResp(7, 0, "")
	den.DynamicMetadata = md
	e3 := newEnv(t, respond(den), nil)
	e3.get(t, "/")
	dd := e3.filter.LastDecision()
	if dd.DynamicMetadata.GetFields()["user"].GetStringValue() != "u" {
		t.Errorf("denied metadata = %v", dd.DynamicMetadata)
	}
	if _, ok := dd.DynamicMetadata.GetFields()["ext_authz_duration"]; ok {
		t.Error("ext_authz_duration on a denial")
	}
	// An empty struct is not stored at all.
	e4 := newEnv(t, respond(&authv3.CheckResponse{DynamicMetadata: &structpb.Struct{}}), nil)
	e4.get(t, "/")
	if e4.filter.LastDecision().DynamicMetadata != nil {
		t.Error("empty metadata stored")
	}
}

func TestUpstreamResponse(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil, nil)
	e.up.setRespond(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Server", "gunicorn")
		w.Header().Set("Date", "Mon, 02 Jan 2006 15:04:05 GMT")
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("Trailer", "X-Checksum")
		w.WriteHeader(http.StatusAccepted)
		_, _ = io.WriteString(w, "part1,")
		w.(http.Flusher).Flush()
		_, _ = io.WriteString(w, "part2")
		w.Header().Set("X-Checksum", "abc")
	})
	r, body := e.get(t, "/")
	wantStatus(t, r, http.StatusAccepted)
	wantBody(t, body, "part1,part2")
	wantHeader(t, r.Header, "Server", "envoy")
	wantHeader(t, r.Header, "Date", "Mon, 02 Jan 2006 15:04:05 GMT")
	wantHeader(t, r.Header, "Keep-Alive")
	wantHeader(t, r.Header, "Content-Type") // no sniffing
	if r.Header.Get("X-Envoy-Upstream-Service-Time") == "" {
		t.Error("x-envoy-upstream-service-time missing")
	}
	if r.Trailer.Get("X-Checksum") != "abc" {
		t.Errorf("trailer = %v", r.Trailer)
	}
	wantHeader(t, e.up.last(t).Header, "X-Envoy-Expected-Rq-Timeout-Ms", "15000")
	if !strings.HasPrefix(e.up.last(t).RemoteAddr, "10.0.0.1:") {
		t.Errorf("upstream peer = %q", e.up.last(t).RemoteAddr)
	}

	e2 := newEnv(t, nil, func(c *Config) {
		c.SuppressEnvoyHeaders = true
		c.ServerHeaderTransformation = ServerAppendIfAbsent
	})
	e2.up.setRespond(func(w http.ResponseWriter, _ *http.Request) { w.Header().Set("Server", "gunicorn") })
	r, _ = e2.get(t, "/")
	wantHeader(t, r.Header, "Server", "gunicorn")
	wantHeader(t, r.Header, "X-Envoy-Upstream-Service-Time")
	wantHeader(t, e2.up.last(t).Header, "X-Envoy-Expected-Rq-Timeout-Ms")

	e3 := newEnv(t, nil, func(c *Config) { c.ServerHeaderTransformation = ServerPassThrough })
	r, _ = e3.get(t, "/")
	wantHeader(t, r.Header, "Server")
}

func TestFilterEnabled(t *testing.T) {
	t.Parallel()
	off := func(*http.Request) bool { return false }
	e := newEnv(t, respond(deniedResp(7, 0, "")), func(c *Config) { c.FilterEnabled = off })
	r, _ := e.get(t, "/")
	wantStatus(t, r, http.StatusOK)
	wantStats(t, e.filter, Stats{Disabled: 1})
	if e.authz.calls() != 0 {
		t.Error("authz called while disabled")
	}
	e2 := newEnv(t, nil, func(c *Config) {
		c.FilterEnabled = off
		c.DenyAtDisable = true
		c.StatusOnError = 503
	})
	r, body := e2.get(t, "/")
	wantStatus(t, r, http.StatusServiceUnavailable)
	wantBody(t, body, "")
	wantStats(t, e2.filter, Stats{Disabled: 1})
}

func TestNewValidation(t *testing.T) {
	t.Parallel()
	up := &echoUpstream{}
	bad := []Config{
		{Upstream: up},          // no authz
		{Target: "127.0.0.1:1"}, // no upstream
		{Target: "127.0.0.1:1", Upstream: up, WithRequestBody: &BufferSettings{}},
		{Target: "127.0.0.1:1", Upstream: up, XFFNumTrustedHops: -1},
		{Target: "127.0.0.1:1", Upstream: up, VirtualHosts: []VirtualHost{{Name: "x"}}},
		{Target: "127.0.0.1:1", Upstream: up, VirtualHosts: []VirtualHost{{Domains: []string{"*"}, Routes: []Route{{WithRequestBody: &BufferSettings{}}}}}},
	}
	for i, c := range bad {
		if f, err := New(c); err == nil {
			f.Close()
			t.Errorf("config %d accepted", i)
		}
	}
}
