package source

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/extauthz/extauthz/internal/check"
	"github.com/extauthz/extauthz/internal/clientip"
	"github.com/extauthz/extauthz/internal/policy"
	"github.com/extauthz/extauthz/policies"
)

// configMapVolume lays files out as the kubelet does in a ConfigMap volume
// and updates them the way it does (its AtomicWriter): the files of a
// version go into a new timestamped directory, a ..data_tmp symlink to it is
// renamed over ..data, the user-visible names are symlinks into ..data, and
// the previous timestamped directory is removed.
type configMapVolume struct {
	t    *testing.T
	dir  string
	n    int
	prev string
}

func (v *configMapVolume) write(files map[string]string) {
	t := v.t
	t.Helper()
	v.n++
	ts := fmt.Sprintf("..2026_12_04_10_%02d_%02d.%09d", v.n/60, v.n%60, v.n)
	if err := os.Mkdir(filepath.Join(v.dir, ts), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(v.dir, ts, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	tmp := filepath.Join(v.dir, "..data_tmp")
	if err := os.Symlink(ts, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(v.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for name := range files {
		link := filepath.Join(v.dir, name)
		if _, err := os.Lstat(link); err == nil {
			continue
		}
		if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
			t.Fatal(err)
		}
	}
	ents, _ := os.ReadDir(v.dir)
	for _, e := range ents {
		if _, keep := files[e.Name()]; !keep && !strings.HasPrefix(e.Name(), ".") {
			os.Remove(filepath.Join(v.dir, e.Name()))
		}
	}
	if v.prev != "" {
		if err := os.RemoveAll(filepath.Join(v.dir, v.prev)); err != nil {
			t.Fatal(err)
		}
	}
	v.prev = ts
}

// The shipped policy served from a ConfigMap volume, swapped atomically
// between two versions while checks run: the first version loads (the
// ..data directory and the symlinked files are handled), no check fails or
// sees a third answer, and the new version is served after each swap.
func TestConfigMapVolumeSwapUnderChecks(t *testing.T) {
	rego, _ := fs.ReadFile(policies.FS, "extauthz.rego")
	data1, _ := fs.ReadFile(policies.FS, "data.json")
	// Version 2 demands a scope the demo key lacks on the orders route.
	data2 := strings.Replace(string(data1), `"scopes": ["orders:read"],
       "tenant_headers"`, `"scopes": ["orders:admin"],
       "tenant_headers"`, 1)
	if data2 == string(data1) {
		t.Fatal("policies/data.json changed: update the test's edit")
	}
	versions := []map[string]string{
		{"extauthz.rego": string(rego), "data.json": string(data1)},
		{"extauthz.rego": string(rego), "data.json": data2},
	}
	want := []string{"ok", "scope_missing"}

	vol := &configMapVolume{t: t, dir: t.TempDir()}
	vol.write(versions[0])
	r, h := newReloader(&Dir{Path: vol.dir})
	ctx := context.Background()
	if err := r.Reload(ctx); err != nil {
		t.Fatalf("first version from a ConfigMap volume: %v", err)
	}
	reasonOf := map[string]string{h.Current().Version: want[0]}
	var mu sync.Mutex

	srv := check.NewServer(h, clientip.Resolver{})
	srv.FullMetadata = true // the replies name the serving policy_version
	srv.Timeout = 5 * time.Second
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: "127.0.0.1"}}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/v1/orders",
			Headers: map[string]string{":method": "GET", ":path": "/v1/orders", ":authority": "api.example.com",
				"x-api-key": "xa_demo_7Qm2vK9pL4sT8wZ1", "x-tenant-id": "42"}}},
	}}
	answer := func() (version, reason string, err error) {
		resp, err := srv.Check(ctx, req)
		md := resp.GetDynamicMetadata().GetFields()
		return md["policy_version"].GetStringValue(), md["reason"].GetStringValue(), err
	}
	if _, reason, err := answer(); err != nil || reason != want[0] {
		t.Fatalf("version 1 answers %q, %v", reason, err)
	}

	// Checkers: a bounded number of checks each.
	const workers, perWorker = 4, 400
	var checks, failed atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range perWorker {
				version, reason, err := answer()
				checks.Add(1)
				mu.Lock()
				expect, known := reasonOf[version]
				mu.Unlock()
				if err != nil || !known || reason != expect {
					failed.Add(1)
					t.Errorf("version %q answered %q (want %q, known %v), err %v", version, reason, expect, known, err)
				}
			}
		}()
	}
	// The reloader polls as the server's --reload-interval would.
	rctx, stopReload := context.WithCancel(ctx)
	var rwg sync.WaitGroup
	rwg.Add(1)
	go func() { defer rwg.Done(); r.Run(rctx, time.Millisecond, nil) }()

	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for i := 1; ; i++ {
		v := i % 2
		// Register the version's answer before it can serve.
		e, err := build(ctx, mustLoadFiles(t, versions[v]))
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		reasonOf[e.Version] = want[v]
		mu.Unlock()
		e.Close()
		vol.write(versions[v])
		// Wait until the swap is served.
		deadline := time.Now().Add(10 * time.Second)
		for h.Current().Version != e.Version {
			if time.Now().After(deadline) {
				t.Fatalf("swap %d not served: serving %s, status %+v", i, h.Current().Version, r.Status())
			}
			time.Sleep(time.Millisecond)
		}
		if _, reason, err := answer(); err != nil || reason != want[v] {
			t.Fatalf("after swap %d: %q, %v", i, reason, err)
		}
		select {
		case <-done:
		default:
			continue
		}
		if i >= 4 {
			break
		}
	}
	stopReload()
	rwg.Wait()
	if n := checks.Load(); n != workers*perWorker || failed.Load() != 0 {
		t.Fatalf("%d checks, %d failed", n, failed.Load())
	}
	if st := r.Status(); st.LastError != "" {
		t.Errorf("a swap was rejected: %s", st.LastError)
	}
	// The old timestamped directories are gone; only the current one is left.
	ents, _ := os.ReadDir(vol.dir)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if len(names) != 4 || !slices.Contains(names, "..data") || !slices.Contains(names, "data.json") {
		t.Errorf("volume layout %v", names)
	}
}

func mustLoadFiles(t *testing.T, files map[string]string) *policy.Source {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	src, _, err := (&Dir{Path: dir}).Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return src
}
