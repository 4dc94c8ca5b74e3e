package check

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/engine"
	"github.com/extauthz/extauthz/internal/policy"
	"github.com/extauthz/extauthz/policies"
)

// BenchmarkCheckLimited is an API-key allow with a quota counted on every
// check (a plan too large to run out), with the local and the Redis backend.
func BenchmarkCheckLimited(b *testing.B) {
	backends := map[string]map[string]any{"local": {"type": "local", "max_keys": 100000}}
	if path, err := exec.LookPath("redis-server"); err == nil {
		l, _ := net.Listen("tcp", "127.0.0.1:0")
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		cmd := exec.Command(path, "--port", fmt.Sprint(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
		if err := cmd.Start(); err == nil {
			defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
			addr := fmt.Sprintf("127.0.0.1:%d", port)
			for i := 0; i < 100; i++ {
				if c, err := net.Dial("tcp", addr); err == nil {
					c.Close()
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			backends["redis"] = map[string]any{"type": "redis", "addr": addr, "timeout_ms": 50, "on_error": "deny"}
		}
	} else {
		b.Log("redis-server not installed: only the local backend is measured")
	}
	for _, name := range []string{"local", "redis"} {
		backend, ok := backends[name]
		if !ok {
			continue
		}
		src, err := policy.LoadFS(policies.FS, "policies")
		if err != nil {
			b.Fatal(err)
		}
		lim := src.Data["extauthz"].(map[string]any)["limits"].(map[string]any)
		lim["backend"] = backend
		lim["plans"].(map[string]any)["bench"] = map[string]any{"windows": []any{map[string]any{"limit": 1_000_000_000_000, "period": "minute"}}}
		lim["keys"] = map[string]any{"demo-orders": "bench"}
		e, err := engine.Build(context.Background(), src, engine.Options{})
		if err != nil {
			b.Fatal(err)
		}
		s := newServer(b, e)
		r := req("GET", "/v1/orders/17", map[string]string{"x-api-key": demoKey, "x-tenant-id": "42", "user-agent": "curl/8.5", "accept": "*/*"})
		resp, _ := s.Check(context.Background(), r)
		if len(resp.GetOkResponse().GetResponseHeadersToAdd()) == 0 {
			b.Fatalf("%s: not limited: %v", name, resp)
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if resp, _ := s.Check(context.Background(), r); resp.GetOkResponse() == nil {
					b.Fatalf("denied: %v", resp)
				}
			}
		})
	}
}
