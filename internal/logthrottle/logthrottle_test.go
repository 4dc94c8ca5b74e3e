package logthrottle

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func lines(t *testing.T, b *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("not JSON: %q", l)
		}
		out = append(out, m)
	}
	return out
}

// A flood of one fault within an interval is one line; the next interval's
// first occurrence carries the count; Flush reports what is still pending.
func TestFloodIsSummarised(t *testing.T) {
	var buf bytes.Buffer
	clock := &fakeClock{t: time.Unix(1000, 0)}
	var dropped int
	h := New(slog.NewJSONHandler(&buf, nil), Options{Interval: 10 * time.Second, Level: slog.LevelWarn, Now: clock.Now,
		OnSuppress: func(string) { dropped++ }})
	log := slog.New(h)
	for i := 0; i < 10000; i++ {
		log.Warn("backend down", "i", i)
		log.Info("decision", "i", i) // below the level: never throttled
	}
	got := lines(t, &buf)
	warns := 0
	for _, l := range got {
		if l["msg"] == "backend down" {
			warns++
		}
	}
	if warns != 1 || len(got) != 10001 || dropped != 9999 {
		t.Fatalf("%d warn lines, %d lines, %d dropped; want 1, 10001, 9999", warns, len(got), dropped)
	}
	buf.Reset()

	clock.Add(10 * time.Second)
	log.Warn("backend down", "i", -1)
	log.Warn("backend down", "i", -2)
	got = lines(t, &buf)
	if len(got) != 1 || got[0]["suppressed"] != float64(9999) || got[0]["i"] != float64(-1) {
		t.Fatalf("after the interval: %v", got)
	}
	buf.Reset()

	h.Flush(false) // the interval has not passed since the last line
	if buf.Len() != 0 {
		t.Fatalf("early flush wrote %s", buf.String())
	}
	clock.Add(10 * time.Second)
	h.Flush(false)
	got = lines(t, &buf)
	if len(got) != 1 || got[0]["msg"] != SummaryMsg || got[0]["msg_suppressed"] != "backend down" || got[0]["suppressed"] != float64(1) || got[0]["level"] != "WARN" {
		t.Fatalf("flush: %v", got)
	}
	buf.Reset()
	h.Flush(true)
	if buf.Len() != 0 {
		t.Fatalf("nothing pending, but flush wrote %s", buf.String())
	}
}

// Distinct messages are throttled apart; derived loggers share the state.
func TestPerMessageAndDerived(t *testing.T) {
	var buf bytes.Buffer
	clock := &fakeClock{t: time.Unix(1000, 0)}
	h := New(slog.NewJSONHandler(&buf, nil), Options{Interval: time.Minute, Level: slog.LevelWarn, Now: clock.Now})
	a := slog.New(h).With("component", "a")
	b := slog.New(h).WithGroup("g")
	for i := 0; i < 100; i++ {
		a.Error("x failed")
		b.Error("x failed")
		a.Warn(fmt.Sprintf("y %d", i%3))
	}
	if n := len(lines(t, &buf)); n != 4 {
		t.Fatalf("%d lines; want 4 (x once, y 0..2 once):\n%s", n, buf.String())
	}
	buf.Reset()
	h.Flush(true)
	if n := len(lines(t, &buf)); n != 4 {
		t.Fatalf("%d summary lines; want 4:\n%s", n, buf.String())
	}
}

// Run flushes everything pending when its context ends.
func TestRunFlushesAtStop(t *testing.T) {
	var buf bytes.Buffer
	var mu sync.Mutex
	w := writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return buf.Write(p) })
	h := New(slog.NewJSONHandler(w, nil), Options{Interval: time.Hour, Level: slog.LevelWarn})
	log := slog.New(h)
	for i := 0; i < 5; i++ {
		log.Warn("flaky")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { h.Run(ctx); close(done) }()
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	got := lines(t, &buf)
	if len(got) != 2 || got[1]["suppressed"] != float64(4) {
		t.Fatalf("lines: %v", got)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
