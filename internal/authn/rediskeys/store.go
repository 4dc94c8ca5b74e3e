// Package rediskeys is an API-key store in Redis, for key sets that outgrow
// one machine's memory (internal/authn/apikey keeps the embedded one).
//
// Redis holds one string per key, named <prefix>:<hex SHA-256 of the key>,
// whose value is the key's record exactly as in extauthz.api_keys. A lookup
// hashes the presented key and asks a bounded local cache first; on a miss
// it sends one GET. Both outcomes are cached: a record for positive_ttl, "no
// such key" for negative_ttl, each cache with its own size bound so unknown
// keys sent in bulk never push known ones out. A full cache evicts (see
// internal/cache: the most recently used half of the bound is always
// held). Freshness is judged at the time the lookup is given (a check's
// start), so a hit reads no clock and allocates nothing.
//
// Writers (extauthz key ... --redis) publish the digest of every record
// they change on <prefix>:invalidate; every sidecar subscribed drops its
// cached entry at once. When the subscription is down, or a record is
// changed without publishing, a cached entry is still re-read from Redis
// once positive_ttl (negative_ttl for unknown keys) has passed: that is the
// documented upper bound for a revocation to reach every sidecar. After the
// subscription is (re)established every cached entry is dropped, since
// messages published meanwhile were lost.
//
// Identities are stable: a cached record's *authn.Identity is reused for as
// long as the record's bytes in Redis are unchanged (also across re-reads),
// and a changed record gets a new one, so the decision memo, which keys on
// the identity pointer, never serves a decision made for another record.
// The status (revoked, suspended, expired at the lookup's time) is part of
// every result and of the memo key, so a revoked key never meets an allow
// remembered for it.
//
// When Redis cannot be reached on a miss (or holds a record that does not
// parse) the lookup fails closed: status unavailable, which the shipped
// rulebook denies as auth_unavailable. A stale cached record is never
// served instead.
package rediskeys

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/extauthz/extauthz/internal/authn"
	"github.com/extauthz/extauthz/internal/authn/apikey"
	"github.com/extauthz/extauthz/internal/cache"
)

// Lookup results, as Metrics.Lookup is told them.
const (
	ResultHit         = "hit"          // a cached record
	ResultNegativeHit = "negative_hit" // a cached "no such key"
	ResultMiss        = "miss"         // asked Redis, which answered
	ResultError       = "error"        // asked Redis, which failed (or held a bad record): unavailable
)

// Metrics are told what the store does; nil functions are skipped.
type Metrics struct {
	Lookup      func(result string)
	Invalidated func() // an invalidation message was applied
}

// Options tune a store.
type Options struct {
	// Log receives fault lines (Redis failing, a bad record, the
	// invalidation channel down); the caller throttles them.
	Log     *slog.Logger
	Metrics Metrics
}

// Store looks keys up in Redis through a local cache. It is safe for
// concurrent use.
type Store struct {
	cfg    Config
	client *redis.Client
	opts   Options
	pos    *cache.Cache[*entry] // records
	neg    *cache.Cache[*entry] // unknown keys

	// gen counts invalidations; a lookup caches what it read only if none
	// happened while it read (mu makes that check and the store one step).
	mu  sync.Mutex
	gen atomic.Uint64

	failing    atomic.Bool // Redis failing (logged on transitions)
	subscribed atomic.Bool
	ps         *redis.PubSub
	stop       context.CancelFunc
	done       chan struct{}
	refs       int // under registry.mu
}

// entry is one cached outcome; immutable.
type entry struct {
	digest [sha256.Size]byte
	rec    *apikey.Entry // nil in the negative cache
	raw    string        // the record's bytes, to keep rec while unchanged
	fresh  time.Time     // served without asking Redis before this
}

