package authn

import "testing"

func TestHeaderSafe(t *testing.T) {
	for s, want := range map[string]bool{
		"": true, "svc-a": true, "user@example.com": true, "Zoë 42": true, "日本": true, "a\tb": false,
		"a\nb": false, "a\rb": false, "a\x00b": false, "a\x7fb": false, "a\u0085b": false, "a\xffb": false,
		"caf\xc3": false, "ok\u00a0ok": true, "\ufffd\ufffd": true, "\ufffd\xff": false,
	} {
		if got := HeaderSafe(s); got != want {
			t.Errorf("HeaderSafe(%q) = %v, want %v", s, got, want)
		}
		if got := HeaderSafe([]byte(s)); got != want {
			t.Errorf("HeaderSafe([]byte(%q)) = %v, want %v", s, got, want)
		}
	}
}

func TestScopeToken(t *testing.T) {
	for s, want := range map[string]bool{
		"orders:read": true, "https://api.example.com/read": true, "a!#[]~": true,
		"": false, "x admin": false, "a\tb": false, "a\u00a0b": false, `a"b`: false, `a\b`: false, "é": false, "a\nb": false,
	} {
		if got := ScopeToken(s); got != want {
			t.Errorf("ScopeToken(%q) = %v, want %v", s, got, want)
		}
	}
}

// TenantKey gives every (dimension, id) its own name, and CheckTenantKey
// accepts exactly the names it gives.
func TestTenantKey(t *testing.T) {
	dims := []string{"tenant", "workspace", "brand"}
	ids := []string{"7", "w1", "a:b", "tenant:7", "workspace:7", ":", "x:"}
	seen := map[string][2]string{}
	for _, d := range dims {
		for _, id := range ids {
			k := TenantKey(d, id)
			if prev, dup := seen[k]; dup {
				t.Errorf("TenantKey(%q, %q) = TenantKey(%q, %q) = %q", d, id, prev[0], prev[1], k)
			}
			seen[k] = [2]string{d, id}
			if err := CheckTenantKey(k); err != nil {
				t.Errorf("CheckTenantKey(TenantKey(%q, %q) = %q): %v", d, id, k, err)
			}
		}
	}
	if got := TenantKey("tenant", "42"); got != "42" {
		t.Errorf("TenantKey(tenant, 42) = %q, want 42", got)
	}
	if got := TenantKey("workspace", "42"); got != "workspace:42" {
		t.Errorf("TenantKey(workspace, 42) = %q, want workspace:42", got)
	}
	for _, bad := range []string{"", "tenant:42", ":42", "workspace:"} {
		if CheckTenantKey(bad) == nil {
			t.Errorf("CheckTenantKey(%q) = nil, want an error", bad)
		}
	}
}
