package cache

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)

// held reports whether key is in either generation, without promoting it.
func (c *Cache[V]) held(key string) (V, bool) {
	g := c.gens.Load()
	for _, gen := range []*generation{g.cur, g.prev} {
		if x, ok := gen.c.Get(key); ok {
			return x.(*item[V]).v, true
		}
	}
	var zero V
	return zero, false
}

func TestGetSet(t *testing.T) {
	c := New[int](10)
	if _, ok := c.Get("a", t0); ok {
		t.Fatal("empty cache returned a hit")
	}
	if !c.Set("a", 1, t0, time.Minute) {
		t.Fatal("Set refused on an empty cache")
	}
	if v, ok := c.Get("a", t0); !ok || v != 1 {
		t.Fatalf("Get = %v, %v; want 1, true", v, ok)
	}
	if !c.Set("a", 2, t0, time.Minute) {
		t.Fatal("overwrite refused")
	}
	if v, _ := c.Get("a", t0); v != 2 {
		t.Fatalf("Get after overwrite = %v; want 2", v)
	}
	if c.Len() != 1 {
		t.Fatalf("Len = %d; want 1", c.Len())
	}
}

func TestSetRejectsNonPositiveTTL(t *testing.T) {
	for _, ttl := range []time.Duration{0, -1, -time.Hour} {
		c := New[string](10)
		if c.Set("k", "v", t0, ttl) {
			t.Errorf("Set(ttl=%v) = true; want false", ttl)
		}
		if _, ok := c.Get("k", t0); ok {
			t.Errorf("ttl=%v: value was stored", ttl)
		}
		if c.Len() != 0 {
			t.Errorf("ttl=%v: Len = %d; want 0", ttl, c.Len())
		}
	}
}

// An entry is a hit strictly before now+ttl and a miss from then on, in
// either generation; an expired entry in the previous generation is not
// moved back.
func TestTTLExpiry(t *testing.T) {
	setup := func() *Cache[string] {
		c := New[string](10)
		c.Set("old", "v", t0, time.Minute)
		c.Set("x", "v", t0, time.Hour)
		c.Purge(t0) // nothing expired; "old" and "x" become the previous generation
		c.Set("new", "v", t0, time.Minute)
		if g := c.gens.Load(); g.prev.c.ItemCount() != 2 || g.cur.c.ItemCount() != 1 {
			t.Fatalf("generations hold %d, %d; want 2, 1", g.prev.c.ItemCount(), g.cur.c.ItemCount())
		}
		return c
	}
	c := setup()
	for _, k := range []string{"old", "new"} {
		if _, ok := c.Get(k, t0.Add(time.Minute-time.Nanosecond)); !ok {
			t.Errorf("%s: a miss before its TTL", k)
		}
	}
	c = setup()
	for _, k := range []string{"old", "new"} {
		if _, ok := c.Get(k, t0.Add(time.Minute)); ok {
			t.Errorf("%s: a hit at its expiry", k)
		}
	}
	if _, ok := c.Get("x", t0.Add(time.Minute)); !ok {
		t.Error("a live entry missing")
	}
	if g := c.gens.Load(); g.prev.c.ItemCount() != 1 { // "old" stayed; "x" moved back
		t.Errorf("previous generation holds %d; want 1 (only the live entry moves)", g.prev.c.ItemCount())
	}
}

// Property: under random Sets and Gets over a key space larger than the
// bound, the cache never holds more than max entries, every hit returns
// the value last stored, and the ⌊max/2⌋ keys most recently stored or hit
// are always held: a full cache takes new entries and evicts old ones.
func TestEvictionKeepsNewest(t *testing.T) {
	for _, bound := range []int{1, 2, 3, 7, 10, 101} {
		t.Run(fmt.Sprint(bound), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(uint64(bound), 18))
			c := New[int](bound)
			last := map[string]int{} // value last stored per key
			var recent []string      // keys by last use, newest last
			use := func(k string) {
				for i, r := range recent {
					if r == k {
						recent = append(recent[:i], recent[i+1:]...)
						break
					}
				}
				recent = append(recent, k)
			}
			for op := range 20_000 {
				k := fmt.Sprint("k", rng.IntN(5*bound+3))
				if rng.IntN(3) == 0 {
					if v, ok := c.Get(k, t0); ok {
						if v != last[k] {
							t.Fatalf("op %d: Get(%s) = %d; last stored %d", op, k, v, last[k])
						}
						use(k)
					}
				} else {
					if !c.Set(k, op, t0, time.Hour) {
						t.Fatalf("op %d: Set refused", op)
					}
					last[k] = op
					use(k)
				}
				if n := c.Len(); n > bound {
					t.Fatalf("op %d: %d entries; bound %d", op, n, bound)
				}
				for _, r := range recent[max(0, len(recent)-bound/2):] {
					if v, ok := c.held(r); !ok || v != last[r] {
						t.Fatalf("op %d: one of the %d most recent keys, %s, not held (%d, %v)", op, bound/2, r, v, ok)
					}
				}
			}
		})
	}
}

