package logbuf

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

type recorder struct {
	mu     sync.Mutex
	writes []string
}

func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writes = append(r.writes, string(p))
	return len(p), nil
}

func (r *recorder) all() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.writes, "")
}

func TestBatchesWholeRecordsAndFlushes(t *testing.T) {
	rec := &recorder{}
	w := New(rec, 64, time.Hour)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				fmt.Fprintf(w, "{\"g\":%d,\"i\":%d,\"pad\":\"%s\"}\n", g, i, strings.Repeat("x", i%40))
			}
		}()
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	out := rec.all()
	if n := strings.Count(out, "\n"); n != 400 {
		t.Fatalf("%d records written, want 400", n)
	}
	for _, wr := range rec.writes {
		if !strings.HasSuffix(wr, "\n") || !strings.HasPrefix(wr, "{") {
			t.Fatalf("a record was split across writes: %q", wr)
		}
	}
	if len(rec.writes) >= 400 {
		t.Errorf("no batching: %d writes", len(rec.writes))
	}
}

func TestTimerFlushes(t *testing.T) {
	var buf bytes.Buffer
	var mu sync.Mutex
	w := New(writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return buf.Write(p) }), 4096, 10*time.Millisecond)
	defer w.Close()
	w.Write([]byte("line\n"))
	deadline := time.Now().Add(2 * time.Second)
	for {
		mu.Lock()
		got := buf.String()
		mu.Unlock()
		if got == "line\n" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("not flushed by the timer")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
