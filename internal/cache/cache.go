// Package cache is a small, typed, size-bounded TTL cache over
// github.com/patrickmn/go-cache, with eviction.
//
// go-cache (unmaintained since 2019, no go.mod) has no size bound and no
// eviction, its Get reads the wall clock on every hit, and its janitor
// sweeps the whole map under the write lock and can only be stopped by a
// finalizer. So this wrapper keeps the entries in two go-cache instances,
// generations, and
//   - bounds the entries: a new key goes into the current generation; when
//     that holds half the bound, the previous generation is dropped whole
//     and the current one becomes the previous. A hit in the previous
//     generation moves the entry back to the current one. That is an
//     approximate LRU with O(1) work per operation: the most recently
//     stored or used ⌊max/2⌋ keys are always held, never more than max;
//   - judges expiry itself, at the time the caller passes (the caller has
//     usually read the clock already; a hit reads no clock), and stores
//     into go-cache without go-cache's expiration;
//   - frees expired entries without a sweep: Purge (and the janitor that
//     StartJanitor runs until its context ends) drops a generation whose
//     entries have all expired;
//   - counts nothing: its users count hits and misses as they define them
//     (a hit on an entry they find stale is their miss), so a hit touches
//     no shared counter.
//
// Writers (Set, Delete, Flush, a promotion, Purge) are serialised by one
// mutex; a hit in the current generation takes only go-cache's read lock. Delete
// removes a key from both generations, and a promotion re-checks under the
// mutex that the entry it moves is still there, so a deleted entry never
// comes back.
//
// The cache is meant for results keyed by a hash of a credential. New keys
// in bulk (unknown credentials, say) evict older entries of the same cache
// only: callers keep results they must not lose that way in a cache of
// their own.
package cache

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gocache "github.com/patrickmn/go-cache"
)

// Stats is a snapshot of a cache user's counters (the cache itself counts
// only its entries: Len).
type Stats struct {
	Hits    uint64
	Misses  uint64
	Entries int // items held, including expired ones not yet dropped
}

// Cache is a typed TTL cache holding at most maxEntries items. It is safe for
// concurrent use.
type Cache[V any] struct {
	gens atomic.Pointer[gens] // replaced (never modified in place) under mu
	max  int                  // bound on entries in both generations
	half int                  // a generation is full at this many entries

	mu sync.Mutex // serialises every change

	janitors sync.WaitGroup // running janitor goroutines (tests wait on it)
}

// gens is one pair of generations.
type gens struct {
	cur, prev *generation
}

// generation is one go-cache instance; last is the latest expiry of an
// entry stored in it (under Cache.mu).
type generation struct {
	c    *gocache.Cache
	last time.Time
}

// item is what go-cache holds; immutable once stored.
type item[V any] struct {
	v   V
	exp time.Time
}

func newGeneration() *generation {
	return &generation{c: gocache.New(gocache.NoExpiration, 0)}
}

// New returns a cache that holds at most maxEntries items (at least 1).
func New[V any](maxEntries int) *Cache[V] {
	if maxEntries < 1 {
		maxEntries = 1
	}
	c := &Cache[V]{max: maxEntries, half: (maxEntries + 1) / 2}
	c.gens.Store(&gens{cur: newGeneration(), prev: newGeneration()})
	return c
}

// Get returns the value stored under key if it has not expired at now.
func (c *Cache[V]) Get(key string, now time.Time) (V, bool) {
	g := c.gens.Load()
	if x, ok := g.cur.c.Get(key); ok {
		if it := x.(*item[V]); now.Before(it.exp) {
			return it.v, true
		}
	} else if x, ok := g.prev.c.Get(key); ok {
		if it := x.(*item[V]); now.Before(it.exp) {
			c.promote(key, it)
			return it.v, true
		}
	}
	var zero V
	return zero, false
}

// promote moves it, found under key in the previous generation, to the
// current one, unless it was deleted or replaced meanwhile.
func (c *Cache[V]) promote(key string, it *item[V]) {
	// A copy, since go-cache keeps (and its Delete leaks) the key, and
	// Get's key must not escape: callers look up with a string converted
	// from a digest on their stack, which then costs no allocation.
	k := strings.Clone(key)
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.gens.Load()
	if x, ok := g.prev.c.Get(k); !ok || x.(*item[V]) != it {
		return
	}
	g.prev.c.Delete(k)
	c.insert(k, it)
}

