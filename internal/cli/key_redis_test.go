package cli

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/extauthz/extauthz/internal/authn/apikey"
	"github.com/extauthz/extauthz/internal/testutil/redistest"
)

// The key commands against a Redis key store: create, import, revoke,
// activate, delete; each result is what `extauthz check` then answers for
// a policy that looks keys up in that Redis.
func TestKeyCommandsWithRedis(t *testing.T) {
	srv := redistest.Start(t, "internal/cli")
	addr := srv.Addr()
	code, out, errOut := run(t, "", "key", "create", "--id", "cli-1", "--tenant", "42", "--scope", "orders:read", "--redis", addr)
	if code != 0 {
		t.Fatalf("create: %d %s %s", code, out, errOut)
	}
	key := regexp.MustCompile(`key: (\S+)`).FindStringSubmatch(out)[1]
	if !strings.Contains(out, "stored in redis") || strings.Contains(out, `"id"`) {
		t.Errorf("create --redis output:\n%s", out)
	}

	dir := t.TempDir()
	file := filepath.Join(dir, "keys.json")
	os.WriteFile(file, []byte(`{"`+apikey.Hash("xa_imported")+`": {"id": "imp", "tenants": ["42"], "scopes": ["orders:read"]}}`), 0o600)
	if code, out, errOut := run(t, "", "key", "import", "--redis", addr, "--file", file); code != 0 || !strings.Contains(out, "stored 1 records") {
		t.Fatalf("import: %d %s %s", code, out, errOut)
	}
	os.WriteFile(file, []byte(`{"xa_plaintext": {"id": "p"}}`), 0o600)
	if code, out, errOut := run(t, "", "key", "import", "--redis", addr, "--file", file); code == 0 || strings.Contains(out+errOut, "xa_plaintext") {
		t.Errorf("import of a plaintext key: %d %s %s", code, out, errOut)
	}

	// A policy dir whose keys are in this Redis.
	pol := filepath.Join(dir, "pol")
	os.MkdirAll(pol, 0o755)
	rego, _ := os.ReadFile("../../policies/extauthz.rego")
	os.WriteFile(filepath.Join(pol, "extauthz.rego"), rego, 0o600)
	os.WriteFile(filepath.Join(pol, "data.json"), []byte(`{"extauthz": {
	  "settings": {"api_keys_store": {"type": "redis", "addr": "`+addr+`"}},
	  "routes": [{"id": "orders-read", "methods": ["GET"], "path": "/v1/orders", "auth": ["api_key"], "scopes": ["orders:read"]}]}}`), 0o600)
	check := func(k string) (int, string) {
		code, out, errOut := run(t, "", "check", "--policy-dir", pol, "--curl", "curl -H 'X-API-Key: "+k+"' http://x/v1/orders")
		return code, out + errOut
	}
	for _, k := range []string{key, "xa_imported"} {
		if code, out := check(k); code != 0 {
			t.Errorf("check %s…: %d\n%s", k[:5], code, out)
		}
	}
	if code, out, errOut := run(t, key+"\n", "key", "revoke", "--redis", addr); code != 0 {
		t.Fatalf("revoke: %d %s %s", code, out, errOut)
	}
	if code, out := check(key); code != 2 || !strings.Contains(out, "key_revoked") {
		t.Errorf("after revoke: %d\n%s", code, out)
	}
	if code, _, _ := run(t, "", "key", "activate", "--redis", addr, "--digest", apikey.Hash(key)); code != 0 {
		t.Fatal("activate failed")
	}
	if code, out := check(key); code != 0 {
		t.Errorf("after activate: %d\n%s", code, out)
	}
	if code, _, _ := run(t, "xa_imported\n", "key", "delete", "--redis", addr); code != 0 {
		t.Fatal("delete failed")
	}
	if code, out := check("xa_imported"); code != 2 || !strings.Contains(out, "key_invalid") {
		t.Errorf("after delete: %d\n%s", code, out)
	}
	if code, _, errOut := run(t, "", "key", "revoke", "--redis", addr, "--digest", "xa_plain"); code == 0 || strings.Contains(errOut, "xa_plain") {
		t.Errorf("a plaintext --digest: %d %s", code, errOut)
	}
	srv.Kill()
	if code, out := check(key); code != 2 || !strings.Contains(out, "auth_unavailable") {
		t.Errorf("Redis down: %d\n%s", code, out)
	}
}
