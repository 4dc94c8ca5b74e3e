package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/extauthz/extauthz/internal/authn/apikey"
	"github.com/extauthz/extauthz/internal/envoybin"
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
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("deny output lacks %q:\n%s", want, out)
		}
	}
	// A CheckRequest as Envoy sends it, from stdin.
	code, out, _ = run(t, `{"attributes":{"source":{"address":{"socketAddress":{"address":"127.0.0.1"}}},"request":{"http":{"method":"GET","path":"/v1/orders","headers":{":path":"/v1/orders",":method":"GET"}}}}}`, "check", "--request", "-", "--json")
	if code != 0 || !strings.Contains(out, `"reason": "credentials_missing"`) || !strings.Contains(out, `"allow": false`) {
		t.Errorf("request JSON:\n%s", out)
	}
	// Envoy itself rejects escaped slashes before asking extauthz.
	code, _, errOut = run(t, "", "check", "--path", "/v1/orders%2F..%2Fadmin")
	if code != 1 || !strings.Contains(errOut, "Envoy itself would answer 400") {
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
	for _, want := range []string{"policy: FAIL", `routes[0] (x).auth[0]`, "FAIL", "failure_mode_allow"} {
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