// Set stores v under key until now+ttl. It reports false, storing nothing,
// when ttl <= 0. When the cache is full the oldest generation is dropped
// to make room.
func (c *Cache[V]) Set(key string, v V, now time.Time, ttl time.Duration) bool {
	if ttl <= 0 {
		return false
	}
	it := &item[V]{v: v, exp: now.Add(ttl)}
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.gens.Load()
	if _, ok := g.cur.c.Get(key); ok { // overwrite in place: no growth
		g.cur.put(key, it.exp, it)
		return true
	}
	g.prev.c.Delete(key)
	c.insert(key, it)
	return true
}

// GetOrSet returns the value stored under key if it has not expired at
// now; else it stores v until now+ttl and returns v. Callers that build a
// value on a miss get one value per key however many race to build it.
func (c *Cache[V]) GetOrSet(key string, v V, now time.Time, ttl time.Duration) V {
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.gens.Load()
	if x, ok := g.cur.c.Get(key); ok {
		if it := x.(*item[V]); now.Before(it.exp) {
			return it.v
		}
	}
	var it *item[V]
	if x, ok := g.prev.c.Get(key); ok {
		if old := x.(*item[V]); now.Before(old.exp) {
			it = old // promoted, as Get does
		}
	}
	if it == nil {
		if ttl <= 0 {
			return v
		}
		it = &item[V]{v: v, exp: now.Add(ttl)}
	}
	g.prev.c.Delete(key)
	if _, ok := g.cur.c.Get(key); ok { // expired in place: overwrite, no growth
		g.cur.put(key, it.exp, it)
	} else {
		c.insert(key, it)
	}
	return it.v
}

// insert adds key, held by neither generation, to the current one,
// dropping the previous generation first if the bound requires. Under mu.
func (c *Cache[V]) insert(key string, it *item[V]) {
	g := c.gens.Load()
	for g.cur.c.ItemCount() >= c.half || g.cur.c.ItemCount()+g.prev.c.ItemCount() >= c.max {
		g = &gens{cur: newGeneration(), prev: g.cur}
		c.gens.Store(g)
	}
	g.cur.put(key, it.exp, it)
}

func (g *generation) put(key string, exp time.Time, x any) {
	g.c.Set(key, x, gocache.NoExpiration)
	if exp.After(g.last) {
		g.last = exp
	}
}

// Len is the number of items held, including expired ones not yet dropped.
func (c *Cache[V]) Len() int {
	g := c.gens.Load()
	return g.cur.c.ItemCount() + g.prev.c.ItemCount()
}

// Purge drops each generation whose entries have all expired at now, then,
// if the previous generation is empty, makes the current one the previous.
// No new entry goes into the previous generation (entries still used move
// back out on their next hit), so it is dropped by the first Purge after
// its last entry expires. Purge does no work per entry.
func (c *Cache[V]) Purge(now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.gens.Load()
	cur, prev := g.cur, g.prev
	if prev.c.ItemCount() > 0 && !now.Before(prev.last) {
		prev = newGeneration()
	}
	if cur.c.ItemCount() > 0 && !now.Before(cur.last) {
		cur = newGeneration()
	}
	if prev.c.ItemCount() == 0 && cur.c.ItemCount() > 0 {
		cur, prev = newGeneration(), cur
	}
	if cur != g.cur || prev != g.prev {
		c.gens.Store(&gens{cur: cur, prev: prev})
	}
}

// StartJanitor runs Purge(time.Now()) every interval until ctx is done.
// It returns at once; every <= 0 starts nothing.
func (c *Cache[V]) StartJanitor(ctx context.Context, every time.Duration) {
	if every <= 0 {
		return
	}
	c.janitors.Add(1)
	go func() {
		defer c.janitors.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-t.C:
				c.Purge(now)
			}
		}
	}()
}

// Delete removes key from both generations.
func (c *Cache[V]) Delete(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	g := c.gens.Load()
	g.cur.c.Delete(key)
	g.prev.c.Delete(key)
}

// Flush removes every entry.
func (c *Cache[V]) Flush() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gens.Store(&gens{cur: newGeneration(), prev: newGeneration()})
}
