package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/authn/apikey"
	"github.com/extauthz/extauthz/internal/check"
	"github.com/extauthz/extauthz/internal/decisionlog"
	"github.com/extauthz/extauthz/internal/envoybin"
	"github.com/extauthz/extauthz/policies"
)

func run(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := Main(context.Background(), args, Env{Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errb, Getenv: func(string) string { return "" }})
	return code, out.String(), errb.String()
}

func TestCheckAllowAndDeny(t *testing.T) {
	code, out, errOut := run(t, "", "check", "--path", "/v1/orders", "-H", "X-API-Key: xa_demo_7Qm2vK9pL4sT8wZ1", "-H", "X-Tenant-Id: 42")
	if code != 0 || !strings.Contains(out, "decision:   ALLOW") || !strings.Contains(out, "set    x-auth-key-id: demo-orders") || !strings.Contains(out, "remove x-api-key") {
		t.Fatalf("allow (%d):\n%s%s", code, out, errOut)
	}
	if strings.Contains(out, "xa_demo_7Qm2vK9pL4sT8wZ1") {
		t.Error("the API key was echoed")
	}
	code, out, _ = run(t, "", "check", "--curl", "curl -s -H 'X-API-Key: xa_demo_7Qm2vK9pL4sT8wZ1' -H 'X-Tenant-Id: abc' http://dialektai.localhost/v1/orders", "--context", "profile=dialektai")
	for _, want := range []string{"decision:   DENY", "reason:     tenant_header_invalid (tenant)", "decided by: rule tenant_check", "HTTP/1.1 403 Forbidden", `"error_code":"AUTH_INSUFFICIENT_PERMISSIONS"`, `"message":"Received: 'abc'"`} {
		if code != 2 || !strings.Contains(out, want) {
			t.Errorf("deny (%d) output lacks %q:\n%s", code, want, out)
		}
	}
	// A CheckRequest as Envoy sends it, from stdin.
	code, out, _ = run(t, `{"attributes":{"source":{"address":{"socketAddress":{"address":"127.0.0.1"}}},"request":{"http":{"method":"GET","path":"/v1/orders","headers":{":path":"/v1/orders",":method":"GET"}}}}}`, "check", "--request", "-", "--json")
	if code != 2 || !strings.Contains(out, `"reason": "credentials_missing"`) || !strings.Contains(out, `"allow": false`) {
		t.Errorf("request JSON:\n%s", out)
	}
	// Envoy itself rejects escaped slashes before asking extauthz.
	code, _, errOut = run(t, "", "check", "--path", "/v1/orders%2F..%2Fadmin")
	if code != 1 || !strings.Contains(errOut, "Envoy itself answers 400") {
		t.Errorf("escaped slash: %d %s", code, errOut)
	}
}

func TestKey(t *testing.T) {
	code, out, _ := run(t, "", "key", "hash", "xa_demo_7Qm2vK9pL4sT8wZ1")
	if code != 0 || strings.TrimSpace(out) != "401c100ee890ccb08be251351e7d5bd06a48af11ee9e71f56ac7d69039cdd758" {
		t.Errorf("hash: %d %q", code, out)
	}
	if code, out, _ = run(t, "xa_demo_7Qm2vK9pL4sT8wZ1\n", "key", "hash"); strings.TrimSpace(out) != apikey.Hash("xa_demo_7Qm2vK9pL4sT8wZ1") {
		t.Errorf("hash from stdin: %d %q", code, out)
	}
	// --help is help, not a key to hash; another flag is refused.
	if code, out, _ = run(t, "", "key", "hash", "--help"); code != 0 || !strings.Contains(out, "extauthz key hash [KEY]") {
		t.Errorf("hash --help: %d %q", code, out)
	}
	if code, out, _ = run(t, "", "key", "hash", "--verbose"); code != 2 || out != "" {
		t.Errorf("hash --verbose: %d %q", code, out)
	}
	code, out, _ = run(t, "", "key", "create", "--id", "svc-billing", "--tenant", "42", "--scope", "orders:read", "--expires", "2030-01-01T00:00:00Z")
	if code != 0 {
		t.Fatalf("create: %d %s", code, out)
	}
	var key string
	for _, l := range strings.Split(out, "\n") {
		if k, ok := strings.CutPrefix(l, "key: "); ok {
			key = k
		}
	}
	if !strings.HasPrefix(key, "xa_") || len(key) < 20 || !strings.Contains(out, apikey.Hash(key)) || strings.Count(out, key) != 1 {
		t.Errorf("create output:\n%s", out)
	}
	if code, _, errOut := run(t, "", "key", "create", "--tenant", "1"); code != 1 || !strings.Contains(errOut, "--id is required") {
		t.Errorf("missing id: %d %s", code, errOut)
	}
}