// The case: a scan over many keys fills the cache, then a small
// hot set still gets cached (the old cache refused inserts when full).
func TestHotSetCachedAfterScan(t *testing.T) {
	const max = 1000
	c := New[int](max)
	for i := range 100 * max {
		c.Set(fmt.Sprint("scan-", i), i, t0, time.Hour)
	}
	for i := range 100 {
		c.Set(fmt.Sprint("hot-", i), i, t0, time.Hour)
	}
	for range 3 {
		for i := range 100 {
			if v, ok := c.Get(fmt.Sprint("hot-", i), t0); !ok || v != i {
				t.Fatalf("hot-%d: %d, %v", i, v, ok)
			}
		}
		for i := range max / 4 { // more scanning between the hot reads
			c.Set(fmt.Sprint("more-", i), i, t0, time.Hour)
		}
	}
	if c.Len() > max {
		t.Fatalf("%d entries; bound %d", c.Len(), max)
	}
}

// A key read at least once every max/2 inserts of other keys is never
// evicted, however many keys pass through.
func TestHotKeyStays(t *testing.T) {
	const max = 100
	c := New[int](max)
	c.Set("hot", 1, t0, time.Hour)
	for i := range 100 * max {
		c.Set(fmt.Sprint("cold-", i), i, t0, time.Hour)
		if i%(max/2) == max/2-1 {
			if _, ok := c.Get("hot", t0); !ok {
				t.Fatalf("hot key evicted after %d inserts", i+1)
			}
		}
	}
}

func TestDeleteFromBothGenerations(t *testing.T) {
	c := New[int](4)
	c.Set("a", 1, t0, time.Hour)
	c.Set("b", 2, t0, time.Hour)
	c.Set("c", 3, t0, time.Hour) // a, b: previous generation; c: current
	g := c.gens.Load()
	if _, ok := g.prev.c.Get("a"); !ok {
		t.Fatal("a not in the previous generation")
	}
	c.Delete("a")
	c.Delete("c")
	for _, k := range []string{"a", "c"} {
		if _, ok := c.Get(k, t0); ok {
			t.Errorf("%s: a hit after Delete", k)
		}
	}
	if c.Len() != 1 {
		t.Errorf("Len = %d; want 1", c.Len())
	}
	c.Flush()
	if _, ok := c.Get("b", t0); ok || c.Len() != 0 {
		t.Errorf("after Flush: b held %v, Len %d", ok, c.Len())
	}
}

// A Delete racing with hits that move the entry out of the previous
// generation: once Delete has returned and the readers have stopped, the
// key is gone (a promotion never brings a deleted entry back).
func TestDeleteRacingPromotion(t *testing.T) {
	c := New[int](4)
	for round := range 300 {
		c.Flush()
		c.Set("k", round, t0, time.Hour)
		c.Set("x", 0, t0, time.Hour)
		c.Set("y", 0, t0, time.Hour) // k is in the previous generation
		var stop atomic.Bool
		var wg sync.WaitGroup
		for range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for !stop.Load() {
					c.Get("k", t0)
				}
			}()
		}
		c.Delete("k")
		stop.Store(true)
		wg.Wait()
		if v, ok := c.held("k"); ok {
			t.Fatalf("round %d: deleted key held again (%d)", round, v)
		}
	}
}

// The interleaving the race above can hit only by chance, made
// deterministic: a hit read an entry from the previous generation, then a
// Delete (or a Set of a new value) ran before the hit moved the entry.
// The move must not bring the old entry back.
func TestPromotionAfterDeleteOrReplace(t *testing.T) {
	for _, then := range []string{"delete", "set"} {
		c := New[int](4)
		c.Set("k", 1, t0, time.Hour)
		c.Set("x", 0, t0, time.Hour)
		c.Set("y", 0, t0, time.Hour) // k is in the previous generation
		x, ok := c.gens.Load().prev.c.Get("k")
		if !ok {
			t.Fatal("k not in the previous generation")
		}
		if then == "delete" {
			c.Delete("k")
		} else {
			c.Set("k", 2, t0, time.Hour)
		}
		c.promote("k", x.(*item[int]))
		v, held := c.held("k")
		if then == "delete" && held || then == "set" && v != 2 {
			t.Errorf("%s, then the move: k held %v with %d", then, held, v)
		}
	}
}

