package e2e

import (
	"errors"
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/extauthz/extauthz/internal/checkreq"
)

// TestCheckRequestMatchesRealEnvoy keeps internal/checkreq, the offline
// CheckRequest builder of `extauthz check`, honest. For every golden
// request and the attack paths, the CheckRequest it builds must equal the
// one real Envoy sends (path, method, host, headers; request ids aside), and
// where Envoy answers by itself checkreq must say so with the same status.
func TestCheckRequestMatchesRealEnvoy(t *testing.T) {
	s := newStack(t)
	var reqs []request
	for _, c := range goldenSet() {
		if c.prime == 0 {
			reqs = append(reqs, c.request)
		}
	}
	for _, p := range []string{"/v1/calls/%2e%2e/admin/users", "//v1//admin//users", "/v1/orders;x=1", "/v1/orders%2F17", "/v1/orders/caf%C3%A9"} {
		reqs = append(reqs, request{path: p, headers: withKey(demoKey)})
	}
	reqs = append(reqs, request{path: "/v1/orders", headers: withKey(demoKey, [2]string{"X-Note", "caf\xe9"})})
	slices.SortFunc(reqs, func(a, b request) int { return strings.Compare(a.host+a.path, b.host+b.path) })

	for _, r := range reqs {
		before := s.checks()
		resp := s.do(t, r)
		hr, err := http.NewRequest(r.method, s.url+r.path, nil)
		if r.method == "" {
			hr.Method = http.MethodGet
		}
		if err != nil {
			t.Fatal(err)
		}
		if r.host != "" {
			hr.Host = r.host
		}
		for _, h := range r.headers {
			hr.Header[h[0]] = append(hr.Header[h[0]], h[1])
		}
		// What net/http's HTTP/1.1 client adds on the wire.
		hr.Header.Set("User-Agent", "Go-http-client/1.1")
		hr.Header.Set("Accept-Encoding", "gzip")
		if hr.Method == http.MethodPost {
			hr.Header.Set("Content-Length", "0")
		}
		hr.RemoteAddr = "127.0.0.1:40000"
		built, buildErr := checkreq.Build(hr, checkreq.ShippedHCM())
		var lr *checkreq.LocalReplyError
		name := r.host + " " + r.path
		if s.checks() == before { // Envoy answered by itself
			if !errors.As(buildErr, &lr) || lr.Status != resp.status {
				t.Errorf("%s: Envoy answered %d without a check; checkreq: %v", name, resp.status, buildErr)
			}
			continue
		}
		if buildErr != nil {
			t.Errorf("%s: Envoy checked it; checkreq: %v", name, buildErr)
			continue
		}
		real := s.lastCheck().GetAttributes().GetRequest().GetHttp()
		got := built.GetAttributes().GetRequest().GetHttp()
		norm := func(h map[string]string) map[string]string {
			out := maps.Clone(h)
			delete(out, "x-request-id")
			// For a loopback peer Envoy appends an address of its own
			// choosing to x-forwarded-for, which checkreq models as a
			// configurable local address; source.address is compared by
			// TestClientXFFIgnored.
			delete(out, "x-forwarded-for")
			return out
		}
		if diff := cmp.Diff(norm(real.GetHeaders()), norm(got.GetHeaders())); diff != "" {
			t.Errorf("%s: headers (-envoy +checkreq):\n%s", name, diff)
		}
		for _, f := range [][3]string{
			{"path", real.GetPath(), got.GetPath()},
			{"method", real.GetMethod(), got.GetMethod()},
			{"host", real.GetHost(), got.GetHost()},
			{"scheme", real.GetScheme(), got.GetScheme()},
			{"protocol", real.GetProtocol(), got.GetProtocol()},
		} {
			if f[1] != f[2] {
				t.Errorf("%s: %s: envoy %q, checkreq %q", name, f[0], f[1], f[2])
			}
		}
	}
}