func TestValidate(t *testing.T) {
	code, out, _ := run(t, "", "validate", "--envoy", "../../envoy/envoy.yaml")
	if code != 0 || !strings.Contains(out, "policy: ok") || !strings.Contains(out, "memoized=true, client_ip_traced=true") || !strings.Contains(out, "policy tests: ok") || !strings.Contains(out, "envoy ../../envoy/envoy.yaml: ok") {
		t.Fatalf("good (%d):\n%s", code, out)
	}
	// run's Getenv is empty: the project-local binary (make envoy) or one
	// on PATH is used when present, else the real validation is skipped.
	if _, err := envoybin.Find(func(string) string { return "" }, true); err == nil {
		if !strings.Contains(out, "envoy --mode validate: OK") {
			t.Errorf("an Envoy binary exists but did not validate:\n%s", out)
		}
	} else if !strings.Contains(out, "envoy --mode validate: skipped, no Envoy binary") {
		t.Errorf("no Envoy binary and no skip notice:\n%s", out)
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "p.rego"), []byte("package extauthz\n\ndecision := {\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "data.json"), []byte(`{"extauthz": {"routes": [{"id": "x", "path": "/a", "auth": ["magic"]}]}}`), 0o600)
	weak := filepath.Join(dir, "envoy.yaml")
	b, _ := os.ReadFile("../../envoy/envoy.yaml")
	os.WriteFile(weak, bytes.Replace(b, []byte("failure_mode_allow: false"), []byte("failure_mode_allow: true"), 1), 0o600)
	code, out, _ = run(t, "", "validate", "--policy-dir", dir, "--envoy", weak)
	for _, want := range []string{"policy: FAIL", `routes[0].auth[0]`, "FAIL", "failure_mode_allow"} {
		if code != 1 || !strings.Contains(out, want) {
			t.Errorf("bad (%d) lacks %q:\n%s", code, want, out)
		}
	}
}

// TestValidateRunsRealEnvoy: a config go-control-plane accepts but Envoy
// rejects  fails
// validation when an Envoy binary is found: an RE2 regex that does not
// compile, which only Envoy notices.
func TestValidateRunsRealEnvoy(t *testing.T) {
	if _, err := envoybin.Find(func(string) string { return "" }, true); err != nil {
		t.Skipf("no Envoy binary: %v", err)
	}
	dir := t.TempDir()
	bad := filepath.Join(dir, "envoy.yaml")
	b, _ := os.ReadFile("../../envoy/envoy.yaml")
	os.WriteFile(bad, bytes.Replace(b, []byte("- match: {prefix: /}"), []byte("- match: {safe_regex: {regex: \"/(unclosed\"}}\n                route: {cluster: upstream}\n              - match: {prefix: /}"), 1), 0o600)
	code, out, _ := run(t, "", "validate", "--envoy", bad)
	if code != 1 || !strings.Contains(out, "envoy --mode validate:") || !strings.Contains(out, "missing ): /(unclosed") {
		t.Errorf("(%d):\n%s", code, out)
	}
}

func TestUnknownCommandAndHelp(t *testing.T) {
	if code, _, errOut := run(t, "", "frobnicate"); code != 2 || !strings.Contains(errOut, "unknown command") {
		t.Errorf("%d %s", code, errOut)
	}
	if code, out, _ := run(t, "", "help"); code != 0 || !strings.Contains(out, "--grpc-addr") && !strings.Contains(out, "-grpc-addr") {
		t.Errorf("help: %d %s", code, out)
	}
	if code, _, errOut := run(t, "", "--grpc-addr", ""); code != 1 || !strings.Contains(errOut, "grpc-addr: required") {
		t.Errorf("bad config: %d %s", code, errOut)
	}
}

// check's exit status tells allow (0), deny (2) and error (1) apart, and its
// output shows the quota headers the client receives.
func TestCheckExitStatusAndQuotaHeaders(t *testing.T) {
	code, out, errOut := run(t, "", "check", "--path", "/v1/orders", "-H", "X-API-Key: xa_demo_readonly_K3n8Vb", "-H", "X-Tenant-Id: 42")
	if code != 0 || !strings.Contains(out, "decision:   ALLOW") {
		t.Fatalf("allow (%d):\n%s%s", code, out, errOut)
	}
	for _, want := range []string{"and adds to the response the client receives:", "  x-ratelimit-limit: 100", "  x-ratelimit-remaining: 99"} {
		if !strings.Contains(out, want) {
			t.Errorf("allow output lacks %q:\n%s", want, out)
		}
	}
	if code, out, _ := run(t, "", "check", "--path", "/v1/orders"); code != 2 || !strings.Contains(out, "decision:   DENY") {
		t.Errorf("deny: %d\n%s", code, out)
	}
	if code, _, errOut := run(t, "", "check", "--policy-dir", t.TempDir()); code != 1 || !strings.Contains(errOut, "no .rego files") {
		t.Errorf("error: %d %s", code, errOut)
	}
	// Every bad flag is reported, not only the first.
	code, _, errOut = run(t, "", "check", "--bogus", "1", "--xff-trusted-hops", "x", "--pth", "/")
	for _, want := range []string{"unknown flag -bogus", `invalid value "x" for flag -xff-trusted-hops`, "unknown flag -pth"} {
		if code != 1 || !strings.Contains(errOut, want) {
			t.Errorf("bad flags (%d) lack %q:\n%s", code, want, errOut)
		}
	}
}

func TestHelpPerCommand(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"help", "check"}, "Usage: extauthz check [flags]"},
		{[]string{"check", "--help"}, "Usage: extauthz check [flags]"},
		{[]string{"help", "validate"}, "Usage: extauthz validate"},
		{[]string{"validate", "--help"}, "Usage: extauthz validate"},
		{[]string{"validate", "-h"}, "-xff-trusted-hops"},
		{[]string{"help", "key"}, "extauthz key create"},
		{[]string{"key", "create", "--help"}, "-scope"},
		{[]string{"help", "serve"}, "-grpc-addr"},
		{[]string{"serve", "--help"}, "-grpc-addr"},
	}
	for _, c := range cases {
		code, out, errOut := run(t, "", c.args...)
		if code != 0 || !strings.Contains(out, c.want) || strings.Contains(out, "config: FAIL") {
			t.Errorf("%q: %d, stdout lacks %q:\n%s%s", c.args, code, c.want, out, errOut)
		}
	}
	if code, _, errOut := run(t, "", "help", "frobnicate"); code != 2 || !strings.Contains(errOut, "unknown command") {
		t.Errorf("help frobnicate: %d %s", code, errOut)
	}
	// serve reports every bad flag too.
	code, _, errOut := run(t, "", "--bogus", "--log-level", "loud", "--eval-timeout", "x")
	for _, want := range []string{"unknown flag -bogus", "eval-timeout"} {
		if code != 1 || !strings.Contains(errOut, want) {
			t.Errorf("serve bad flags (%d) lack %q:\n%s", code, want, errOut)
		}
	}
}

