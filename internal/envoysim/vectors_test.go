package envoysim

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestVectors runs the test vectors of envoy-ext-authz.md §8 (HTTP/1.1 client,
// failure_mode_allow false, status_on_error unset, defaults elsewhere).
func TestVectors(t *testing.T) {
	t.Parallel()
	vectors := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"T01_empty_response_allows", func(t *testing.T) {
			e := newEnv(t, respond(&authv3.CheckResponse{}), nil)
			resp, body := e.get(t, "/p?q=1", "X-Foo", "a")
			wantStatus(t, resp, http.StatusOK)
			wantBody(t, body, "upstream-ok")
			wantStd(t, resp)
			up := e.up.last(t)
			if up.RequestURI != "/p?q=1" || up.Method != http.MethodGet {
				t.Errorf("upstream got %s %s", up.Method, up.RequestURI)
			}
			wantHeader(t, up.Header, "X-Foo", "a")
			wantHeader(t, up.Header, hdrFailureAllowed)
			wantStats(t, e.filter, Stats{OK: 1})
			if d := e.filter.LastDecision(); d.Verdict != VerdictOK {
				t.Errorf("verdict = %s", d.Verdict)
			}
		}},
		{"T02_status_7_bare_403", func(t *testing.T) {
			e := newEnv(t, respond(&authv3.CheckResponse{Status: deniedResp(7, 0, "").Status}), nil)
			resp, body, head := e.raw(t, http.MethodGet, "/p")
			wantStatus(t, resp, http.StatusForbidden)
			wantHeader(t, resp.Header, "Content-Length", "0")
			if !strings.Contains(strings.ToLower(head), "\r\ncontent-length: 0") {
				t.Errorf("wire head lacks content-length: 0:\n%s", head)
			}
			wantHeader(t, resp.Header, "Content-Type")
			wantStd(t, resp)
			wantBody(t, body, "")
			if e.up.calls() != 0 {
				t.Error("upstream called")
			}
			wantStats(t, e.filter, Stats{Denied: 1})
			// In-process (no net/http server adding its own content-length):
			// the harness itself emits the HTTP/1 codec's "content-length: 0".
			rec := e.serve(t, "127.0.0.1:9", "/p")
			wantHeader(t, rec.Header(), "Content-Length", "0")
			wantHeader(t, rec.Header(), "Content-Type")
		}},
		{"T03_denied_401_body_text_plain", func(t *testing.T) {
			e := newEnv(t, respond(deniedResp(7, 401, "x")), nil)
			resp, body := e.get(t, "/")
			wantStatus(t, resp, http.StatusUnauthorized)
			wantHeader(t, resp.Header, "Content-Type", "text/plain")
			wantHeader(t, resp.Header, "Content-Length", "1")
			wantBody(t, body, "x")
			wantStd(t, resp)
		}},
		{"T04_denied_json_content_type_kept", func(t *testing.T) {
			e := newEnv(t, respond(deniedResp(7, 401, `{"a":1}`, hv("content-type", "application/json"))), nil)
			resp, body := e.get(t, "/")
			wantStatus(t, resp, http.StatusUnauthorized)
			wantHeader(t, resp.Header, "Content-Type", "application/json")
			wantHeader(t, resp.Header, "Content-Length", "7")
			wantBody(t, body, `{"a":1}`)
		}},
		{"T05_content_length_recomputed", func(t *testing.T) {
			e := newEnv(t, respond(deniedResp(7, 401, `{"a":1}`,
				hv("content-type", "application/json"), hv("content-length", "999"))), nil)
			resp, body := e.get(t, "/")
			wantHeader(t, resp.Header, "Content-Length", "7")
			wantBody(t, body, `{"a":1}`)
		}},
		{"T06_empty_body_drops_content_type", func(t *testing.T) {
			e := newEnv(t, respond(deniedResp(7, 0, "", hv("content-type", "application/json"))), nil)
			resp, body := e.get(t, "/")
			wantStatus(t, resp, http.StatusForbidden)
			wantHeader(t, resp.Header, "Content-Type")
			wantHeader(t, resp.Header, "Content-Length", "0")
			wantBody(t, body, "")
		}},
		{"T07_append_true_dropped", func(t *testing.T) {
			e := newEnv(t, respond(deniedResp(7, 0, "", hvAppend("x-a", "1", true), hvAppend("x-b", "2", false))), nil)
			resp, _ := e.get(t, "/")
			wantHeader(t, resp.Header, "X-A")
			wantHeader(t, resp.Header, "X-B", "2")
		}},
		{"T08_repeated_set_cookie_kept_in_order", func(t *testing.T) {
			e := newEnv(t, respond(deniedResp(7, 0, "", hv("set-cookie", "a=1"), hv("Set-Cookie", "b=2"))), nil)
			resp, _ := e.get(t, "/")
			wantHeader(t, resp.Header, "Set-Cookie", "a=1", "b=2")
		}},
		{"T09_server_overwritten", func(t *testing.T) {
			e := newEnv(t, respond(deniedResp(7, 0, "", hv("server", "authz"))), nil)
			resp, _ := e.get(t, "/")
			wantHeader(t, resp.Header, "Server", "envoy")
		}},
		{"T10_unavailable_in_status_is_denial", func(t *testing.T) {
			e := newEnv(t, respond(&authv3.CheckResponse{Status: deniedResp(14, 0, "").Status}), nil)
			resp, _ := e.get(t, "/")
			wantStatus(t, resp, http.StatusForbidden)
			wantStats(t, e.filter, Stats{Denied: 1})
		}},
		{"T11_grpc_error_is_error", func(t *testing.T) {
			rpcErr := fail(status.Error(codes.PermissionDenied, "nope"))
			t.Run("fail_closed", func(t *testing.T) {
				e := newEnv(t, rpcErr, nil)
				resp, body := e.get(t, "/", "X-Foo", "a")
				wantStatus(t, resp, http.StatusForbidden)
				wantBody(t, body, "")
				wantHeader(t, resp.Header, "Content-Type")
				wantHeader(t, resp.Header, "Content-Length", "0")
				wantStd(t, resp)
				wantStats(t, e.filter, Stats{Error: 1})
				if d := e.filter.LastDecision(); d.Verdict != VerdictError || status.Code(d.Err) != codes.PermissionDenied {
					t.Errorf("decision = %+v", d)
				}
			})
			t.Run("failure_mode_allow", func(t *testing.T) {
				e := newEnv(t, rpcErr, func(c *Config) { c.FailureModeAllow = true })
				resp, body := e.get(t, "/p", "X-Foo", "a")
				wantStatus(t, resp, http.StatusOK)
				wantBody(t, body, "upstream-ok")
				up := e.up.last(t)
				wantHeader(t, up.Header, hdrFailureAllowed)
				wantHeader(t, up.Header, "X-Foo", "a")
				wantStats(t, e.filter, Stats{Error: 1, FailureModeAllowed: 1})
			})
			t.Run("failure_mode_allow_header_add", func(t *testing.T) {
				e := newEnv(t, rpcErr, func(c *Config) {
					c.FailureModeAllow = true
					c.FailureModeAllowHeaderAdd = true
				})
				resp, _ := e.get(t, "/p")
				wantStatus(t, resp, http.StatusOK)
				wantHeader(t, e.up.last(t).Header, hdrFailureAllowed, "true")
			})
		}},
		{"T12_timeout_is_error", func(t *testing.T) {
			slow := func(ctx context.Context, _ *authv3.CheckRequest) (*authv3.CheckResponse, error) {
				select {
				case <-ctx.Done():
					// Whatever the server says now, the client deadline decides.
					return nil, status.FromContextError(ctx.Err()).Err()
				case <-time.After(2 * time.Second):
					return &authv3.CheckResponse{}, nil
				}
			}
			t.Run("fail_closed", func(t *testing.T) {
				e := newEnv(t, slow, func(c *Config) { c.Timeout = 0 }) // Envoy's 200ms default
				start := time.Now()
				resp, body := e.get(t, "/")
				if el := time.Since(start); el < 190*time.Millisecond || el > 1500*time.Millisecond {
					t.Errorf("took %v, want about the 200ms default timeout", el)
				}
				wantStatus(t, resp, http.StatusForbidden)
				wantBody(t, body, "")
				wantStats(t, e.filter, Stats{Error: 1})
				if d := e.filter.LastDecision(); status.Code(d.Err) != codes.DeadlineExceeded {
					t.Errorf("err = %v, want DeadlineExceeded", d.Err)
				}
			})
			t.Run("failure_mode_allow", func(t *testing.T) {
				e := newEnv(t, slow, func(c *Config) {
					c.FailureModeAllow = true
					c.FailureModeAllowHeaderAdd = true
					c.Timeout = 50 * time.Millisecond
				})
				resp, _ := e.get(t, "/")
				wantStatus(t, resp, http.StatusOK)
				wantHeader(t, e.up.last(t).Header, hdrFailureAllowed, "true")
				wantStats(t, e.filter, Stats{Error: 1, FailureModeAllowed: 1})
			})
		}},
		{"T13_status_on_error_503", func(t *testing.T) {
			e := newEnv(t, fail(status.Error(codes.PermissionDenied, "x")), func(c *Config) {
				c.StatusOnError = http.StatusServiceUnavailable
			})
			resp, body := e.get(t, "/")
			wantStatus(t, resp, http.StatusServiceUnavailable)
			wantBody(t, body, "")
			wantHeader(t, resp.Header, "Content-Type")
		}},
		{"T14_grpc_client_trailers_only", func(t *testing.T) {
			e := newEnv(t, respond(deniedResp(7, 401, "no", hv("x-extra", "1"))), nil)
			req := newReq(t, http.MethodPost, e.url("/pkg.Svc/Method"), strings.NewReader("\x00\x00\x00\x00\x00"),
				"Content-Type", "application/grpc", "TE", "trailers")
			resp, body := e.do(t, req)
			wantStatus(t, resp, http.StatusOK)
			wantHeader(t, resp.Header, "Content-Type", "application/grpc")
			wantHeader(t, resp.Header, "Grpc-Status", "16")
			wantHeader(t, resp.Header, "Grpc-Message", "no")
			wantHeader(t, resp.Header, "X-Extra", "1")
			wantBody(t, body, "")
			if d := e.filter.LastDecision(); d.Status != 401 {
				t.Errorf("decision status = %d, want 401 (pre-conversion)", d.Status)
			}
		}},
		{"T15_head_keeps_content_length", func(t *testing.T) {
			e := newEnv(t, respond(deniedResp(7, 0, "abc")), nil)
			resp, body := e.do(t, newReq(t, http.MethodHead, e.url("/"), nil))
			wantStatus(t, resp, http.StatusForbidden)
			wantHeader(t, resp.Header, "Content-Length", "3")
			wantBody(t, body, "")
		}},
		{"T16_body_truncated", func(t *testing.T) {
			e := newEnv(t, respond(deniedResp(7, 0, "abcdefgh")), func(c *Config) { c.MaxDeniedResponseBodyBytes = 4 })
			resp, body := e.get(t, "/")
			wantBody(t, body, "abcd")
			wantHeader(t, resp.Header, "Content-Length", "4")
		}},
		{"T17_validate_mutations_invalid_name", func(t *testing.T) {
			e := newEnv(t, respond(deniedResp(7, 401, "x", hv("bad name", "v"))), func(c *Config) { c.ValidateMutations = true })
			resp, body := e.get(t, "/")
			wantStatus(t, resp, http.StatusInternalServerError)
			wantBody(t, body, "")
			// ext_authz.cc counts denied before validating (Nov-2025 source).
			wantStats(t, e.filter, Stats{Denied: 1, Invalid: 1})
			if d := e.filter.LastDecision(); d.Verdict != VerdictInvalid || d.Details != detailsInvalid {
				t.Errorf("decision = %s/%s", d.Verdict, d.Details)
			}
		}},
		{"T18_ok_header_overwrites_client_value", func(t *testing.T) {
			e := newEnv(t, respond(okResp(&authv3.OkHttpResponse{Headers: []*corev3.HeaderValueOption{hv("x-user", "u")}})), nil)
			resp, _ := e.get(t, "/", "X-User", "evil", "X-User", "evil2")
			wantStatus(t, resp, http.StatusOK)
			wantHeader(t, e.up.last(t).Header, "X-User", "u")
			// The check saw the client's values.
			if got := e.authz.last(t).GetAttributes().GetRequest().GetHttp().GetHeaders()["x-user"]; got != "evil,evil2" {
				t.Errorf("check header x-user = %q", got)
			}
		}},
		{"T19_ok_append_only_when_present", func(t *testing.T) {
			ok := okResp(&authv3.OkHttpResponse{Headers: []*corev3.HeaderValueOption{hvAppend("x-tag", "b", true)}})
			e := newEnv(t, respond(ok), nil)
			e.get(t, "/", "X-Tag", "a")
			wantHeader(t, e.up.last(t).Header, "X-Tag", "a,b")
			e.get(t, "/")
			wantHeader(t, e.up.last(t).Header, "X-Tag")
		}},
		{"T20_headers_to_remove_skips_pseudo_and_host", func(t *testing.T) {
			ok := okResp(&authv3.OkHttpResponse{HeadersToRemove: []string{":path", "host", "authorization", "Host"}})
			e := newEnv(t, respond(ok), nil)
			e.get(t, "/keep/me?x=1", "Authorization", "Bearer t")
			up := e.up.last(t)
			wantHeader(t, up.Header, "Authorization")
			if up.RequestURI != "/keep/me?x=1" || !strings.HasPrefix(up.Host, "127.0.0.1:") {
				t.Errorf("upstream path/host changed: %q %q", up.RequestURI, up.Host)
			}
		}},
		{"T21_query_parameters_to_set", func(t *testing.T) {
			ok := okResp(&authv3.OkHttpResponse{QueryParametersToSet: []*corev3.QueryParameter{{Key: "q", Value: "2"}}})
			e := newEnv(t, respond(ok), nil)
			e.get(t, "/p?q=1&r=3")
			if got := e.up.last(t).RequestURI; got != "/p?q=2&r=3" {
				t.Errorf("upstream :path = %q, want /p?q=2&r=3", got)
			}
		}},
		{"T22_response_headers_to_add_adds_a_line", func(t *testing.T) {
			ok := okResp(&authv3.OkHttpResponse{ResponseHeadersToAdd: []*corev3.HeaderValueOption{hv("k", "v")}})
			e := newEnv(t, respond(ok), nil)
			e.up.setRespond(func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("K", "u")
				_, _ = io.WriteString(w, "hi")
			})
			resp, body := e.get(t, "/")
			wantHeader(t, resp.Header, "K", "u", "v")
			wantBody(t, body, "hi")
			wantStd(t, resp)
		}},
		{"T23_body_too_large_413_no_check", func(t *testing.T) {
			e := newEnv(t, nil, func(c *Config) { c.WithRequestBody = &BufferSettings{MaxRequestBytes: 4} })
			resp, body := e.do(t, newReq(t, http.MethodPost, e.url("/upload"), strings.NewReader("0123456789")))
			wantStatus(t, resp, http.StatusRequestEntityTooLarge)
			wantBody(t, body, "Payload Too Large")
			wantHeader(t, resp.Header, "Content-Type", "text/plain")
			if n := e.authz.calls(); n != 0 {
				t.Errorf("authz called %d times", n)
			}
			if e.up.calls() != 0 {
				t.Error("upstream called")
			}
		}},
		{"T24_partial_body", func(t *testing.T) {
			e := newEnv(t, nil, func(c *Config) {
				c.WithRequestBody = &BufferSettings{MaxRequestBytes: 4, AllowPartialMessage: true}
			})
			resp, _ := e.do(t, newReq(t, http.MethodPost, e.url("/upload"), strings.NewReader("0123456789"),
				"X-Envoy-Auth-Partial-Body", "false"))
			wantStatus(t, resp, http.StatusOK)
			hr := e.authz.last(t).GetAttributes().GetRequest().GetHttp()
			if hr.GetBody() != "0123" || hr.GetHeaders()[hdrPartialBody] != "true" || hr.GetSize() < 4 {
				t.Errorf("body=%q partial=%q size=%d", hr.GetBody(), hr.GetHeaders()[hdrPartialBody], hr.GetSize())
			}
			if got := string(e.up.last(t).Body); got != "0123456789" {
				t.Errorf("upstream body = %q", got)
			}
		}},
		{"T25_route_disabled_skips_check", func(t *testing.T) {
			e := newEnv(t, respond(deniedResp(7, 0, "")), func(c *Config) {
				c.VirtualHosts = []VirtualHost{{Name: "vh", Domains: []string{"*"}, Routes: []Route{
					{Prefix: "/healthz", Disabled: true},
					{Prefix: "/"},
				}}}
			})
			resp, _ := e.get(t, "/healthz")
			wantStatus(t, resp, http.StatusOK)
			if n := e.authz.calls(); n != 0 {
				t.Errorf("authz called %d times", n)
			}
			if d := e.filter.LastDecision(); d.Verdict != VerdictSkipped {
				t.Errorf("verdict = %s", d.Verdict)
			}
			resp, _ = e.get(t, "/other")
			wantStatus(t, resp, http.StatusForbidden)
			wantStats(t, e.filter, Stats{Denied: 1})
		}},
	}
	for _, v := range vectors {
		t.Run(v.name, func(t *testing.T) {
			t.Parallel()
			v.run(t)
		})
	}
}
