package source

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"

	"github.com/extauthz/extauthz/internal/engine"
	"github.com/extauthz/extauthz/internal/policy"
	"github.com/extauthz/extauthz/policies"
)

const goodRego = "package extauthz\ndecision := {\"allow\": false, \"reason\": \"route_not_found\"}\n"

// allowEmpty is policy data that serves without routes or credentials.
func allowEmpty() map[string]any {
	return map[string]any{"extauthz": map[string]any{"settings": map[string]any{"allow_empty": true}}}
}

func build(ctx context.Context, src *policy.Source) (*engine.Engine, error) {
	return engine.Build(ctx, src, engine.Options{})
}

func newReloader(l Loader) (*Reloader, *engine.Holder) {
	h := &engine.Holder{}
	return &Reloader{Loader: l, Build: build, Holder: h}, h
}

func TestDirReloadKeepsLastGood(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("p.rego", goodRego)
	write("data.json", `{"extauthz": {"settings": {"allow_empty": true}, "routes": []}}`)
	r, h := newReloader(&Dir{Path: dir})
	ctx := context.Background()
	if err := r.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	v1 := h.Current().Version
	if err := r.Reload(ctx); err != nil || h.Current().Version != v1 {
		t.Fatalf("unchanged dir reloaded: %v", err)
	}

	// A broken policy is rejected with its file and line; v1 keeps serving.
	time.Sleep(10 * time.Millisecond)
	write("p.rego", "package extauthz\n\ndecision := {\n")
	err := r.Reload(ctx)
	if err == nil || !strings.Contains(err.Error(), "p.rego:") || h.Current().Version != v1 {
		t.Fatalf("broken rego: %v, serving %s", err, h.Current().Version)
	}
	if st := r.Status(); st.Version != v1 || !strings.Contains(st.LastError, "p.rego") {
		t.Errorf("status %+v", st)
	}
	// Bad data is rejected naming the field.
	write("p.rego", goodRego)
	write("data.json", `{"extauthz": {"routes": [{"id": "x", "path": "/a", "auth": ["magic"]}]}}`)
	err = r.Reload(ctx)
	if err == nil || !strings.Contains(err.Error(), `routes[0].auth[0]`) || h.Current().Version != v1 {
		t.Fatalf("bad data: %v", err)
	}
	// A good change is swapped in and clears the error.
	write("data.json", `{"extauthz": {"settings": {"allow_empty": true}, "routes": [{"id": "x", "path": "/a"}]}}`)
	if err := r.Reload(ctx); err != nil || h.Current().Version == v1 || r.Status().LastError != "" {
		t.Fatalf("good change: %v %+v", err, r.Status())
	}
}

func tarball(t *testing.T, b bundle.Bundle) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := bundle.Write(&buf, b); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func regoBundle(rego string, data map[string]any) bundle.Bundle {
	return bundle.Bundle{
		Data:    data,
		Modules: []bundle.ModuleFile{{Path: "/extauthz.rego", URL: "/extauthz.rego", Raw: []byte(rego), Parsed: ast.MustParseModule(rego)}},
	}
}

func TestBundleFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "bundle.tar.gz")
	os.WriteFile(path, tarball(t, regoBundle(goodRego, allowEmpty())), 0o600)
	r, h := newReloader(&BundleFile{Path: path})
	if err := r.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	v1 := h.Current().Version
	time.Sleep(10 * time.Millisecond)
	os.WriteFile(path, []byte("not a tarball"), 0o600)
	if err := r.Reload(context.Background()); err == nil || h.Current().Version != v1 {
		t.Fatalf("bad bundle replaced a good one: %v", err)
	}
}

func TestBundleURLWithETag(t *testing.T) {
	good := tarball(t, regoBundle(goodRego, allowEmpty()))
	var body atomic.Pointer[[]byte]
	body.Store(&good)
	var gets, notModified atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gets.Add(1)
		b := *body.Load()
		etag := `"` + string(rune('a'+len(b)%26)) + `"`
		if r.Header.Get("If-None-Match") == etag {
			notModified.Add(1)
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("ETag", etag)
		w.Write(b)
	}))
	defer srv.Close()
	r, h := newReloader(&BundleURL{URL: srv.URL + "/bundles/extauthz.tar.gz"})
	ctx := context.Background()
	if err := r.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	v1 := h.Current().Version
	if err := r.Reload(ctx); err != nil || notModified.Load() != 1 {
		t.Fatalf("second poll should be 304: %v %d", err, notModified.Load())
	}
	bad := []byte("garbage that is longer")
	body.Store(&bad)
	if err := r.Reload(ctx); err == nil || h.Current().Version != v1 {
		t.Fatalf("bad bundle from service replaced good: %v", err)
	}
}

