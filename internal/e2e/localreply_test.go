package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/extauthz/extauthz/internal/decision"
)

// rfc3339 matches the timestamps envelopes carry: the sidecar's are the
// test clock's, Envoy's the time of the request.
var rfc3339 = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ`)

func sameTime(b []byte) []byte { return rfc3339.ReplaceAll(b, []byte("<time>")) }

// failingSidecar answers every Check with a gRPC error, as a sidecar that
// is restarting or overloaded would: Envoy answers status_on_error.
var failingSidecar = funcAuthz{check: func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return nil, status.Error(codes.Unavailable, "e2e: sidecar down")
}}

// TestSidecarFailureInEachHostsEnvelope: with the sidecar failing, a client
// of every virtual host gets from Envoy's local_reply_config exactly what
// the sidecar itself sends for auth_unavailable (the golden files recorded
// from it): status, headers and body, Envoy's request id in both.
func TestSidecarFailureInEachHostsEnvelope(t *testing.T) {
	s := startShippedWith(t, failingSidecar)
	set := goldenSet()
	for _, ph := range profileHosts {
		t.Run(ph.profile, func(t *testing.T) {
			name := filepath.Join(ph.profile, "auth_unavailable.json")
			c := set[name]
			resp := refused(t, s, c.request)
			id := resp.header.Get("X-Request-Id")
			if id == "" {
				t.Fatalf("no x-request-id: %d %v %s", resp.status, resp.header, resp.body)
			}
			got := record(t, c, resp, id)
			got.Body = sameTime(got.Body)
			want, err := os.ReadFile(filepath.Join(goldenDir, name))
			if err != nil {
				t.Fatal(err)
			}
			compareGolden(t, name, sameTime(want), got)
		})
	}
}

// TestEnvoyRejectionsInEachHostsEnvelope: a request Envoy refuses itself
// gets the envelope the host's profile has for it, byte for byte as the
// sidecar renders it, and never reaches the sidecar or the upstream: an
// escaped slash in the path (400) the host's request_invalid; a header
// block over Envoy's limit (431), which Envoy refuses before it knows the
// host, and a body over the 8 KiB the shipped POST /v1/orders forwards
// (413), the default profile's request_too_large.
func TestEnvoyRejectionsInEachHostsEnvelope(t *testing.T) {
	s := newStack(t)
	eng := newEngine(t)
	expect := func(t *testing.T, prof string, reason decision.Reason, resp response) {
		t.Helper()
		p, ok := eng.Profiles.Get(prof)
		if !ok {
			t.Fatalf("no profile %q", prof)
		}
		want := p.Render(&decision.Decision{Reason: reason, Profile: prof}, time.Now())
		if resp.status != want.Status || string(sameTime(resp.body)) != string(sameTime(want.Body)) {
			t.Errorf("%s: got %d %s\nwant %d %s", reason, resp.status, resp.body, want.Status, want.Body)
		}
		for _, h := range want.Headers {
			if got := resp.header.Get(h[0]); got != h[1] {
				t.Errorf("%s: header %s = %q, want %q", reason, h[0], got, h[1])
			}
		}
		if !json.Valid(resp.body) {
			t.Errorf("body is not JSON: %s", resp.body)
		}
	}
	big := strings.Repeat("a", 70<<10)
	for _, ph := range profileHosts {
		t.Run(ph.profile, func(t *testing.T) {
			before := s.checks()
			// Envoy refuses the path before it strips the port or a
			// trailing dot from the host.
			for _, host := range []string{ph.host, ph.host + ":8000", strings.ToUpper(ph.host) + ".", "[" + ph.host + "]"} {
				want := ph.profile
				if strings.HasPrefix(host, "[") { // not this host: the catch-all's
					want = "default"
				}
				resp := refused(t, s, request{host: host, path: "/v1/orders%2F..%2Fadmin", headers: withKey(demoKey)})
				expect(t, want, decision.RequestInvalid, resp)
			}
			resp := refused(t, s, request{host: ph.host, path: "/v1/orders", headers: withKey(demoKey, [2]string{"X-Big", big})})
			expect(t, "default", decision.RequestTooLarge, resp)
			if n := s.checks() - before; n != 0 {
				t.Errorf("the sidecar was asked %d times", n)
			}
		})
	}
	post := withKey(demoKey, [2]string{"Idempotency-Key", "k-1"}, [2]string{"Content-Type", "application/json"})
	resp := refused(t, s, request{method: http.MethodPost, path: "/v1/orders", headers: post, body: strings.Repeat("x", 8193)})
	expect(t, "default", decision.RequestTooLarge, resp)
}

// TestSidecarDeniesPassUnchanged: the mappers leave the sidecar's own
// denials alone, even one with the status and reason a mapper answers
// (auth_unavailable, 503): the body is the sidecar's (its clock is the
// test's, Envoy's would be now).
func TestSidecarDeniesPassUnchanged(t *testing.T) {
	s := newStack(t)
	resp := refused(t, s, request{host: "dialektai.localhost", path: "/v1/orders", headers: bearer(unavailableToken)})
	id := s.requestID()
	if resp.status != 503 || !strings.Contains(string(resp.body), `"trace_id":"`+id+`"`) || !strings.Contains(string(resp.body), testNow.Format(time.RFC3339)) || resp.header.Get("Retry-After") != "30" {
		t.Errorf("%d %v %s", resp.status, resp.header, resp.body)
	}
	if s.checks() == 0 {
		t.Error("the sidecar was not asked")
	}
}
