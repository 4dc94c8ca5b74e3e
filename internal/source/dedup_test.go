package source

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/engine"
	"github.com/extauthz/extauthz/internal/policy"
	"github.com/extauthz/extauthz/internal/testutil"
)

// counted is a Reloader whose builds, failures and log lines are counted.
type counted struct {
	*Reloader
	builds   atomic.Int32
	failures atomic.Int32
	logs     *testutil.SyncBuffer
}

func newCounted(l Loader) *counted {
	c := &counted{logs: &testutil.SyncBuffer{}}
	c.Reloader = &Reloader{Loader: l, Holder: &engine.Holder{}, Log: slog.New(slog.NewJSONHandler(c.logs, nil)),
		Build: func(ctx context.Context, src *policy.Source) (*engine.Engine, error) {
			c.builds.Add(1)
			return build(ctx, src)
		}}
	c.OnResult = func(ok bool) {
		if !ok {
			c.failures.Add(1)
		}
	}
	return c
}

func (c *counted) rejected() int { return strings.Count(c.logs.String(), "policy rejected") }

// A data.json syntax error is one failure — logged and counted once — however
// many reload ticks see it, even when the file is rewritten with the same
// bytes; a different broken version is a new failure; a good version clears
// last_error.
func TestBrokenVersionReportedOncePerContent(t *testing.T) {
	dir := t.TempDir()
	base := time.Now().Add(-time.Hour)
	write := func(name, body string, at time.Time) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(p, at, at)
	}
	write("p.rego", goodRego, base)
	write("data.json", `{"extauthz": {"settings": {"allow_empty": true}}}`, base)
	c := newCounted(&Dir{Path: dir})
	ctx := context.Background()
	if err := c.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	v1 := c.Holder.Current().Version

	write("data.json", `{"extauthz": {"settings": {`, base.Add(time.Minute))
	for i := 0; i < 10; i++ {
		if err := c.Reload(ctx); err == nil || !strings.Contains(err.Error(), "data.json") {
			t.Fatalf("tick %d: %v", i, err)
		}
		if st := c.Status(); st.Version != v1 || !strings.Contains(st.LastError, "data.json") {
			t.Fatalf("tick %d: status %+v", i, st)
		}
	}
	// The same bytes written again (a new modification time).
	write("data.json", `{"extauthz": {"settings": {`, base.Add(2*time.Minute))
	_ = c.Reload(ctx)
	if c.failures.Load() != 1 || c.rejected() != 1 {
		t.Fatalf("one broken version: %d failures counted, %d logged; want 1, 1\n%s", c.failures.Load(), c.rejected(), c.logs.String())
	}

	write("data.json", `{"extauthz": {"settings": [`, base.Add(3*time.Minute))
	for i := 0; i < 3; i++ {
		_ = c.Reload(ctx)
	}
	if c.failures.Load() != 2 || c.rejected() != 2 {
		t.Fatalf("a second broken version: %d failures, %d logged; want 2, 2", c.failures.Load(), c.rejected())
	}

	write("data.json", `{"extauthz": {"settings": {"allow_empty": true}, "routes": [{"id": "x", "path": "/a"}]}}`, base.Add(4*time.Minute))
	if err := c.Reload(ctx); err != nil || c.Status().LastError != "" || c.Holder.Current().Version == v1 {
		t.Fatalf("good version: %v %+v", err, c.Status())
	}
	// And the same broken content as before is a failure again, once.
	write("data.json", `{"extauthz": {"settings": {`, base.Add(5*time.Minute))
	_ = c.Reload(ctx)
	_ = c.Reload(ctx)
	if c.failures.Load() != 3 {
		t.Fatalf("broken after good: %d failures; want 3", c.failures.Load())
	}
}

// A bundle service without ETag: the same bytes are not rebuilt on every
// poll; one broken bundle is one failure; when the service is back to the
// serving bundle, last_error clears.
func TestBundleURLWithoutETag(t *testing.T) {
	good := tarball(t, regoBundle(goodRego, allowEmpty()))
	other := tarball(t, regoBundle(strings.Replace(goodRego, "route_not_found", "credentials_missing", 1), allowEmpty()))
	bad := []byte("not a bundle")
	var body atomic.Pointer[[]byte]
	body.Store(&good)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(*body.Load())
	}))
	defer srv.Close()
	c := newCounted(&BundleURL{URL: srv.URL})
	ctx := context.Background()
	for i := 0; i < 5; i++ {
		if err := c.Reload(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := c.builds.Load(); n != 1 {
		t.Fatalf("the same bundle built %d times in 5 polls; want 1", n)
	}
	body.Store(&other)
	for i := 0; i < 3; i++ {
		_ = c.Reload(ctx)
	}
	if n := c.builds.Load(); n != 2 {
		t.Fatalf("a new bundle: %d builds; want 2", n)
	}
	v2 := c.Holder.Current().Version

	body.Store(&bad)
	for i := 0; i < 5; i++ {
		if err := c.Reload(ctx); err == nil {
			t.Fatal("bad bundle accepted")
		}
	}
	if c.failures.Load() != 1 || c.rejected() != 1 || c.Status().LastError == "" {
		t.Fatalf("one broken bundle: %d failures, %d logged, status %+v", c.failures.Load(), c.rejected(), c.Status())
	}
	body.Store(&other) // back to the serving bundle
	if err := c.Reload(ctx); err != nil || c.Status().LastError != "" || c.Holder.Current().Version != v2 || c.builds.Load() != 2 {
		t.Fatalf("back to the serving bundle: %v, status %+v, %d builds", err, c.Status(), c.builds.Load())
	}
}

// With ETags: a broken v2 and then the service back on v1 (a 304 to v1's
// ETag) clears last_error.
func TestBundleURLRevertClearsLastError(t *testing.T) {
	good := tarball(t, regoBundle(goodRego, allowEmpty()))
	bad := []byte("not a bundle")
	var broken atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		etag, b := `"v1"`, good
		if broken.Load() {
			etag, b = `"v2"`, bad
		}
		if r.Header.Get("If-None-Match") == etag {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("ETag", etag)
		w.Write(b)
	}))
	defer srv.Close()
	c := newCounted(&BundleURL{URL: srv.URL})
	ctx := context.Background()
	if err := c.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	broken.Store(true)
	_ = c.Reload(ctx)
	_ = c.Reload(ctx)
	if c.Status().LastError == "" || c.failures.Load() != 1 {
		t.Fatalf("broken v2: %+v, %d failures", c.Status(), c.failures.Load())
	}
	broken.Store(false)
	if err := c.Reload(ctx); err != nil || c.Status().LastError != "" {
		t.Fatalf("service back on v1: %v %+v", err, c.Status())
	}
}
