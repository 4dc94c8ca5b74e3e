// Package envoytest runs the real Envoy binary in tests: it finds the binary
// (ENVOY_BIN, else the copy `make envoy` puts in .envoy/<Version>/ at the
// module root), rewrites a shipped bootstrap's addresses onto loopback and
// starts Envoy on it, one process per config, killed by t.Cleanup.
//
// It is test tooling: nothing under cmd/ imports it for serving.
//
// Where no binary is found, Require skips the test with one loud line;
// with EXTAUTHZ_REQUIRE_ENVOY=1 (CI) a missing binary fails the test.
package envoytest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/extauthz/extauthz/internal/envoybin"
)

// Version is the pinned Envoy release (see envoybin.Version).
const Version = envoybin.Version

// RequireEnv names the variable that turns a missing binary into a failure.
const RequireEnv = "EXTAUTHZ_REQUIRE_ENVOY"

// ModuleRoot is the directory holding go.mod.
func ModuleRoot() (string, error) {
	if r := envoybin.ModuleRoot(); r != "" {
		return r, nil
	}
	return "", errors.New("no go.mod above the working directory")
}

// Binary returns the Envoy binary: $ENVOY_BIN when set (it must exist),
// else <module root>/.envoy/<Version>/envoy/_bin/envoy. $PATH is not
// searched: the tests pin a version.
func Binary() (string, error) { return envoybin.Find(os.Getenv, false) }

// Require returns the binary, or skips the test (fails it when
// EXTAUTHZ_REQUIRE_ENVOY=1) saying what is missing.
func Require(t testing.TB) string {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		if os.Getenv(RequireEnv) == "1" {
			t.Fatalf("REAL ENVOY REQUIRED (%s=1) BUT MISSING: %v", RequireEnv, err)
		}
		t.Skipf("!!! SKIPPED, NO REAL ENVOY: %v", err)
	}
	return bin
}

// Validate runs `envoy --mode validate` on the config file path.
func Validate(bin, path string) error { return envoybin.Validate(bin, path) }

// Bootstrap is an Envoy bootstrap as generic JSON values, to be edited
// before Start.
type Bootstrap map[string]any

// LoadBootstrap reads a YAML (or JSON) bootstrap file.
func LoadBootstrap(path string) (Bootstrap, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseBootstrap(data)
}

// ParseBootstrap parses YAML (or JSON) bootstrap text.
func ParseBootstrap(data []byte) (Bootstrap, error) {
	j, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, err
	}
	var b Bootstrap
	if err := json.Unmarshal(j, &b); err != nil {
		return nil, err
	}
	return b, nil
}

// Clone deep-copies b.
func (b Bootstrap) Clone() Bootstrap {
	j, _ := json.Marshal(b)
	var c Bootstrap
	_ = json.Unmarshal(j, &c)
	return c
}

// Loopback puts the admin interface and every listener on 127.0.0.1 with a
// kernel-chosen port (Start reads the ports back from the admin API) and
// points each named cluster's endpoints at addrs[name] ("host:port").
// Nothing else changes. A cluster missing from addrs is an error.
func (b Bootstrap) Loopback(addrs map[string]string) error {
	any0 := map[string]any{"address": "127.0.0.1", "port_value": 0}
	b["admin"] = map[string]any{"address": map[string]any{"socket_address": any0}}
	sr, _ := b["static_resources"].(map[string]any)
	for _, l := range list(sr["listeners"]) {
		l["address"] = map[string]any{"socket_address": map[string]any{"address": "127.0.0.1", "port_value": 0}}
	}
	seen := map[string]bool{}
	for _, c := range list(sr["clusters"]) {
		name, _ := c["name"].(string)
		addr, ok := addrs[name]
		if !ok {
			return fmt.Errorf("cluster %q: no address given", name)
		}
		seen[name] = true
		host, port, err := splitHostPort(addr)
		if err != nil {
			return fmt.Errorf("cluster %q: %w", name, err)
		}
		la, _ := c["load_assignment"].(map[string]any)
		if la == nil {
			return fmt.Errorf("cluster %q: no load_assignment", name)
		}
		la["endpoints"] = []any{map[string]any{"lb_endpoints": []any{map[string]any{"endpoint": map[string]any{
			"address": map[string]any{"socket_address": map[string]any{"address": host, "port_value": port}},
		}}}}}
	}
	for name := range addrs {
		if !seen[name] {
			return fmt.Errorf("no cluster %q in the bootstrap", name)
		}
	}
	return nil
}

func splitHostPort(addr string) (string, int, error) {
	i := strings.LastIndexByte(addr, ':')
	if i < 0 {
		return "", 0, fmt.Errorf("address %q has no port", addr)
	}
	var port int
	if _, err := fmt.Sscanf(addr[i+1:], "%d", &port); err != nil {
		return "", 0, fmt.Errorf("address %q: %w", addr, err)
	}
	return addr[:i], port, nil
}