// Purge drops generations whose entries have all expired, and no others.
func TestPurge(t *testing.T) {
	c := New[int](10)
	c.Set("short", 1, t0, time.Minute)
	c.Set("long", 2, t0, time.Hour)
	c.Purge(t0.Add(2 * time.Minute)) // "long" is live: nothing dropped; the generation becomes the previous
	if c.Len() != 2 {
		t.Fatalf("Len = %d; want 2", c.Len())
	}
	c.Set("s2", 3, t0.Add(2*time.Minute), time.Minute)
	c.Purge(t0.Add(3 * time.Minute)) // the current generation ("s2") has expired
	if _, ok := c.held("s2"); ok || c.Len() != 2 {
		t.Fatalf("s2 held %v, Len %d; want dropped, 2", ok, c.Len())
	}
	if _, ok := c.Get("long", t0.Add(3*time.Minute)); !ok {
		t.Fatal("live entry dropped")
	}
	c.Purge(t0.Add(time.Hour))
	if c.Len() != 0 {
		t.Fatalf("Len = %d after everything expired; want 0", c.Len())
	}
}

func TestCapUnderConcurrentSet(t *testing.T) {
	const max, workers, perWorker = 100, 32, 200
	c := New[int](max)
	var wg sync.WaitGroup
	var over atomic.Bool
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWorker {
				if !c.Set(fmt.Sprintf("%d-%d", w, i), i, t0, time.Hour) {
					t.Error("Set refused")
				}
				if c.Len() > max {
					over.Store(true)
				}
				c.Get(fmt.Sprintf("%d-%d", w, i/2), t0)
				if i%50 == 0 {
					c.Delete(fmt.Sprintf("%d-%d", w, i/3))
				}
			}
		}()
	}
	wg.Wait()
	if over.Load() {
		t.Fatal("cache exceeded its cap during concurrent Set")
	}
	if n := c.Len(); n > max || n < max/2 {
		t.Fatalf("Len = %d; want between %d and %d", n, max/2, max)
	}
}

func TestJanitorPurgesAndStops(t *testing.T) {
	c := New[int](10)
	ctx, cancel := context.WithCancel(context.Background())
	c.StartJanitor(ctx, 5*time.Millisecond)
	c.Set("a", 1, time.Now(), time.Millisecond)
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
	c.Set("b", 1, time.Now(), time.Millisecond)
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
	c.Set("r", r, t0, time.Hour)
	got, ok := c.Get("r", t0)
	if !ok || got != r {
		t.Fatalf("Get = %p, %v; want %p, true", got, ok, r)
	}
}

func BenchmarkGetHit(b *testing.B) {
	c := New[*int](1000)
	n := 1
	now := time.Now()
	c.Set("key", &n, now, time.Hour)
	b.ReportAllocs()
	for b.Loop() {
		c.Get("key", now)
	}
}

// TestGetOrSet: the first value stored under a key is the one every caller
// gets while it lives, however many race to store theirs; an expired one
// is replaced; the bound holds; a value found in the older generation is
// kept and moved to the current one.
func TestGetOrSet(t *testing.T) {
	c := New[int](4)
	if v := c.GetOrSet("a", 1, t0, time.Minute); v != 1 {
		t.Fatalf("first GetOrSet = %d; want 1", v)
	}
	if v := c.GetOrSet("a", 2, t0, time.Minute); v != 1 {
		t.Fatalf("second GetOrSet = %d; want the stored 1", v)
	}
	if v := c.GetOrSet("a", 3, t0.Add(time.Minute), time.Minute); v != 3 {
		t.Fatalf("GetOrSet after expiry = %d; want 3", v)
	}
	if v := c.GetOrSet("z", 9, t0, 0); v != 9 || c.Len() != 1 {
		t.Fatalf("ttl 0: got %d, Len %d; want 9 returned, nothing stored", v, c.Len())
	}
	for i := range 3 { // "a" ends in the older generation
		c.GetOrSet(fmt.Sprint(i), i, t0.Add(time.Minute), time.Minute)
	}
	if _, ok := c.held("a"); !ok {
		t.Fatal("a evicted too early")
	}
	if v := c.GetOrSet("a", 4, t0.Add(time.Minute), time.Minute); v != 3 {
		t.Fatalf("GetOrSet of a key in the older generation = %d; want 3", v)
	}
	for i := range 100 {
		c.GetOrSet(fmt.Sprint("k", i), i, t0, time.Hour)
		if c.Len() > 4 {
			t.Fatalf("Len %d > 4", c.Len())
		}
	}

	var wg sync.WaitGroup
	got := make([]int, 16)
	for i := range got {
		wg.Go(func() { got[i] = c.GetOrSet("race", i+100, t0, time.Hour) })
	}
	wg.Wait()
	for _, v := range got {
		if v != got[0] {
			t.Fatalf("racing GetOrSet gave %v; want one value", got)
		}
	}
}
