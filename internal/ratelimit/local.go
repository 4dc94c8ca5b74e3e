package ratelimit

import (
	"hash/maphash"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// nShards is the number of lock shards of the local table (a power of two).
const nShards = 64

// counter is one window's count: n requests admitted in window index win.
type counter struct {
	win, n int64
}

// entry holds the counters of one counting key, one slot per period, so a
// plan change keeps the counts of the periods both plans share.
type entry struct {
	c   [nPeriods]counter
	exp int64 // unix second from which every counter is stale (entry is dead)
}

type shard struct {
	mu sync.Mutex
	m  map[key]*entry
	_  [48]byte // one shard per cache line
}

// localStore is the in-process backend: a sharded table of at most max
// entries (package doc).
type localStore struct {
	seed      maphash.Seed
	n         atomic.Int64 // entries held
	max       atomic.Int64
	lastSweep atomic.Int64 // clock second of the last full sweep
	shards    [nShards]shard
}

func newLocalStore(maxKeys int64) *localStore {
	s := &localStore{seed: maphash.MakeSeed()}
	s.max.Store(maxKeys)
	return s
}

func (s *localStore) shardOf(k *key) int {
	h := maphash.String(s.seed, k.id)
	if k.route != "" {
		h ^= maphash.String(s.seed, k.route) * 0x9e3779b97f4a7c15
	}
	h ^= uint64(k.kind) * 0xff51afd7ed558ccd
	h ^= h >> 32
	return int(h & (nShards - 1))
}

// take counts one request for tg at unix second t.
func (s *localStore) take(tg *target, t int64, m *Metrics) Result {
	r, st := s.try(tg, t, s.sweepDue(t))
	if st == stBailed {
		s.sweep(t)
		r, st = s.try(tg, t, false)
	}
	if st == stUntracked {
		if f := m.Untracked; f != nil {
			f()
		}
	}
	return r
}

type status uint8

const (
	stOK        status = iota
	stBailed           // table full, nothing changed; sweep and retry
	stUntracked        // table full; answered without (some) keys
)

// maxStampLag is how far behind a later window's start a Take's time may be
// and still be counted in it: as long as a check can last (--check-timeout
// is at most 10s).
const maxStampLag = 10

// try runs one atomic check-and-count over the target's entries. When an
// entry is missing and the table is full it either bails out before changing
// anything (bail) or leaves that key uncounted.
func (s *localStore) try(tg *target, t int64, bail bool) (Result, status) {
	var (
		shs  [maxParts]int
		ents [maxParts]*entry
		n    = tg.n
	)
	for i := range n {
		shs[i] = s.shardOf(&tg.parts[i].key)
	}
	// Lock the distinct shards in ascending order, so Takes over several
	// shards cannot deadlock.
	held := s.lock(shs[:n])

	st := stOK
	for i := 0; i < n; i++ {
		sh := &s.shards[shs[i]]
		e := sh.m[tg.parts[i].key]
		if e == nil {
			if s.n.Add(1) > s.max.Load() {
				s.n.Add(-1)
				if bail {
					s.unlock(held)
					return Result{}, stBailed
				}
				st = stUntracked
				continue
			}
			if sh.m == nil {
				sh.m = make(map[key]*entry)
			}
			e = &entry{}
			k := tg.parts[i].key
			k.id, k.route = strings.Clone(k.id), strings.Clone(k.route)
			sh.m[k] = e
		}
		ents[i] = e
	}

	var ev [maxWins]evalWin
	var ctrs [maxWins]*counter
	var owner [maxWins]*entry
	nev := 0
	allowed := true
	for i := 0; i < n; i++ {
		e := ents[i]
		if e == nil {
			continue
		}
		for wi := range tg.parts[i].plan.wins {
			w := &tg.parts[i].plan.wins[wi]
			idx := t / w.secs
			c := &e.c[w.slot]
			if c.win > idx && c.win*w.secs-t <= maxStampLag {
				// A check that read the clock before one that counted in
				// a later window but took the lock after it: it counts in
				// that later window. Going back would rewind the counter
				// to an old window (admitting this request though that
				// window was spent) and the next request would find the
				// later window empty. A clock stepped back further than a
				// check can last is a clock corrected, not a late check:
				// the counter follows it.
				idx = c.win
			}
			var cur int64
			if c.win == idx {
				cur = c.n
			}
			if cur >= w.limit {
				allowed = false
			}
			ev[nev] = evalWin{w: w, idx: idx, cur: cur}
			ctrs[nev], owner[nev] = c, e
			nev++
		}
	}
	if allowed {
		for i := 0; i < nev; i++ {
			c, e := ctrs[i], owner[i]
			c.win, c.n = ev[i].idx, ev[i].cur+1
			if reset := (ev[i].idx + 1) * ev[i].w.secs; reset > e.exp {
				e.exp = reset
			}
		}
	}
	s.unlock(held)

	if nev == 0 {
		return Result{Allowed: true, Degraded: true}, st
	}
	r := summarize(ev[:nev], allowed, t, tg.policy())
	r.Degraded = st == stUntracked
	return r, st
}

// locked is the distinct shards a Take holds, in ascending order.
type locked struct {
	idx [maxParts]int
	n   int
}

// lock locks the distinct shards of shs in ascending order.
func (s *localStore) lock(shs []int) (l locked) {
	l.n = copy(l.idx[:], shs)
	o := l.idx[:l.n]
	slices.Sort(o)
	l.n = len(slices.Compact(o))
	for _, i := range l.idx[:l.n] {
		s.shards[i].mu.Lock()
	}
	return l
}

func (s *localStore) unlock(l locked) {
	for i := l.n - 1; i >= 0; i-- {
		s.shards[l.idx[i]].mu.Unlock()
	}
}

// sweepDue reports whether a sweep at t may run (at most one per second).
func (s *localStore) sweepDue(t int64) bool { return t > s.lastSweep.Load() }

// sweep removes dead entries from every shard, at most once per clock second.
func (s *localStore) sweep(t int64) {
	last := s.lastSweep.Load()
	if t <= last || !s.lastSweep.CompareAndSwap(last, t) {
		return
	}
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for k, e := range sh.m {
			if e.exp <= t {
				delete(sh.m, k)
				s.n.Add(-1)
			}
		}
		sh.mu.Unlock()
	}
}

// size returns the number of tracked keys.
func (s *localStore) size() int64 { return s.n.Load() }
