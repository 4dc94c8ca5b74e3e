package envoyconfig_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/extauthz/extauthz/internal/envoyconfig"
)

// FactsOf reads each HCM's trusted hops and each checked route's merged
// context_extensions; routes with ext_authz disabled are left out.
func TestFactsOf(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot, "envoy", "envoy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := envoyconfig.FactsOf(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(f.XFFHops) != 1 || f.XFFHops[0].Hops != 0 || !strings.HasSuffix(f.XFFHops[0].Path, ".typed_config.xff_num_trusted_hops") {
		t.Errorf("hops %+v", f.XFFHops)
	}
	var orders, healthz int
	for _, c := range f.Contexts {
		if c.Extensions["route"] == "orders-read" && c.Extensions["profile"] == "aidial" && c.Extensions["scopes"] == "orders:read" {
			orders++
		}
		if c.Extensions["route"] == "" && c.Extensions["profile"] == "" {
			t.Errorf("a route without context_extensions listed: %+v", c)
		}
		if strings.HasSuffix(c.Path, "routes[0]") {
			healthz++
		}
	}
	if orders != 1 || healthz != 0 {
		t.Errorf("aidial orders routes merged: %d, disabled /healthz routes listed: %d\n%+v", orders, healthz, f.Contexts)
	}
}