// validate checks an Envoy file against the sidecar's --xff-trusted-hops
// and the policy's routes and profiles.
func TestValidateEnvoyAgainstSettingsAndPolicy(t *testing.T) {
	code, out, _ := run(t, "", "validate", "--xff-trusted-hops", "1", "--envoy", "../../envoy/envoy.yaml")
	if code != 1 || !strings.Contains(out, "xff_num_trusted_hops: 0, but the sidecar's --xff-trusted-hops is 1; they must be equal") {
		t.Errorf("hops (%d):\n%s", code, out)
	}
	b, _ := os.ReadFile("../../envoy/envoy.yaml")
	cfg := string(b)
	edits := []struct{ from, to, want string }{
		{"route: orders-read\n", "route: orders-raed\n", `.context_extensions.route: unknown route id "orders-raed"`},
		{"context_extensions: {profile: aidial}", "context_extensions: {profile: aidail}", `.context_extensions.profile: unknown profile "aidail"`},
		{"context_extensions: {profile: aidial}", "context_extensions: {profle: aidial}", `.context_extensions.profle: not a key extauthz reads (known: route, profile, auth, scopes,`},
		// calls has no tenant headers: tenant_required alone cannot apply.
		{"route: orders-read\n                        scopes: \"orders:read\"", "route: calls\n                        tenant_required: \"true\"", `sets tenant_required/tenant_format, but policy route "calls" has no tenant_headers`},
		{"route: orders-read\n                        scopes: \"orders:read\"", "route: orders-read\n                        tenant_format: roman", `on policy route "orders-read": context_extensions: tenant_headers[0].format: "roman" is not one of`},
		// A route without a Check that lets a client's own identity header through.
		{"request_headers_to_remove: [x-auth-subject, x-auth-key-id, x-auth-tenant,", "request_headers_to_remove: [x-auth-subject, x-auth-key-id,", `.routes[0].request_headers_to_remove: lacks "x-auth-tenant": ext_authz is off on this route`},
		{"x-method-override, x-original-url, x-rewrite-url,", "x-method-override, x-rewrite-url,", `.routes[0].request_headers_to_remove: lacks "x-original-url": ext_authz is off on this route`},
		{"x-rewrite-url, x-tenant-id, x-workspace-id, x-brand-id]", "x-rewrite-url, x-workspace-id, x-brand-id]", `.routes[0].request_headers_to_remove: lacks "x-tenant-id": ext_authz is off on this route`},
		// A tenant header only an Envoy route declares: other routes would pass it on.
		{"route: orders-read\n                        scopes: \"orders:read\"", "route: orders-read\n                        tenant_header: X-Org-Id", `on policy route "orders-read": tenant header "X-Org-Id" is declared by no route of the policy`},
		// A declared tenant header checked in another dimension than the policy's.
		{"route: orders-read\n                        scopes: \"orders:read\"", "route: orders-read\n                        tenant_header: X-Workspace-Id", `tenant header "X-Workspace-Id" is checked in dimension "tenant" here, but the policy's routes check it in dimension "workspace"`},
		// Envoy's own reply no longer what the profile says.
		{"A required AiDial service is unavailable. Retry with backoff.", "Service unavailable.", `.local_reply_config: the replies Envoy makes itself (sidecar unreachable or late, 400, 413, 431) are not in the virtual hosts' envelopes, or the mappers are stale: run extauthz local-replies --envoy`},
		// A virtual host whose profile changed.
		{"context_extensions: {profile: aidial}", "context_extensions: {profile: problem}", `mappers are stale`},
	}
	for _, e := range edits {
		if !strings.Contains(cfg, e.from) {
			t.Fatalf("envoy/envoy.yaml lacks %q: update the test", e.from)
		}
		f := filepath.Join(t.TempDir(), "envoy.yaml")
		os.WriteFile(f, []byte(strings.Replace(cfg, e.from, e.to, 1)), 0o600)
		code, out, _ := run(t, "", "validate", "--envoy", f)
		if code != 1 || !strings.Contains(out, e.want) || !strings.Contains(out, "internal_error") && !strings.Contains(e.want, "profile") && !strings.Contains(e.want, "ext_authz is off") && !strings.Contains(e.want, "stale") {
			t.Errorf("%s -> %s (%d): lacks %q:\n%s", e.from, e.to, code, e.want, out)
		}
	}
}