func TestSignedBundles(t *testing.T) {
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	privPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	pubDER, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	otherPEM := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(other)})

	sign := func(priv []byte) []byte {
		b := regoBundle(goodRego, allowEmpty())
		if err := b.GenerateSignature(bundle.NewSigningConfig(string(priv), "RS256", ""), "extauthz", false); err != nil {
			t.Fatal(err)
		}
		return tarball(t, b)
	}
	dir := t.TempDir()
	v := &Verify{PublicKeyPEM: string(pubPEM)}
	for name, c := range map[string]struct {
		body []byte
		ok   bool
	}{
		"signed with the trusted key": {sign(privPEM), true},
		"signed with another key":     {sign(otherPEM), false},
		"unsigned":                    {tarball(t, regoBundle(goodRego, allowEmpty())), false},
	} {
		path := filepath.Join(dir, strings.ReplaceAll(name, " ", "_")+".tar.gz")
		os.WriteFile(path, c.body, 0o600)
		r, h := newReloader(&BundleFile{Path: path, Verify: v})
		err := r.Reload(context.Background())
		if (err == nil) != c.ok || (h.Current() != nil) != c.ok {
			t.Errorf("%s: err=%v", name, err)
		}
	}
}

func TestRedactURL(t *testing.T) {
	if got := redact("https://user:pw@bundles.example/b.tar.gz?token=x"); got != "https://bundles.example/b.tar.gz" {
		t.Errorf("%s", got)
	}
}

// An rm-then-copy deploy (data.json gone for a moment), an emptied data.json
// or a typo is refused at reload: the last good version keeps serving and
// the status reports why.
func TestReloadRefusesEmptyOrMistypedVersions(t *testing.T) {
	dir := t.TempDir()
	rego, _ := fs.ReadFile(policies.FS, "extauthz.rego")
	data, _ := fs.ReadFile(policies.FS, "data.json")
	write := func(name, body string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("extauthz.rego", string(rego))
	write("data.json", string(data))
	r, h := newReloader(&Dir{Path: dir})
	ctx := context.Background()
	if err := r.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	v1 := h.Current().Version
	refused := func(step, want string) {
		t.Helper()
		err := r.Reload(ctx)
		if err == nil || !strings.Contains(err.Error(), want) || h.Current().Version != v1 {
			t.Fatalf("%s: %v (serving %s, want %s)", step, err, h.Current().Version, v1)
		}
		if st := r.Status(); st.Version != v1 || !strings.Contains(st.LastError, want) {
			t.Fatalf("%s: status %+v", step, st)
		}
	}
	if err := os.Remove(filepath.Join(dir, "data.json")); err != nil {
		t.Fatal(err)
	}
	refused("data.json removed", "refused: no data.json")
	write("data.json", `{}`)
	refused("data.json {}", "refused: no data.json")
	write("data.json", `{"extauthz": {"routes": []}}`)
	refused("no routes, no credentials", "refused: no routes")
	write("data.json", strings.Replace(string(data), `"plan": "starter"`, `"plan": "startr"`, 1))
	refused("plan typo", `.plan: unknown plan "startr"`)
	write("data.json", strings.Replace(string(data), `"10.0.0.0/8"]}`, `"10.0.0.0/40"]}`, 1))
	refused("tenant CIDR typo", `data.json: extauthz.tenants["7"].allowed_cidrs[0]: not a CIDR: "10.0.0.0/40"`)
	// Meant to be empty: served.
	write("data.json", `{"extauthz": {"settings": {"allow_empty": true}}}`)
	if err := r.Reload(ctx); err != nil || h.Current().Version == v1 || r.Status().LastError != "" {
		t.Fatalf("allow_empty: %v %+v", err, r.Status())
	}
}

// A data.json replaced by one of the same size with its modification time
// kept (cp -p, rsync -t, tar x, then a rename) is a new version: a revoked
// key in it was never loaded, even on SIGHUP.
func TestDirReloadSeesSameSizeSameTimeReplacement(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("internal/fileid reads inodes and change times on Linux only")
	}
	dir := t.TempDir()
	stamp := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	put := func(body string) {
		t.Helper()
		tmp := filepath.Join(dir, ".data.json.tmp")
		if err := os.WriteFile(tmp, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(tmp, stamp, stamp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "data.json")); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "p.rego"), []byte(goodRego), 0o600); err != nil {
		t.Fatal(err)
	}
	put(`{"extauthz": {"settings": {"allow_empty": true}, "routes": [], "tenants": {"7": {"note": "active "}}}}`)
	r, h := newReloader(&Dir{Path: dir})
	ctx := context.Background()
	if err := r.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	v1 := h.Current().Version
	put(`{"extauthz": {"settings": {"allow_empty": true}, "routes": [], "tenants": {"7": {"note": "revoked"}}}}`)
	if err := r.Reload(ctx); err != nil || h.Current().Version == v1 {
		t.Fatalf("same size and time, other content: still serving %s (%v)", v1, err)
	}
}
