package source

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/extauthz/extauthz/internal/check"
	"github.com/extauthz/extauthz/internal/clientip"
)

// Two policy versions that answer the same request differently: every
// response must be exactly one version's answer (its dynamic metadata names
// the version), a broken version in between is rejected, and no check fails.
func TestReloadUnderConcurrentChecks(t *testing.T) {
	dir := t.TempDir()
	versions := []string{
		"package extauthz\ndecision := {\"allow\": false, \"reason\": \"route_not_found\"}\n",
		"package extauthz\ndecision := {\"allow\": false, \"reason\": \"scope_missing\"}\n",
	}
	broken := "package extauthz\ndecision := {\n"
	write := func(body string) {
		t.Helper()
		tmp := filepath.Join(dir, ".p.rego.tmp")
		if err := os.WriteFile(tmp, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "p.rego")); err != nil { // atomic, as a ConfigMap swap
			t.Fatal(err)
		}
	}
	write(versions[0])
	if err := os.WriteFile(filepath.Join(dir, "data.json"), []byte(`{"extauthz": {"settings": {"allow_empty": true}}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	r, h := newReloader(&Dir{Path: dir})
	ctx := context.Background()
	if err := r.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	reasonOf := map[string]string{h.Current().Version: "route_not_found"}
	var mu sync.Mutex

	srv := check.NewServer(h, clientip.Resolver{})
	srv.FullMetadata = true // the replies name the serving policy_version
	srv.Timeout = 5 * time.Second
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: "127.0.0.1"}}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/x",
			Headers: map[string]string{":method": "GET", ":path": "/x"}}},
	}}

	stop := make(chan struct{})
	var checks, bad atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := srv.Check(ctx, req)
				md := resp.GetDynamicMetadata().GetFields()
				version, reason := md["policy_version"].GetStringValue(), md["reason"].GetStringValue()
				mu.Lock()
				want, known := reasonOf[version]
				mu.Unlock()
				if err != nil || !known || reason != want {
					bad.Add(1)
					t.Errorf("version %q answered %q (want %q, err %v)", version, reason, want, err)
				}
				checks.Add(1)
			}
		}()
	}
	for i := 0; i < 20; i++ {
		body := versions[(i+1)%2]
		if i%5 == 4 {
			body = broken
		}
		time.Sleep(5 * time.Millisecond)
		write(body + "# reload " + string(rune('a'+i)) + "\n")
		// Register the version's expected answer before it can serve.
		if body != broken {
			src, _, err := (&Dir{Path: dir}).Load(ctx)
			if err != nil {
				t.Fatal(err)
			}
			e, err := build(ctx, src)
			if err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			reasonOf[e.Version] = map[string]string{versions[0]: "route_not_found", versions[1]: "scope_missing"}[body]
			mu.Unlock()
			e.Close()
		}
		before := h.Current().Version
		err := r.Reload(ctx)
		if body == broken {
			if err == nil || h.Current().Version != before {
				t.Fatalf("broken version replaced %s: %v", before, err)
			}
		} else if err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if checks.Load() < 100 || bad.Load() != 0 {
		t.Fatalf("%d checks, %d wrong", checks.Load(), bad.Load())
	}
}