// extauthz local-replies writes the local_reply_config the shipped config
// has into a copy without one, prints it, and refuses a file it cannot
// place it in.
func TestLocalRepliesWritesTheShippedMappers(t *testing.T) {
	shipped, _ := os.ReadFile("../../envoy/envoy.yaml")
	start := strings.Index(string(shipped), "          local_reply_config:\n")
	end := strings.Index(string(shipped), "\n  clusters:")
	if start < 0 || end < start {
		t.Fatal("envoy/envoy.yaml has no local_reply_config before its clusters")
	}
	f := filepath.Join(t.TempDir(), "envoy.yaml")
	os.WriteFile(f, []byte(string(shipped[:start])+"\n"+string(shipped[end+1:])), 0o600)
	if code, out, _ := run(t, "", "validate", "--envoy", f); code != 1 || !strings.Contains(out, "mappers are stale") {
		t.Errorf("validate without mappers (%d):\n%s", code, out)
	}
	if code, out, errOut := run(t, "", "local-replies", "--envoy", f, "--write"); code != 0 || !strings.Contains(out, "local_reply_config written (9 hosts)") {
		t.Fatalf("write (%d): %s%s", code, out, errOut)
	}
	if got, _ := os.ReadFile(f); string(got) != string(shipped) {
		t.Errorf("written file differs from envoy/envoy.yaml")
	}
	code, out, _ := run(t, "", "local-replies", "--envoy", f)
	if code != 0 || !strings.Contains(out, "local_reply_config:\n") || !strings.Contains(out, "# auth_unavailable on aidial.localhost: aidial") {
		t.Errorf("print (%d):\n%.400s", code, out)
	}
	if code, _, _ := run(t, "", "local-replies"); code != 2 {
		t.Errorf("no --envoy: exit %d, want 2", code)
	}
	if code, out, _ := run(t, "", "help", "local-replies"); code != 0 || !strings.Contains(out, "Usage: extauthz local-replies") {
		t.Errorf("help (%d): %s", code, out)
	}
}

