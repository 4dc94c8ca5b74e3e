// Package cache is a small, typed, size-bounded TTL cache over
// github.com/patrickmn/go-cache.
//
// go-cache (unmaintained since 2019, no go.mod) has no size bound, its
// janitor sweeps the whole map under the write lock, and that janitor can
// only be stopped by a finalizer, so this wrapper
//   - enforces an entry cap itself (when full it purges expired entries once,
//     at most once per purgeEvery, and otherwise refuses the insert),
//   - creates go-cache with cleanup interval 0 and drives expiry from its own
//     ticker (StartJanitor) that stops with a context,
//   - counts hits and misses with atomics.
//
// The cache is meant for positive results only (verified credentials), keyed
// by a hash of the credential, so keys are never attacker-chosen in bulk.
package cache

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	gocache "github.com/patrickmn/go-cache"
)

// purgeEvery bounds how often a Set on a full cache may run DeleteExpired,
// which scans the whole map under go-cache's write lock.
const purgeEvery = time.Second

// Stats is a snapshot of the cache counters.
type Stats struct {
	Hits    uint64
	Misses  uint64
	Entries int // items held, including expired ones not yet purged
}

// Cache is a typed TTL cache holding at most maxEntries items. It is safe for
// concurrent use. Get takes only go-cache's read lock; Set is serialised by
// the wrapper so the cap holds under concurrent inserts.
type Cache[V any] struct {
	c   *gocache.Cache
	max int

	hits   atomic.Uint64
	misses atomic.Uint64

	setMu     sync.Mutex // serialises Set so count-then-insert is atomic
	lastPurge time.Time  // guarded by setMu

	janitors sync.WaitGroup // running janitor goroutines (tests wait on it)
}

// New returns a cache that holds at most maxEntries items (at least 1).
func New[V any](maxEntries int) *Cache[V] {
	if maxEntries < 1 {
		maxEntries = 1
	}
	return &Cache[V]{
		c:   gocache.New(gocache.NoExpiration, 0),
		max: maxEntries,
	}
}

// Get returns the value stored under key. Expired entries are misses.
func (c *Cache[V]) Get(key string) (V, bool) {
	x, ok := c.c.Get(key)
	if ok {
		if v, isV := x.(V); isV {
			c.hits.Add(1)
			return v, true
		}
	}
	c.misses.Add(1)
	var zero V
	return zero, false
}

// Set stores v under key for ttl. It reports false, storing nothing, when
// ttl <= 0 or when the cache is full even after purging expired entries.
// Overwriting a live key always succeeds.
func (c *Cache[V]) Set(key string, v V, ttl time.Duration) bool {
	if ttl <= 0 {
		return false
	}
	c.setMu.Lock()
	defer c.setMu.Unlock()
	if c.c.ItemCount() >= c.max {
		if _, live := c.c.Get(key); !live {
			now := time.Now()
			if now.Sub(c.lastPurge) < purgeEvery {
				return false
			}
			c.lastPurge = now
			c.c.DeleteExpired()
			if c.c.ItemCount() >= c.max {
				return false
			}
		}
	}
	c.c.Set(key, v, ttl)
	return true
}

// Len is the number of items held, including expired ones not yet purged.
func (c *Cache[V]) Len() int { return c.c.ItemCount() }

// Stats returns the hit and miss counters and the current item count.
func (c *Cache[V]) Stats() Stats {
	return Stats{Hits: c.hits.Load(), Misses: c.misses.Load(), Entries: c.c.ItemCount()}
}

// StartJanitor deletes expired entries every interval until ctx is done.
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
			case <-t.C:
				c.c.DeleteExpired()
			}
		}
	}()
}

// Delete removes key.
func (c *Cache[V]) Delete(key string) { c.c.Delete(key) }

// Flush removes every entry.
func (c *Cache[V]) Flush() { c.c.Flush() }