func list(v any) []map[string]any {
	var out []map[string]any
	for _, e := range asSlice(v) {
		if m, ok := e.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

func asSlice(v any) []any { s, _ := v.([]any); return s }

// Listeners returns the listeners (to append or edit).
func (b Bootstrap) Listeners() []map[string]any {
	sr, _ := b["static_resources"].(map[string]any)
	return list(sr["listeners"])
}

// AddListener appends a listener.
func (b Bootstrap) AddListener(l map[string]any) {
	sr, _ := b["static_resources"].(map[string]any)
	sr["listeners"] = append(asSlice(sr["listeners"]), l)
}

// HCM returns the typed_config of the listener's (first) HTTP connection manager.
func HCM(listener map[string]any) map[string]any {
	for _, fc := range list(listener["filter_chains"]) {
		for _, f := range list(fc["filters"]) {
			if tc, ok := f["typed_config"].(map[string]any); ok && strings.HasSuffix(fmt.Sprint(tc["@type"]), ".HttpConnectionManager") {
				return tc
			}
		}
	}
	return nil
}

// HTTPFilter returns the typed_config of the HCM's HTTP filter whose
// @type ends with typeSuffix (e.g. ".ExtAuthz").
func HTTPFilter(hcm map[string]any, typeSuffix string) map[string]any {
	for _, f := range list(hcm["http_filters"]) {
		if tc, ok := f["typed_config"].(map[string]any); ok && strings.HasSuffix(fmt.Sprint(tc["@type"]), typeSuffix) {
			return tc
		}
	}
	return nil
}

// Envoy is a running Envoy process.
type Envoy struct {
	// Listeners maps each listener's name to its bound 127.0.0.1:port.
	Listeners map[string]string
	Admin     string // admin API host:port

	cmd  *exec.Cmd
	logs *syncBuffer
	done chan struct{}
	err  error
}

// Addr is the address of the only (or the named first) listener.
func (e *Envoy) Addr(name string) string { return e.Listeners[name] }

// Logs is what Envoy wrote so far (stdout access log and stderr).
func (e *Envoy) Logs() string { return e.logs.String() }

// Start writes b to a temporary file and runs Envoy on it until the test
// ends. It returns when the server is LIVE and every listener is bound.
func Start(t testing.TB, bin string, b Bootstrap) *Envoy {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "envoy.json")
	data, err := json.MarshalIndent(b, "", " ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, data, 0o644); err != nil {
		t.Fatal(err)
	}
	adminPath := filepath.Join(dir, "admin-address")
	e := &Envoy{logs: &syncBuffer{}, done: make(chan struct{})}
	e.cmd = exec.Command(bin, "-c", cfg,
		"--admin-address-path", adminPath,
		"--disable-hot-restart", "--use-dynamic-base-id",
		"--concurrency", "1", "-l", "warning",
		"--log-format", "[%Y-%m-%d %T.%e][%l][%n] %v")
	e.cmd.Stdout, e.cmd.Stderr = e.logs, e.logs
	e.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := e.cmd.Start(); err != nil {
		t.Fatalf("start envoy: %v", err)
	}
	go func() { e.err = e.cmd.Wait(); close(e.done) }()
	t.Cleanup(func() {
		_ = e.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-e.done:
		case <-time.After(5 * time.Second):
			_ = e.cmd.Process.Kill()
			<-e.done
		}
		if t.Failed() {
			t.Logf("envoy output:\n%s", tail(e.logs.String(), 4000))
		}
	})
	if err := e.waitLive(adminPath, 60*time.Second); err != nil {
		t.Fatalf("envoy did not start: %v\n%s", err, tail(e.logs.String(), 4000))
	}
	return e
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

func (e *Envoy) waitLive(adminPath string, limit time.Duration) error {
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(limit)
	for ; time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		select {
		case <-e.done:
			return fmt.Errorf("exited: %v", e.err)
		default:
		}
		if e.Admin == "" {
			b, err := os.ReadFile(adminPath)
			if err != nil || len(bytes.TrimSpace(b)) == 0 {
				continue
			}
			e.Admin = strings.TrimSpace(string(b))
		}
		if code, _, err := get(client, "http://"+e.Admin+"/ready"); err != nil || code != http.StatusOK {
			continue
		}
		code, body, err := get(client, "http://"+e.Admin+"/listeners?format=json")
		if err != nil || code != http.StatusOK {
			continue
		}
		var ls struct {
			ListenerStatuses []struct {
				Name         string `json:"name"`
				LocalAddress struct {
					SocketAddress struct {
						Address   string `json:"address"`
						PortValue int    `json:"port_value"`
					} `json:"socket_address"`
				} `json:"local_address"`
			} `json:"listener_statuses"`
		}
		if err := json.Unmarshal(body, &ls); err != nil {
			return fmt.Errorf("admin /listeners: %w", err)
		}
		e.Listeners = map[string]string{}
		for _, l := range ls.ListenerStatuses {
			sa := l.LocalAddress.SocketAddress
			if sa.PortValue == 0 {
				e.Listeners = nil
				break
			}
			e.Listeners[l.Name] = fmt.Sprintf("%s:%d", sa.Address, sa.PortValue)
		}
		if len(e.Listeners) > 0 {
			return nil
		}
	}
	return fmt.Errorf("not live after %v", limit)
}

func get(c *http.Client, url string) (int, []byte, error) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// Stat returns the value of one admin counter or gauge (0 when absent).
func (e *Envoy) Stat(t testing.TB, name string) int {
	t.Helper()
	code, body, err := get(&http.Client{Timeout: 5 * time.Second}, "http://"+e.Admin+"/stats?format=json&filter="+url.QueryEscape("^"+regexp.QuoteMeta(name)+"$"))
	if err != nil || code != http.StatusOK {
		t.Fatalf("admin stats: %d %v", code, err)
	}
	var s struct {
		Stats []struct {
			Name  string `json:"name"`
			Value int    `json:"value"`
		} `json:"stats"`
	}
	if err := json.Unmarshal(body, &s); err != nil {
		t.Fatalf("admin stats: %v", err)
	}
	for _, st := range s.Stats {
		if st.Name == name {
			return st.Value
		}
	}
	return 0
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf.Len() > 4<<20 { // keep memory bounded: an access log grows per request
		b.buf.Reset()
	}
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