// A policy's own tests run with its data.json, one line per test, details
// of failures, and coverage on request.
func TestValidateRunsPolicyTestsWithData(t *testing.T) {
	dir := t.TempDir()
	rego, _ := os.ReadFile("../../policies/extauthz.rego")
	data, _ := os.ReadFile("../../policies/data.json")
	os.WriteFile(filepath.Join(dir, "extauthz.rego"), rego, 0o600)
	os.WriteFile(filepath.Join(dir, "data.json"), data, 0o600)
	tests := `package extauthz_own_test

import data.extauthz

test_reads_routes if count(data.extauthz.routes) == 7

test_reads_api_keys if data.extauthz.api_keys["401c100ee890ccb08be251351e7d5bd06a48af11ee9e71f56ac7d69039cdd758"].id == "demo-orders"

test_reads_tenants if data.extauthz.tenants["7"].allowed_cidrs == ["10.0.0.0/8"]
`
	os.WriteFile(filepath.Join(dir, "own_test.rego"), []byte(tests), 0o600)
	code, out, _ := run(t, "", "validate", "--policy-dir", dir, "--coverage")
	for _, want := range []string{
		"  PASS  data.extauthz_own_test.test_reads_routes", "  PASS  data.extauthz_own_test.test_reads_api_keys", "  PASS  data.extauthz_own_test.test_reads_tenants",
		"own_test.rego:5", "coverage " + dir + "/extauthz.rego: ", "policy tests: ok (3 passed)",
	} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("passing (%d) lacks %q:\n%s", code, want, out)
		}
	}
	os.WriteFile(filepath.Join(dir, "own_test.rego"), []byte(tests+"\ntest_fails if count(data.extauthz.routes) == 3\n"), 0o600)
	code, out, _ = run(t, "", "validate", "--policy-dir", dir)
	for _, want := range []string{"  FAIL  data.extauthz_own_test.test_fails", "details of the failures:", "count(data.extauthz.routes) == 3", "policy tests: FAIL (3 passed, 1 failed)"} {
		if code != 1 || !strings.Contains(out, want) {
			t.Errorf("failing (%d) lacks %q:\n%s", code, want, out)
		}
	}
	if strings.Contains(out, "coverage") {
		t.Errorf("coverage without --coverage:\n%s", out)
	}
	// A builtin that fails fails the test, as it fails the check in the
	// server (strict builtin errors): a deny rule that errors never passes
	// for one that does not fire.
	os.WriteFile(filepath.Join(dir, "own_test.rego"), []byte(tests+"\ntest_builtin_error if not net.cidr_contains(\"127.0.0.0/88\", \"127.0.0.1\")\n"), 0o600)
	if code, out, _ = run(t, "", "validate", "--policy-dir", dir); code != 1 || !strings.Contains(out, "test_builtin_error") || !strings.Contains(out, "policy tests: FAIL") {
		t.Errorf("a test whose builtin fails (%d):\n%s", code, out)
	}
}

