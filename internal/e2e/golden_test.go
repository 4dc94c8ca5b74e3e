package e2e

import (
	"bytes"
	"encoding/json"
	"flag"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite testdata/golden from the responses (and delete stale files)")

const goldenDir = "../../testdata/golden"

// profileHosts maps each deny profile to the virtual host of envoy/envoy.yaml
// that selects it (context_extensions.profile). Any host without a virtual
// host of its own lands on the catch-all, the default profile.
var profileHosts = []struct{ profile, host string }{
	{"default", "api.example.com"},
	{"aidial", "aidial.localhost"},
	{"dialektai", "dialektai.localhost"},
	{"aidelly", "aidelly.localhost"},
	{"lowercase", "lowercase.localhost"},
	{"aisafe", "aisafe.localhost"},
	{"problem", "problem.localhost"},
	{"google", "google.localhost"},
	{"jsonapi", "jsonapi.localhost"},
}

// goldenCase is one request whose response is pinned in
// testdata/golden/<profile>/<name>.json.
type goldenCase struct {
	name string // a deny reason, "<reason>.<variant>" or "envoy_*"
	request
	// prime > 0 runs the case on a stack of its own (fresh limiter
	// counters) and first sends the same request prime times, each of
	// which must be allowed; the next one is the golden.
	prime int
}

// freeKey is the demo key on plan free (10/minute, 100/hour) in
// policies/data.json: tenant 42, scope orders:read.
const freeKey = "xa_demo_free_R4t6Yu"

// withKey is GET /v1/orders for tenant 42 with an API key, plus extra headers.
func withKey(key string, extra ...[2]string) [][2]string {
	return append([][2]string{{"X-API-Key", key}, {"X-Tenant-Id", "42"}}, extra...)
}

func bearer(tok string, extra ...[2]string) [][2]string {
	return append([][2]string{{"Authorization", "Bearer " + tok}, {"X-Tenant-Id", "42"}}, extra...)
}

// reasonCases are the triggers of every deny reason reachable with the demo
// data, sent to each profile's host.
func reasonCases() []goldenCase {
	get := func(name, path string, h [][2]string) goldenCase {
		return goldenCase{name: name, request: request{method: "GET", path: path, headers: h}}
	}
	return []goldenCase{
		// ";" survives Envoy's normalisation; the sidecar refuses it.
		get("path_invalid", "/v1/orders;x=1", withKey(demoKey)),
		get("route_not_found", "/v2/unknown", withKey(demoKey)),
		// Two header lines: Envoy joins them with "," in the CheckRequest.
		get("credentials_malformed", "/v1/orders", [][2]string{{"X-API-Key", demoKey}, {"X-API-Key", readonlyKey}, {"X-Tenant-Id", "42"}}),
		get("wrong_scheme", "/v1/orders", [][2]string{{"Authorization", "Basic dTpw"}, {"X-Tenant-Id", "42"}}),
		get("credentials_missing", "/v1/orders", [][2]string{{"X-Tenant-Id", "42"}}),
		get("key_invalid", "/v1/orders", withKey("xa_not_a_key")),
		get("key_expired", "/v1/orders", withKey(expiredKey)),
		get("key_revoked", "/v1/orders", withKey(revokedKey)),
		get("key_suspended", "/v1/orders", withKey(suspendedKey)),
		get("token_invalid", "/v1/orders", bearer("a.b.c")),
		get("token_expired", "/v1/orders", bearer(expiredJWT)),
		get("auth_unavailable", "/v1/orders", bearer(unavailableToken)),
		get("browser_api_key", "/v1/calls", [][2]string{{"X-API-Key", demoKey}, {"Origin", "https://app.example.com"}}),
		get("wrong_auth_mode", "/v1/admin/users", [][2]string{{"X-API-Key", demoKey}}),
		get("tenant_header_missing", "/v1/orders", [][2]string{{"X-API-Key", demoKey}}),
		get("tenant_header_invalid", "/v1/orders", [][2]string{{"X-API-Key", demoKey}, {"X-Tenant-Id", "invalid-id"}}),
		get("tenant_forbidden", "/v1/orders", [][2]string{{"X-API-Key", demoKey}, {"X-Tenant-Id", "43"}}),
		// The tenant 7 allowlist is 10.0.0.0/8; the client is 127.0.0.1.
		get("ip_not_allowed", "/v1/orders", [][2]string{{"X-API-Key", tenant7Key}, {"X-Tenant-Id", "7"}}),
		{name: "scope_missing", request: request{method: "POST", path: "/v1/orders", headers: withKey(readonlyKey, [2]string{"Idempotency-Key", "k-1"})}},
		{name: "idempotency_key_missing", request: request{method: "POST", path: "/v1/orders", headers: withKey(demoKey)}},
		// Plan free allows 10 requests a minute: the 11th is refused. The
		// clock is testNow (12:00:00), so the minute window resets in 60s.
		// Counters are per key id whatever the host, hence a fresh stack
		// per profile (prime).
		{name: "rate_limited", request: request{method: "GET", path: "/v1/orders", headers: withKey(freeKey)}, prime: 10},
		get("internal_error", "/v1/orders", bearer(panicToken)),
	}
}

// aidellyCases use Aidelly's own routes (bearer API keys, workspace and
// brand headers) for the variants its contract distinguishes.
func aidellyCases() []goldenCase {
	posts := func(name string, h ...[2]string) goldenCase {
		return goldenCase{name: name, request: request{method: "GET", path: "/v1/posts", headers: h}}
	}
	auth := [2]string{"Authorization", "Bearer " + aidellyKey}
	return []goldenCase{
		posts("tenant_header_missing.workspace", auth),
		posts("tenant_forbidden.workspace", auth, [2]string{"X-Workspace-Id", "ws_9"}),
		posts("tenant_forbidden.brand", auth, [2]string{"X-Workspace-Id", "ws_1"}, [2]string{"X-Brand-Id", "br_2"}),
		posts("wrong_auth_mode.header_key", [2]string{"X-API-Key", aidellyKey}, [2]string{"X-Workspace-Id", "ws_1"}),
	}
}

// envoyCases show what Envoy itself does with ambiguous paths and headers
// before (or instead of) asking the sidecar. They go to the catch-all host;
// Envoy's own 400s come in the profile's request_invalid envelope
// (local_reply_config).
func envoyCases() []goldenCase {
	get := func(name, path string, h [][2]string) goldenCase {
		return goldenCase{name: name, request: request{method: "GET", path: path, headers: h}}
	}
	return []goldenCase{
		// path_with_escaped_slashes_action: REJECT_REQUEST -> 400.
		get("envoy_rejects_escaped_slash", "/v1/orders%2F..%2Fadmin", withKey(demoKey)),
		get("envoy_rejects_escaped_backslash", "/v1/orders%5C..%5Cadmin", withKey(demoKey)),
		// normalize_path fails on an encoded NUL -> 400.
		get("envoy_rejects_encoded_nul", "/v1/orders%00", withKey(demoKey)),
		// headers_with_underscores_action: REJECT_REQUEST -> 400.
		get("envoy_rejects_underscore_header", "/v1/orders", [][2]string{{"X-API-Key", demoKey}, {"X_Tenant_Id", "42"}}),
		// normalize_path resolves ".." before routing: the sidecar sees
		// /v1/admin/users (JWT only) and refuses the API key.
		get("envoy_normalizes_dot_segments", "/v1/calls/../admin/users", [][2]string{{"X-API-Key", demoKey}}),
		// merge_slashes: //v1//orders is /v1/orders, allowed and forwarded.
		get("envoy_merges_slashes", "//v1//orders", withKey(demoKey)),
	}
}

// goldenSet is every golden file the tests produce, by relative path.
func goldenSet() map[string]goldenCase {
	out := map[string]goldenCase{}
	for _, ph := range profileHosts {
		cases := reasonCases()
		switch ph.profile {
		case "default":
			cases = append(cases, envoyCases()...)
		case "aidelly":
			cases = append(cases, aidellyCases()...)
		}
		for _, c := range cases {
			c.host = ph.host
			out[filepath.Join(ph.profile, c.name+".json")] = c
		}
	}
	return out
}

// recordedHeaders are the response headers a golden pins.
func recordedHeader(name string) bool {
	switch name {
	case "content-type", "www-authenticate", "x-request-id", "retry-after":
		return true
	}
	return strings.HasPrefix(name, "x-ratelimit-")
}

type goldenRequest struct {
	Method  string         `json:"method"`
	Path    string         `json:"path"`
	Headers map[string]any `json:"headers"`
}

type golden struct {
	Request goldenRequest   `json:"request"`
	Status  int             `json:"status"`
	Headers map[string]any  `json:"headers"`
	Body    json.RawMessage `json:"body"`
}

// oneOrMany is a string for one value, a list for repeated ones.
func oneOrMany(vs []string) any {
	if len(vs) == 1 {
		return vs[0]
	}
	return vs
}

// record turns a response into its golden form. The request id Envoy
// generated (seen in the CheckRequest) becomes "<request-id>" in headers
// and body.
func record(t *testing.T, c goldenCase, resp response, reqID string) golden {
	t.Helper()
	norm := func(s string) string {
		if reqID == "" {
			return s
		}
		return strings.ReplaceAll(s, reqID, "<request-id>")
	}
	g := golden{
		Request: goldenRequest{Method: c.method, Path: c.path, Headers: map[string]any{"Host": c.host}},
		Status:  resp.status,
		Headers: map[string]any{},
	}
	reqHeaders := map[string][]string{}
	for _, h := range c.headers {
		reqHeaders[h[0]] = append(reqHeaders[h[0]], h[1])
	}
	for k, vs := range reqHeaders {
		g.Request.Headers[k] = oneOrMany(vs)
	}
	for k, vs := range resp.header {
		if lk := strings.ToLower(k); recordedHeader(lk) {
			for i := range vs {
				vs[i] = norm(vs[i])
			}
			g.Headers[lk] = oneOrMany(vs)
		}
	}
	body := norm(string(resp.body))
	switch {
	case body == "":
		g.Body = json.RawMessage("null")
	case strings.Contains(resp.header.Get("Content-Type"), "json"):
		if !json.Valid([]byte(body)) {
			t.Fatalf("content-type %q but the body is not JSON: %q", resp.header.Get("Content-Type"), body)
		}
		g.Body = json.RawMessage(body)
	default:
		b, _ := json.Marshal(body) // a text body is pinned as a JSON string
		g.Body = b
	}
	return g
}

// TestGolden sends every golden request through the shipped Envoy config
// to the real sidecar and compares the client's view with
// testdata/golden/<profile>/<case>.json by meaning (JSON equality).
func TestGolden(t *testing.T) { runGolden(t, shippedFront, false) }

// The same files, through an HTTP/2 (h2c) client.
func TestGoldenH2C(t *testing.T) { runGolden(t, shippedFront, true) }

// The same files with Envoy sending header_map (encode_raw_headers: true).
func TestGoldenEncodeRawHeaders(t *testing.T) {
	runGolden(t, rawHeadersFront, false)
}

// The same files with Envoy buffering every request body for the sidecar.
func TestGoldenWithRequestBody(t *testing.T) { runGolden(t, withBodyFront, false) }

func runGolden(t *testing.T, v frontVariant, h2c bool) {
	newStack := func(t *testing.T) *stack {
		s := newStackOn(t, v)
		if h2c {
			s.useH2C(t)
		}
		return s
	}
	update := *update && v.name == shippedFront.name && !h2c
	s := newStack(t)
	set := goldenSet()
	for _, name := range slices.Sorted(maps.Keys(set)) {
		c := set[name]
		t.Run(strings.TrimSuffix(name, ".json"), func(t *testing.T) {
			s := s
			if c.prime > 0 {
				s = newStack(t)
				for i := range c.prime {
					if resp := s.do(t, c.request); resp.status != 200 {
						t.Fatalf("priming request %d of %d: status %d: %s", i+1, c.prime, resp.status, resp.body)
					}
				}
				if got := s.echo.Count(); got != c.prime {
					t.Fatalf("upstream saw %d priming requests, want %d", got, c.prime)
				}
			}
			before := s.echo.Count()
			if h2c && c.name == "envoy_rejects_underscore_header" {
				// HTTP/2: Envoy resets the stream instead of answering 400.
				if _, err := s.try(t, c.request); err == nil || !strings.Contains(err.Error(), "stream error") {
					t.Errorf("err = %v, want the stream reset", err)
				}
				if s.echo.Count() != before {
					t.Error("forwarded upstream")
				}
				return
			}
			resp := s.do(t, c.request)
			reqID := s.requestID()
			forwarded := s.echo.Count() != before
			if forwarded != (resp.status == 200) {
				t.Errorf("status %d but forwarded upstream = %v", resp.status, forwarded)
			}
			// The body arrives exactly as the sidecar rendered it: one line
			// of compact JSON.
			if ct := resp.header.Get("Content-Type"); strings.Contains(ct, "json") {
				var buf bytes.Buffer
				if err := json.Compact(&buf, resp.body); err != nil {
					t.Fatalf("body is not JSON: %v\n%s", err, resp.body)
				}
				if !bytes.Equal(buf.Bytes(), resp.body) || bytes.ContainsAny(resp.body, "\r\n") {
					t.Errorf("body is not single-line compact JSON:\n%s", resp.body)
				}
			}
			if reqID != "" {
				if got := resp.header.Get("X-Request-Id"); got != "" && got != reqID {
					t.Errorf("x-request-id %q is not the one Envoy generated (%q)", got, reqID)
				}
			}
			got := record(t, c, resp, reqID)
			path := filepath.Join(goldenDir, name)
			if update {
				writeGolden(t, path, got)
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test ./internal/e2e -update)", err)
			}
			compareGolden(t, path, want, got)
		})
	}
}