// New connects lazily to cfg.Addr (a missing Redis never blocks start-up:
// lookups fail closed until it answers) and subscribes to the invalidation
// channel. cfg must have passed Check. Close releases it.
func New(cfg Config, opts Options) *Store {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	timeout := time.Duration(cfg.TimeoutMS) * time.Millisecond
	s := &Store{
		cfg:  cfg,
		opts: opts,
		pos:  cache.New[*entry](cfg.CacheSize),
		neg:  cache.New[*entry](cfg.NegativeCacheSize),
		client: redis.NewClient(&redis.Options{
			Addr: cfg.Addr,
			// As the quotas' client: every wait bounded by the lookup budget.
			DialTimeout:              timeout,
			ReadTimeout:              timeout,
			WriteTimeout:             timeout,
			PoolTimeout:              timeout,
			ContextTimeoutEnabled:    true,
			DialerRetries:            1,
			MaxRetries:               -1, // a retry would be a second round trip
			DisableIdentity:          true,
			MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
		}),
		done: make(chan struct{}),
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	// Expired entries are dropped in the background, not by lookups.
	s.pos.StartJanitor(ctx, max(s.positiveTTL(), time.Second))
	s.neg.StartJanitor(ctx, max(s.negativeTTL(), time.Second))
	s.ps = s.client.Subscribe(ctx, cfg.Channel())
	go s.subscribe(ctx)
	return s
}

func (s *Store) positiveTTL() time.Duration {
	return time.Duration(s.cfg.PositiveTTLMS) * time.Millisecond
}
func (s *Store) negativeTTL() time.Duration {
	return time.Duration(s.cfg.NegativeTTLMS) * time.Millisecond
}

// Close stops the subscription and closes the client.
func (s *Store) Close() {
	s.stop()
	_ = s.ps.Close() // a blocked Receive ignores its context
	<-s.done
	_ = s.client.Close()
}

// Config is the store's configuration (defaults filled).
func (s *Store) Config() Config { return s.cfg }

// Subscribed reports whether invalidations are being received.
func (s *Store) Subscribed() bool { return s.subscribed.Load() }

// Entries is the number of cached records and cached unknown keys.
func (s *Store) Entries() (records, unknown int) { return s.pos.Len(), s.neg.Len() }

func (s *Store) count(result string) {
	if f := s.opts.Metrics.Lookup; f != nil {
		f(result)
	}
}

// Lookup verifies a presented key at time now: from the cache, or with one
// GET bounded by timeout_ms and ctx's deadline. now is also the time the
// cache's freshness is judged at (a check passes the time it started; the
// store reads no clock of its own).
func (s *Store) Lookup(ctx context.Context, key string, now time.Time) apikey.Result {
	d := sha256.Sum256([]byte(key))
	// string(d[:]) does not escape here: no allocation on a hit.
	prev, ok := s.pos.Get(string(d[:]), now)
	if ok && subtle.ConstantTimeCompare(prev.digest[:], d[:]) == 1 {
		if now.Before(prev.fresh) {
			s.count(ResultHit)
			return prev.rec.At(now)
		}
	} else {
		prev = nil
		if n, ok := s.neg.Get(string(d[:]), now); ok && now.Before(n.fresh) {
			s.count(ResultNegativeHit)
			return apikey.Result{Status: authn.Unknown}
		}
	}
	return s.fetch(ctx, &d, prev, now)
}

// fetch reads key digest d from Redis and caches the outcome as of now.
func (s *Store) fetch(ctx context.Context, d *[sha256.Size]byte, prev *entry, now time.Time) apikey.Result {
	g := s.gen.Load()
	ctx, cancel := context.WithTimeout(ctx, time.Duration(s.cfg.TimeoutMS)*time.Millisecond)
	raw, err := s.client.Get(ctx, s.name(d)).Result()
	cancel()
	k := string(d[:])
	if errors.Is(err, redis.Nil) {
		s.recovered()
		s.put(g, func() {
			s.pos.Delete(k)
			s.neg.Set(k, &entry{digest: *d, fresh: now.Add(s.negativeTTL())}, now, s.negativeTTL())
		})
		s.count(ResultMiss)
		return apikey.Result{Status: authn.Unknown}
	}
	if err != nil {
		if !s.failing.Swap(true) {
			s.opts.Log.Warn("apikey store: redis failing: keys not cached are denied auth_unavailable", "addr", s.cfg.Addr, "err", err)
		} else {
			s.opts.Log.Warn("apikey store: redis lookup failed", "addr", s.cfg.Addr, "err", err)
		}
		s.count(ResultError)
		return apikey.Result{Status: authn.Unavailable}
	}
	s.recovered()
	var rec *apikey.Entry
	if prev != nil && prev.raw == raw {
		rec = prev.rec // unchanged: the same identity
	} else if rec, err = apikey.ParseRecord([]byte(raw)); err != nil {
		// Never the key; the digest names the record for its owner.
		s.opts.Log.Warn("apikey store: bad record in redis: denied auth_unavailable", "record", short(d), "err", err)
		s.count(ResultError)
		return apikey.Result{Status: authn.Unavailable}
	}
	s.put(g, func() {
		s.neg.Delete(k)
		// Kept past its freshness (twice the TTL) so a re-read of an
		// unchanged record keeps its identity.
		s.pos.Set(k, &entry{digest: *d, rec: rec, raw: raw, fresh: now.Add(s.positiveTTL())}, now, 2*s.positiveTTL())
	})
	s.count(ResultMiss)
	return rec.At(now)
}

// put runs store unless an invalidation happened since generation g.
func (s *Store) put(g uint64, store func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gen.Load() == g {
		store()
	}
}

func (s *Store) recovered() {
	if s.failing.Swap(false) {
		s.opts.Log.Info("apikey store: redis answering again", "addr", s.cfg.Addr)
	}
}

// name is the Redis key of digest d.
func (s *Store) name(d *[sha256.Size]byte) string {
	return Name(s.cfg.Prefix, hex.EncodeToString(d[:]))
}

// Name is the Redis key holding the record of the key whose SHA-256 is
// digest (lower-case hex).
func Name(prefix, digest string) string { return prefix + ":" + digest }

// invalidate applies one message: a digest (lower-case hex) or "*" (all).
func (s *Store) invalidate(msg string) {
	var k string
	if msg != "*" {
		b, err := hex.DecodeString(msg)
		if err != nil || len(b) != sha256.Size || hex.EncodeToString(b) != msg {
			s.opts.Log.Warn("apikey store: ignored an invalidation that is not a lower-case hex SHA-256 or *", "channel", s.cfg.Channel(), "length", len(msg))
			return
		}
		k = string(b)
	}
	s.mu.Lock()
	s.gen.Add(1)
	if msg == "*" {
		s.pos.Flush()
		s.neg.Flush()
	} else {
		s.pos.Delete(k)
		s.neg.Delete(k)
	}
	s.mu.Unlock()
	if f := s.opts.Metrics.Invalidated; f != nil {
		f()
	}
}

// subscribe receives invalidations until ctx ends. go-redis re-dials and
// re-subscribes after a failure; each (re)subscription drops the whole
// cache, since what was published meanwhile is lost.
func (s *Store) subscribe(ctx context.Context) {
	defer close(s.done)
	backoff := 50 * time.Millisecond
	for {
		msg, err := s.ps.Receive(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			if s.subscribed.Swap(false) {
				s.opts.Log.Warn("apikey store: invalidation channel down: revocations reach this sidecar within positive_ttl_ms", "addr", s.cfg.Addr, "err", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 2*time.Second)
			continue
		}
		backoff = 50 * time.Millisecond
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				s.subscribed.Store(true)
				s.invalidate("*")
			}
		case *redis.Message:
			s.invalidate(m.Payload)
		}
	}
}

func short(d *[sha256.Size]byte) string { return hex.EncodeToString(d[:6]) + "…" }