// validate refuses what the server would refuse: a version without routes
// or credentials.
func TestValidateRefusesEmptyData(t *testing.T) {
	dir := t.TempDir()
	rego, _ := os.ReadFile("../../policies/extauthz.rego")
	os.WriteFile(filepath.Join(dir, "extauthz.rego"), rego, 0o600)
	os.WriteFile(filepath.Join(dir, "data.json"), []byte(`{"extauthz": {"routes": []}}`), 0o600)
	code, out, _ := run(t, "", "validate", "--policy-dir", dir)
	if code != 1 || !strings.Contains(out, "policy: FAIL") || !strings.Contains(out, "refused: no routes") {
		t.Errorf("empty (%d):\n%s", code, out)
	}
}

// extauthz check compares a candidate policy with the serving one, on one
// request or on a file of recorded CheckRequests (exit 2 when they differ).
func TestCheckComparesACandidate(t *testing.T) {
	dir := t.TempDir()
	rego, _ := os.ReadFile("../../policies/extauthz.rego")
	data, _ := os.ReadFile("../../policies/data.json")
	stricter := strings.Replace(string(rego), "} else := allow if {\n\troute.public", "} else := deny(\"key_revoked\") if {\n\tidentity.key_id == \"demo-readonly\"\n} else := allow if {\n\troute.public", 1)
	os.WriteFile(filepath.Join(dir, "extauthz.rego"), []byte(stricter), 0o600)
	os.WriteFile(filepath.Join(dir, "data.json"), data, 0o600)

	code, out, _ := run(t, "", "check", "--candidate-dir", dir, "--path", "/v1/orders", "-H", "X-API-Key: xa_demo_readonly_K3n8Vb", "-H", "X-Tenant-Id: 42")
	if code != 0 || !strings.Contains(out, "candidate:  DENY key_revoked") {
		t.Fatalf("one request: exit %d\n%s", code, out)
	}
	req := func(key string) string {
		return `{"attributes": {"source": {"address": {"socketAddress": {"address": "127.0.0.1"}}}, "request": {"http": {"method": "GET", "path": "/v1/orders", "headers": {":method": "GET", ":path": "/v1/orders", "x-api-key": "` + key + `", "x-tenant-id": "42"}}}}}`
	}
	file := filepath.Join(t.TempDir(), "requests.jsonl")
	os.WriteFile(file, []byte(req("xa_demo_7Qm2vK9pL4sT8wZ1")+"\n"+req("xa_demo_readonly_K3n8Vb")+"\n"), 0o600)
	code, out, _ = run(t, "", "check", "--candidate-dir", dir, "--requests", file)
	if code != 2 || !strings.Contains(out, ":2: GET /v1/orders: serving ALLOW ok, candidate DENY key_revoked") ||
		!strings.Contains(out, "ALLOW ok -> ALLOW ok: 1") || !strings.Contains(out, "ALLOW ok -> DENY key_revoked: 1") {
		t.Fatalf("file: exit %d\n%s", code, out)
	}
	// The same policy on both sides: no difference, exit 0.
	if code, out, _ = run(t, "", "check", "--candidate-dir", "../../policies", "--requests", file); code != 0 {
		t.Fatalf("identical policies: exit %d\n%s", code, out)
	}
}

// TestDemoMoved: the demo left the product binary; `extauthz demo` says where it went.
func TestDemoMoved(t *testing.T) {
	code, _, errOut := run(t, "", "demo")
	if code != 2 || !strings.Contains(errOut, "cmd/extauthz-demo") {
		t.Errorf("demo: %d %s", code, errOut)
	}
}