func writeGolden(t *testing.T, path string, g golden) {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // keep "<request-id>" readable
	enc.SetIndent("", "  ")
	if err := enc.Encode(g); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func compareGolden(t *testing.T, path string, want []byte, got golden) {
	t.Helper()
	var w, g any
	if err := json.Unmarshal(want, &w); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	b, _ := json.Marshal(got)
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(w, g); diff != "" {
		t.Errorf("%s differs (-golden +got); if intended, run go test ./internal/e2e -update\n%s", path, diff)
	}
}

// TestGoldenFilesComplete: the files under testdata/golden are exactly the
// ones the tests produce; -update deletes stale ones.
func TestGoldenFilesComplete(t *testing.T) {
	want := goldenSet()
	var stale []string
	found := map[string]bool{}
	err := filepath.WalkDir(goldenDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(goldenDir, p)
		found[rel] = true
		if _, ok := want[rel]; !ok {
			stale = append(stale, rel)
		}
		return nil
	})
	if err != nil && !(*update && os.IsNotExist(err)) {
		t.Fatal(err)
	}
	if *update {
		for _, rel := range stale {
			if err := os.Remove(filepath.Join(goldenDir, rel)); err != nil {
				t.Error(err)
			}
		}
		return
	}
	for _, rel := range stale {
		t.Errorf("stale golden file %s (no test produces it; run go test ./internal/e2e -update)", rel)
	}
	for _, rel := range slices.Sorted(maps.Keys(want)) {
		if !found[rel] {
			t.Errorf("missing golden file %s (run go test ./internal/e2e -update)", rel)
		}
	}
}
