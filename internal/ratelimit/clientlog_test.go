package ratelimit

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/extauthz/extauthz/internal/testutil"
)

// go-redis's own lines (here: failed dials to a closed port) become JSON
// records of the given logger instead of plain text on stderr.
func TestClientLogsAreStructured(t *testing.T) {
	var logs testutil.SyncBuffer
	SetClientLogger(slog.New(slog.NewJSONHandler(&logs, nil)))
	t.Cleanup(func() { redis.SetLogger(quietLogger{}) })

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	plans := `"plans": {"p": {"windows": [{"limit": 3, "period": "minute"}]}}, "default_plan": "p"`
	l := newLimiter(t, redisConfig(t, addr, "deny", 500, plans), Options{Logger: slog.New(slog.DiscardHandler)})
	for i := 0; i < 3; i++ {
		if _, err := l.Take(context.Background(), Subject{KeyID: "k"}, at(1)); err == nil {
			t.Fatal("Take succeeded against a closed port")
		}
	}
	out := strings.TrimSpace(logs.String())
	if out == "" {
		t.Fatal("go-redis logged nothing through the logger")
	}
	dials := 0
	for _, line := range strings.Split(out, "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("not a JSON record: %q", line)
		}
		if rec["msg"] != ClientLogMsg || rec["level"] != "WARN" {
			t.Errorf("record %v", rec)
		}
		if d, _ := rec["detail"].(string); strings.Contains(d, "failed to dial") && !strings.HasPrefix(d, "redis:") {
			dials++
		}
	}
	if dials == 0 {
		t.Errorf("no dial failure among:\n%s", out)
	}
}