// extauthz check --decision-log replays the sidecar's own decision records
// (written with facts) on the policy and a candidate: counts by verdict,
// each difference, exit 2 on a difference and 3 when lines could not be
// replayed or read.
func TestCheckReplaysADecisionLog(t *testing.T) {
	ctx := context.Background()
	eng, err := loadEngine(ctx, "", "")
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	var log bytes.Buffer
	srv := offlineServer(eng, 0)
	l := decisionlog.New(slog.New(slog.NewJSONHandler(&log, nil)), "all", 1)
	l.Facts = true
	srv.Observers = []check.Observer{l}
	for _, c := range []struct{ method, key, idem string }{
		{"GET", "xa_demo_7Qm2vK9pL4sT8wZ1", ""}, {"GET", "xa_demo_readonly_K3n8Vb", ""}, {"POST", "xa_demo_readonly_K3n8Vb", "k1"}, {"GET", "xa_nope", ""},
	} {
		r, _ := http.NewRequest(c.method, "http://api.example.com/v1/orders", nil)
		r.Header.Set("X-API-Key", c.key)
		r.Header.Set("X-Tenant-Id", "42")
		if c.idem != "" {
			r.Header.Set("Idempotency-Key", c.idem)
		}
		r.RemoteAddr = "127.0.0.1:40000"
		req, err := envoyRequest(r)
		if err != nil {
			t.Fatal(err)
		}
		srv.Check(ctx, req)
	}
	file := filepath.Join(t.TempDir(), "decisions.jsonl")
	os.WriteFile(file, log.Bytes(), 0o600)

	if _, help, _ := run(t, "", "help", "check"); !strings.Contains(help, "-decision-log") || !strings.Contains(help, "3 when\nnone differ") {
		t.Errorf("extauthz help check does not document --decision-log:\n%s", help)
	}
	code, out, errOut := run(t, "", "check", "--decision-log", file)
	for _, want := range []string{"recorded -> replayed: records", "  ok -> ok: 2", "  scope_missing -> scope_missing: 1", "  key_invalid -> key_invalid: 1"} {
		if code != 0 || !strings.Contains(out, want) {
			t.Fatalf("same policy: exit %d, want %q\n%s%s", code, want, out, errOut)
		}
	}
	if strings.Contains(log.String(), "xa_demo_") || strings.Contains(log.String(), "xa_nope") {
		t.Fatalf("the decision log holds a key:\n%s", log.String())
	}

	dir := t.TempDir()
	rego, _ := os.ReadFile("../../policies/extauthz.rego")
	data, _ := os.ReadFile("../../policies/data.json")
	stricter := strings.Replace(string(rego), "} else := allow if {\n\troute.public", "} else := deny(\"key_revoked\") if {\n\tidentity.key_id == \"demo-readonly\"\n} else := allow if {\n\troute.public", 1)
	os.WriteFile(filepath.Join(dir, "extauthz.rego"), []byte(stricter), 0o600)
	os.WriteFile(filepath.Join(dir, "data.json"), data, 0o600)
	code, out, _ = run(t, "", "check", "--decision-log", file, "--candidate-dir", dir)
	if code != 2 || !strings.Contains(out, ":2: decision ") || !strings.Contains(out, " GET /v1/orders: recorded ok, serving ok, candidate key_revoked") ||
		!strings.Contains(out, "  ok -> ok -> key_revoked: 1") || !strings.Contains(out, "  scope_missing -> scope_missing -> scope_missing: 1") || !strings.Contains(out, "  ok -> ok -> ok: 1") {
		t.Fatalf("candidate: exit %d\n%s", code, out)
	}
	code, out, _ = run(t, "", "check", "--decision-log", file, "--policy-dir", dir)
	if code != 2 || !strings.Contains(out, "recorded ok, replayed key_revoked") {
		t.Fatalf("changed policy: exit %d\n%s", code, out)
	}

	// A truncated line and a record without facts: reported, exit 3.
	lines := strings.SplitAfter(log.String(), "\n")
	bad := lines[0][:len(lines[0])/2] + "\n" + `{"msg":"decision","reason":"ok","decision_id":"d9"}` + "\n" + strings.Join(lines[1:], "")
	os.WriteFile(file, []byte(bad), 0o600)
	code, out, _ = run(t, "", "check", "--decision-log", file)
	if code != 3 || !strings.Contains(out, ":1: unreadable: not a JSON object") || !strings.Contains(out, ":2: decision d9: not replayable: the record carries no facts") ||
		!strings.Contains(out, "unreadable: 1") || !strings.Contains(out, "not replayable: 1") {
		t.Fatalf("bad lines: exit %d\n%s", code, out)
	}
}

