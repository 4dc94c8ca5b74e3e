package envoytest

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

// shippedConfigs are every Envoy config the repository ships, by path
// relative to the module root. The Kubernetes one lives inside a ConfigMap
// and is extracted first.
var shippedConfigs = []string{
	"envoy/envoy.yaml",
	"envoy/envoy-sidecar.yaml",
	"deploy/k8s/configmap-envoy.yaml#envoy.yaml",
}

func root(t *testing.T) string {
	t.Helper()
	r, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// configMapData extracts one key of a ConfigMap's data.
func configMapData(t *testing.T, path, key string) []byte {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cm struct {
		Kind string            `json:"kind"`
		Data map[string]string `json:"data"`
	}
	if err := yaml.Unmarshal(raw, &cm); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if cm.Kind != "ConfigMap" || cm.Data[key] == "" {
		t.Fatalf("%s: not a ConfigMap with data.%s", path, key)
	}
	return []byte(cm.Data[key])
}

// TestShippedConfigsValidate runs `envoy --mode validate` on every shipped
// Envoy config. Validation needs no cluster address to resolve (STRICT_DNS
// names such as "extauthz" are only looked up when serving), so the files
// are validated exactly as shipped.
func TestShippedConfigsValidate(t *testing.T) {
	bin := Require(t)
	r := root(t)
	// Every *.yaml that looks like an Envoy bootstrap must be in the list.
	for _, dir := range []string{"envoy", "deploy"} {
		_ = filepath.WalkDir(filepath.Join(r, dir), func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(p, ".yaml") {
				return err
			}
			b, _ := os.ReadFile(p)
			if strings.Contains(string(b), "static_resources:") {
				rel, _ := filepath.Rel(r, p)
				found := false
				for _, c := range shippedConfigs {
					found = found || strings.SplitN(c, "#", 2)[0] == rel
				}
				if !found {
					t.Errorf("%s holds an Envoy config that TestShippedConfigsValidate does not validate", rel)
				}
			}
			return nil
		})
	}
	for _, c := range shippedConfigs {
		t.Run(c, func(t *testing.T) {
			path, key, embedded := strings.Cut(c, "#")
			file := filepath.Join(r, path)
			if embedded {
				file = filepath.Join(t.TempDir(), key)
				if err := os.WriteFile(file, configMapData(t, filepath.Join(r, path), key), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if err := Validate(bin, file); err != nil {
				t.Errorf("%s: %v", c, err)
			}
		})
	}
	// And the check itself refuses a broken config.
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("static_resources: {listeners: [{name: x, no_such_field: 1}]}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Validate(bin, bad); err == nil || !strings.Contains(err.Error(), "no_such_field") {
		t.Errorf("a config with an unknown field: %v", err)
	}
}

// TestVersionPinned: the Makefile, docker compose and the Kubernetes
// Deployment pin the same Envoy release as Version.
func TestVersionPinned(t *testing.T) {
	r := root(t)
	for file, re := range map[string]*regexp.Regexp{
		"Makefile":                   regexp.MustCompile(`(?m)^ENVOY_VERSION \?= (\S+)$`),
		"deploy/docker-compose.yml":  regexp.MustCompile(`envoyproxy/envoy:v(\S+)`),
		"deploy/k8s/deployment.yaml": regexp.MustCompile(`envoyproxy/envoy:v(\S+)`),
	} {
		b, err := os.ReadFile(filepath.Join(r, file))
		if err != nil {
			t.Fatal(err)
		}
		ms := re.FindAllStringSubmatch(string(b), -1)
		if len(ms) == 0 {
			t.Errorf("%s: no Envoy version pin found", file)
		}
		for _, m := range ms {
			if m[1] != Version {
				t.Errorf("%s pins Envoy %s, envoytest.Version is %s", file, m[1], Version)
			}
		}
	}
}

// TestStartShipped starts Envoy on envoy/envoy.yaml with loopback addresses
// and sends the one unauthenticated request (GET /healthz) to an upstream.
func TestStartShipped(t *testing.T) {
	bin := Require(t)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "up "+r.URL.Path)
	}))
	defer up.Close()
	b := Shipped(t, "envoy/envoy.yaml", map[string]string{"extauthz": "127.0.0.1:9", "upstream": strings.TrimPrefix(up.URL, "http://")})
	e := Start(t, bin, b)
	addr := e.Addr("ingress_http")
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "up /healthz" || resp.Header.Get("Server") != "envoy" {
		t.Errorf("GET /healthz: %d %q server=%q", resp.StatusCode, body, resp.Header.Get("Server"))
	}
	// Anything else needs the (unreachable) sidecar: fail closed, 503.
	resp, err = c.Get("http://" + addr + "/v1/orders")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("GET /v1/orders with the sidecar unreachable: %d, want 503", resp.StatusCode)
	}
	if n := e.Stat(t, "http.ingress_http.ext_authz.error"); n != 1 {
		t.Errorf("ext_authz.error = %d, want 1", n)
	}
}
