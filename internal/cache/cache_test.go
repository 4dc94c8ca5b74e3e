package cache

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestGetSet(t *testing.T) {
	c := New[int](10)
	if _, ok := c.Get("a"); ok {
		t.Fatal("empty cache returned a hit")
	}
	if !c.Set("a", 1, time.Minute) {
		t.Fatal("Set refused on an empty cache")
	}
	if v, ok := c.Get("a"); !ok || v != 1 {
		t.Fatalf("Get = %v, %v; want 1, true", v, ok)
	}
	if !c.Set("a", 2, time.Minute) {
		t.Fatal("overwrite refused")
	}
	if v, _ := c.Get("a"); v != 2 {
		t.Fatalf("Get after overwrite = %v; want 2", v)
	}
	if c.Len() != 1 {
		t.Fatalf("Len = %d; want 1", c.Len())
	}
}

func TestSetRejectsNonPositiveTTL(t *testing.T) {
	for _, ttl := range []time.Duration{0, -1, -time.Hour} {
		c := New[string](10)
		if c.Set("k", "v", ttl) {
			t.Errorf("Set(ttl=%v) = true; want false", ttl)
		}
		if _, ok := c.Get("k"); ok {
			t.Errorf("ttl=%v: value was stored", ttl)
		}
		if c.Len() != 0 {
			t.Errorf("ttl=%v: Len = %d; want 0", ttl, c.Len())
		}
	}
}

func TestTTLExpiry(t *testing.T) {
	c := New[string](10)
	c.Set("short", "v", 20*time.Millisecond)
	c.Set("long", "v", time.Hour)
	if _, ok := c.Get("short"); !ok {
		t.Fatal("fresh entry missing")
	}
	time.Sleep(40 * time.Millisecond)
	if _, ok := c.Get("short"); ok {
		t.Fatal("expired entry returned")
	}
	if _, ok := c.Get("long"); !ok {
		t.Fatal("live entry missing")
	}
}

func TestCapRefusesAndPurgesExpired(t *testing.T) {
	c := New[int](3)
	c.Set("a", 1, 20*time.Millisecond)
	c.Set("b", 2, 20*time.Millisecond)
	c.Set("c", 3, time.Hour)
	// Full and nothing expired yet: the purge runs, frees nothing, refuses.
	if c.Set("d", 4, time.Hour) {
		t.Fatal("Set beyond the cap succeeded")
	}
	// Overwriting a live key does not grow the cache and is allowed when full.
	if !c.Set("c", 30, time.Hour) {
		t.Fatal("overwrite of a live key refused at the cap")
	}
	if c.Len() != 3 {
		t.Fatalf("Len = %d; want 3", c.Len())
	}
	// After expiry (and the purge rate limit) the purge makes room.
	time.Sleep(purgeEvery + 20*time.Millisecond)
	if !c.Set("d", 4, time.Hour) {
		t.Fatal("Set refused although expired entries could be purged")
	}
	if c.Len() != 2 {
		t.Fatalf("Len = %d after purge; want 2 (c, d)", c.Len())
	}
	for _, k := range []string{"c", "d"} {
		if _, ok := c.Get(k); !ok {
			t.Errorf("%s missing after purge", k)
		}
	}
}

func TestCapUnderConcurrentSet(t *testing.T) {
	const max, workers, perWorker = 100, 32, 200
	c := New[int](max)
	var stored atomic.Int64
	var wg sync.WaitGroup
	var over atomic.Bool
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWorker {
				if c.Set(fmt.Sprintf("%d-%d", w, i), i, time.Hour) {
					stored.Add(1)
				}
				if c.Len() > max {
					over.Store(true)
				}
				c.Get(fmt.Sprintf("%d-%d", w, i/2))
			}
		}()
	}
	wg.Wait()
	if over.Load() {
		t.Fatal("cache exceeded its cap during concurrent Set")
	}
	if c.Len() != max {
		t.Fatalf("Len = %d; want exactly %d", c.Len(), max)
	}
	if stored.Load() != max {
		t.Fatalf("%d Sets reported success; want %d", stored.Load(), max)
	}
}

func TestStats(t *testing.T) {
	c := New[int](10)
	c.Set("a", 1, time.Hour)
	c.Set("b", 2, time.Hour)
	c.Get("a")
	c.Get("a")
	c.Get("b")
	c.Get("missing")
	c.Set("gone", 1, time.Nanosecond)
	time.Sleep(time.Millisecond)
	c.Get("gone") // expired: a miss
	want := Stats{Hits: 3, Misses: 2, Entries: 3}
	if got := c.Stats(); got != want {
		t.Fatalf("Stats = %+v; want %+v", got, want)
	}
}

func TestJanitorPurgesAndStops(t *testing.T) {
	c := New[int](10)
	ctx, cancel := context.WithCancel(context.Background())
	c.StartJanitor(ctx, 5*time.Millisecond)
	c.Set("a", 1, time.Millisecond)
	deadline := time.Now().Add(2 * time.Second)
	for c.Len() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("janitor did not purge the expired entry")
		}
		time.Sleep(2 * time.Millisecond)
	}
	cancel()
	done := make(chan struct{})
	go func() { c.janitors.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("janitor did not stop after ctx was cancelled")
	}
	// A stopped janitor no longer purges.
	c.Set("b", 1, time.Millisecond)
	time.Sleep(30 * time.Millisecond)
	if c.Len() != 1 {
		t.Fatalf("Len = %d; want 1 (no janitor running)", c.Len())
	}
}

func TestJanitorNonPositiveIntervalStartsNothing(t *testing.T) {
	c := New[int](1)
	c.StartJanitor(context.Background(), 0)
	done := make(chan struct{})
	go func() { c.janitors.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Second):
		t.Fatal("a janitor was started for interval 0")
	}
}

func TestPointerValues(t *testing.T) {
	type rec struct{ n int }
	c := New[*rec](2)
	r := &rec{n: 7}
	c.Set("r", r, time.Hour)
	got, ok := c.Get("r")
	if !ok || got != r {
		t.Fatalf("Get = %p, %v; want %p, true", got, ok, r)
	}
}

func BenchmarkGetHit(b *testing.B) {
	c := New[*int](1000)
	n := 1
	c.Set("key", &n, time.Hour)
	b.ReportAllocs()
	for b.Loop() {
		c.Get("key")
	}
}