// Inputs a script could get wrong are refused, naming the flag; an unknown
// key subcommand says so.
func TestCheckInputsAndKeySubcommand(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"check", "--source", "notanip", "--path", "/healthz"}, `--source "notanip": not an IP address`},
		{[]string{"check", "--path", "v1/orders"}, `--path "v1/orders": must start with /`},
		{[]string{"check", "--curl", "wget http://api.example.com/healthz"}, `--curl: want a curl command line`},
	} {
		code, out, errOut := run(t, "", c.args...)
		if code != 1 || !strings.Contains(out+errOut, c.want) {
			t.Errorf("%v: exit %d\n%s%s\nwant exit 1 and %q", c.args, code, out, errOut, c.want)
		}
	}
	if code, _, errOut := run(t, "", "key", "bogus"); code != 2 || !strings.Contains(errOut, `unknown subcommand "bogus"`) {
		t.Errorf("key bogus: exit %d\n%s", code, errOut)
	}
}

// check shows a shadowed deny: what the policy decided and what an
// enforced deny would send.
func TestCheckShowsShadowedDeny(t *testing.T) {
	code, out, _ := run(t, "", "check", "--curl", "curl -H 'X-API-Key: xa_demo_revoked_T9w4Lm' -H 'X-Tenant-Id: 42' http://x/v1/orders", "--context", "shadow=*")
	if code != 0 || !strings.Contains(out, "decision:   ALLOW") || !strings.Contains(out, "shadowed:   key_revoked (401)") || !strings.Contains(out, `"code":"key_revoked"`) {
		t.Errorf("exit %d:\n%s", code, out)
	}
}

// extauthz check decides as the server would also for an issuer whose keys
// come from a JWKS URL: it waits for the first fetch (as the server's
// readiness does) instead of deciding without keys (auth_unavailable).
func TestCheckWaitsForJWKSURL(t *testing.T) {
	jwks, err := os.ReadFile("../../testdata/demo_jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	token, err := os.ReadFile("../../testdata/demo.jwt")
	if err != nil {
		t.Fatal(err)
	}
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		time.Sleep(50 * time.Millisecond) // as a real provider, not instant
		w.Header().Set("Content-Type", "application/json")
		w.Write(jwks)
	}))
	defer idp.Close()
	dir := t.TempDir()
	ents, err := fs.ReadDir(policies.FS, ".")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if n := e.Name(); strings.HasSuffix(n, ".rego") && !strings.HasSuffix(n, "_test.rego") {
			b, _ := fs.ReadFile(policies.FS, n)
			if err := os.WriteFile(filepath.Join(dir, n), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	b, _ := fs.ReadFile(policies.FS, "data.json")
	var data map[string]any
	if err := json.Unmarshal(b, &data); err != nil {
		t.Fatal(err)
	}
	is := data["extauthz"].(map[string]any)["jwt"].(map[string]any)["issuers"].([]any)[0].(map[string]any)
	delete(is, "jwks")
	is["jwks_url"] = idp.URL
	b, _ = json.Marshal(data)
	if err := os.WriteFile(filepath.Join(dir, "data.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := run(t, "", "check", "--policy-dir", dir, "--path", "/v1/orders", "-H", "Authorization: Bearer "+strings.TrimSpace(string(token)), "-H", "X-Tenant-Id: 42")
	if code != 0 || !strings.Contains(out, "decision:   ALLOW") {
		t.Fatalf("demo JWT, keys from a JWKS URL (%d):\n%s%s", code, out, errOut)
	}
}
