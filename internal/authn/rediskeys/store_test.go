package rediskeys

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/extauthz/extauthz/internal/authn"
	"github.com/extauthz/extauthz/internal/authn/apikey"
	"github.com/extauthz/extauthz/internal/testutil"
	"github.com/extauthz/extauthz/internal/testutil/redistest"
)

func TestMain(m *testing.M) {
	redis.SetLogger(quiet{}) // the outage tests make go-redis log dial failures
	if !redistest.Installed() {
		notice, _ := redistest.Missing("internal/authn/rediskeys")
		fmt.Fprintln(os.Stderr, notice)
	}
	os.Exit(m.Run())
}

type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}

var now = time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)

// clock is a sidecar's clock: the time its lookups pass.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// counts records what a store reports.
type counts struct {
	mu          sync.Mutex
	m           map[string]int
	invalidated chan struct{}
}

func newCounts() *counts {
	return &counts{m: map[string]int{}, invalidated: make(chan struct{}, 1024)}
}

func (c *counts) metrics() Metrics {
	return Metrics{
		Lookup:      func(r string) { c.mu.Lock(); c.m[r]++; c.mu.Unlock() },
		Invalidated: func() { c.invalidated <- struct{}{} },
	}
}

func (c *counts) get(r string) int { c.mu.Lock(); defer c.mu.Unlock(); return c.m[r] }

// waitInvalidated waits for the store to apply one invalidation (failing
// the test after a generous guard, never asserting a duration).
func (c *counts) waitInvalidated(t *testing.T) {
	t.Helper()
	select {
	case <-c.invalidated:
	case <-time.After(10 * time.Second):
		t.Fatal("no invalidation applied")
	}
}

type sidecar struct {
	*Store
	clock  *clock
	counts *counts
	log    *testutil.SyncBuffer
}

func config(addr string) Config {
	c := Config{Type: TypeRedis, Addr: addr, TimeoutMS: 2000, PositiveTTLMS: 30000, NegativeTTLMS: 5000}
	if p := c.Check(); len(p) > 0 {
		panic(p)
	}
	return c
}

// newSidecar opens a store as one sidecar would, subscribed.
func newSidecar(t *testing.T, cfg Config) *sidecar {
	t.Helper()
	sc := &sidecar{clock: &clock{t: now}, counts: newCounts(), log: &testutil.SyncBuffer{}}
	sc.Store = New(cfg, Options{Metrics: sc.counts.metrics(), Log: slog.New(slog.NewJSONHandler(sc.log, nil))})
	t.Cleanup(sc.Close)
	sc.counts.waitInvalidated(t) // the subscription's flush
	if !sc.Subscribed() {
		t.Fatal("not subscribed")
	}
	return sc
}

func writer(t testing.TB, addr string) Writer {
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { c.Close() })
	return Writer{Client: c, Prefix: DefaultPrefix}
}

func put(t *testing.T, w Writer, key, record string) {
	t.Helper()
	if err := w.Put(context.Background(), apikey.Hash(key), []byte(record)); err != nil {
		t.Fatal(err)
	}
}

func TestLookupStatuses(t *testing.T) {
	srv := redistest.Start(t, "internal/authn/rediskeys")
	w := writer(t, srv.Addr())
	put(t, w, "good", `{"id":"k1","subject":"svc-a","tenants":["42"],"scopes":["orders:read"],"expires_at":"2027-01-01T00:00:00Z","plan":"free"}`)
	put(t, w, "old", `{"id":"k2","expires_at":"2026-12-04T12:00:00Z"}`)
	put(t, w, "gone", `{"id":"k3","status":"revoked"}`)
	put(t, w, "paused", `{"id":"k4","status":"suspended"}`)
	put(t, w, "ws", `{"id":"k5","tenants":{"workspace":["w1"],"brand":["b1",7]}}`)
	s := newSidecar(t, config(srv.Addr()))
	cases := []struct {
		key  string
		want authn.Status
		id   string
	}{
		{"good", authn.Valid, "k1"},
		{"old", authn.Expired, "k2"},
		{"gone", authn.Revoked, "k3"},
		{"paused", authn.Suspended, "k4"},
		{"ws", authn.Valid, "k5"},
		{"nope", authn.Unknown, ""},
		{"", authn.Unknown, ""},
		{apikey.Hash("good"), authn.Unknown, ""}, // the stored digest is not a key
	}
	for pass := range 2 { // from Redis, then from the cache
		for _, c := range cases {
			r := s.Lookup(context.Background(), c.key, s.clock.Now())
			if r.Status != c.want {
				t.Errorf("pass %d: Lookup(%q) = %s, want %s", pass, c.key, r.Status, c.want)
			}
			if c.id != "" && (r.Identity == nil || r.Identity.KeyID != c.id) {
				t.Errorf("pass %d: Lookup(%q) identity = %+v", pass, c.key, r.Identity)
			}
		}
	}
	if got, want := s.counts.get(ResultMiss), len(cases); got != want {
		t.Errorf("%d lookups went to Redis, want %d (one per key)", got, want)
	}
	if got, want := s.counts.get(ResultHit)+s.counts.get(ResultNegativeHit), len(cases); got != want {
		t.Errorf("%d cache hits, want %d", got, want)
	}
	id := s.Lookup(context.Background(), "good", s.clock.Now()).Identity
	if id.Subject != "svc-a" || id.Plan != "free" || id.Tenants["tenant"][0] != "42" || id.Scopes[0] != "orders:read" {
		t.Errorf("identity = %+v", id)
	}
	// Expiry is judged at the lookup's time, also from the cache.
	if r := s.Lookup(context.Background(), "good", time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)); r.Status != authn.Expired {
		t.Errorf("past expires_at: %s", r.Status)
	}
}

// A cached record keeps its identity pointer while the record is unchanged,
// re-reads included; a changed record gets a new one.
func TestIdentityStableWhileUnchanged(t *testing.T) {
	srv := redistest.Start(t, "internal/authn/rediskeys")
	w := writer(t, srv.Addr())
	put(t, w, "k", `{"id":"k1","scopes":["a"]}`)
	s := newSidecar(t, config(srv.Addr()))
	first := s.Lookup(context.Background(), "k", s.clock.Now()).Identity
	if s.Lookup(context.Background(), "k", s.clock.Now()).Identity != first {
		t.Fatal("a cache hit gave another identity")
	}
	s.clock.Add(31 * time.Second) // stale: re-read
	if s.Lookup(context.Background(), "k", s.clock.Now()).Identity != first {
		t.Error("a re-read of the unchanged record gave another identity")
	}
	if got := s.counts.get(ResultMiss); got != 2 {
		t.Errorf("%d reads from Redis, want 2", got)
	}
	put(t, w, "k", `{"id":"k1","scopes":["a","b"]}`)
	s.counts.waitInvalidated(t)
	id := s.Lookup(context.Background(), "k", s.clock.Now()).Identity
	if id == first || len(id.Scopes) != 2 {
		t.Errorf("a changed record: identity %p (first %p), scopes %v", id, first, id.Scopes)
	}
}

// A revocation written on one sidecar's side reaches another sidecar's
// cache through pub/sub, before the TTL.
func TestRevocationReachesOtherSidecars(t *testing.T) {
	srv := redistest.Start(t, "internal/authn/rediskeys")
	w := writer(t, srv.Addr())
	put(t, w, "k", `{"id":"k1"}`)
	a, b := newSidecar(t, config(srv.Addr())), newSidecar(t, config(srv.Addr()))
	for _, s := range []*sidecar{a, b} {
		for range 2 {
			if r := s.Lookup(context.Background(), "k", s.clock.Now()); r.Status != authn.Valid {
				t.Fatalf("before: %s", r.Status)
			}
		}
	}
	if err := w.SetStatus(context.Background(), apikey.Hash("k"), "revoked"); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*sidecar{a, b} {
		s.counts.waitInvalidated(t)
		if r := s.Lookup(context.Background(), "k", s.clock.Now()); r.Status != authn.Revoked || r.Identity.KeyID != "k1" {
			t.Errorf("after revocation: %s %+v", r.Status, r.Identity)
		}
	}
	// A new key is visible at once too, though its absence was cached.
	if r := a.Lookup(context.Background(), "new", a.clock.Now()); r.Status != authn.Unknown {
		t.Fatalf("new before: %s", r.Status)
	}
	put(t, w, "new", `{"id":"k2"}`)
	a.counts.waitInvalidated(t)
	if r := a.Lookup(context.Background(), "new", a.clock.Now()); r.Status != authn.Valid {
		t.Errorf("new key after put: %s", r.Status)
	}
	if err := w.Delete(context.Background(), apikey.Hash("new")); err != nil {
		t.Fatal(err)
	}
	a.counts.waitInvalidated(t)
	if r := a.Lookup(context.Background(), "new", a.clock.Now()); r.Status != authn.Unknown {
		t.Errorf("deleted key: %s", r.Status)
	}
}

// A change nobody published (pub/sub down, a writer that does not publish)
// is seen once the TTL has passed: the documented bound.
func TestTTLBoundsUnpublishedChanges(t *testing.T) {
	srv := redistest.Start(t, "internal/authn/rediskeys")
	w := writer(t, srv.Addr())
	put(t, w, "k", `{"id":"k1"}`)
	s := newSidecar(t, config(srv.Addr()))
	if r := s.Lookup(context.Background(), "k", s.clock.Now()); r.Status != authn.Valid {
		t.Fatal(r.Status)
	}
	if r := s.Lookup(context.Background(), "unknown", s.clock.Now()); r.Status != authn.Unknown {
		t.Fatal(r.Status)
	}
	ctx := context.Background()
	w.Client.Set(ctx, Name(DefaultPrefix, apikey.Hash("k")), `{"id":"k1","status":"revoked"}`, 0)
	w.Client.Set(ctx, Name(DefaultPrefix, apikey.Hash("unknown")), `{"id":"k9"}`, 0)
	s.clock.Add(4 * time.Second) // within both TTLs: cached answers
	if r := s.Lookup(ctx, "k", s.clock.Now()); r.Status != authn.Valid {
		t.Errorf("within positive_ttl: %s (served from the cache, as documented)", r.Status)
	}
	if r := s.Lookup(ctx, "unknown", s.clock.Now()); r.Status != authn.Unknown {
		t.Errorf("within negative_ttl: %s", r.Status)
	}
	s.clock.Add(2 * time.Second) // past negative_ttl (5s)
	if r := s.Lookup(ctx, "unknown", s.clock.Now()); r.Status != authn.Valid {
		t.Errorf("past negative_ttl: %s", r.Status)
	}
	s.clock.Add(25 * time.Second) // past positive_ttl (30s)
	if r := s.Lookup(ctx, "k", s.clock.Now()); r.Status != authn.Revoked {
		t.Errorf("past positive_ttl: %s", r.Status)
	}
}

// Redis down: a key not cached (or cached but stale) is unavailable, never
// valid; after Redis restarts (empty) the re-subscription drops the cache.
func TestRedisDownFailsClosed(t *testing.T) {
	srv := redistest.Start(t, "internal/authn/rediskeys")
	w := writer(t, srv.Addr())
	put(t, w, "k", `{"id":"k1"}`)
	cfg := config(srv.Addr())
	cfg.TimeoutMS = 200
	s := newSidecar(t, cfg)
	if r := s.Lookup(context.Background(), "k", s.clock.Now()); r.Status != authn.Valid {
		t.Fatal(r.Status)
	}
	srv.Kill()
	for _, key := range []string{"other", "k2", ""} {
		if r := s.Lookup(context.Background(), key, s.clock.Now()); r.Status != authn.Unavailable || r.Identity != nil {
			t.Errorf("Redis down, %q not cached: %s %v", key, r.Status, r.Identity)
		}
	}
	if r := s.Lookup(context.Background(), "k", s.clock.Now()); r.Status != authn.Valid {
		t.Errorf("Redis down, k cached and fresh: %s", r.Status)
	}
	s.clock.Add(31 * time.Second)
	if r := s.Lookup(context.Background(), "k", s.clock.Now()); r.Status != authn.Unavailable {
		t.Errorf("Redis down, k cached but stale: %s (a stale record must not be served)", r.Status)
	}
	if got := s.counts.get(ResultError); got != 4 {
		t.Errorf("%d errors counted, want 4", got)
	}
	if !strings.Contains(s.log.String(), "apikey store: redis failing") {
		t.Errorf("outage not logged:\n%s", s.log)
	}
	for _, secret := range []string{`"other"`, `"k2"`, apikey.Hash("other")} {
		if strings.Contains(s.log.String(), secret) {
			t.Errorf("log holds %s:\n%s", secret, s.log)
		}
	}

	// Back, empty (no persistence): the re-subscription drops the cache.
	s.clock.Add(-31 * time.Second)
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	waitSubscribed(t, s)
	if r := s.Lookup(context.Background(), "k", s.clock.Now()); r.Status != authn.Unknown {
		t.Errorf("after a restart of an empty Redis: %s", r.Status)
	}
}

func waitSubscribed(t *testing.T, s *sidecar) {
	t.Helper()
	for range 1000 {
		select {
		case <-s.counts.invalidated:
			if s.Subscribed() {
				return
			}
		case <-time.After(10 * time.Second):
			t.Fatal("not subscribed again")
		}
	}
	t.Fatal("not subscribed again")
}

// A record in Redis that does not parse is unavailable (never valid, never
// unknown), and the log names it by digest prefix only.
func TestBadRecordFailsClosed(t *testing.T) {
	srv := redistest.Start(t, "internal/authn/rediskeys")
	w := writer(t, srv.Addr())
	ctx := context.Background()
	for key, rec := range map[string]string{"a": `{"id":"x","status":"maybe"}`, "b": `not json`, "c": `{"id":"x","admin":true}`} {
		w.Client.Set(ctx, Name(DefaultPrefix, apikey.Hash(key)), rec, 0)
	}
	s := newSidecar(t, config(srv.Addr()))
	for _, key := range []string{"a", "b", "c"} {
		if r := s.Lookup(ctx, key, s.clock.Now()); r.Status != authn.Unavailable || r.Identity != nil {
			t.Errorf("%s: %s %v", key, r.Status, r.Identity)
		}
	}
	if !strings.Contains(s.log.String(), apikey.Hash("a")[:12]) || strings.Contains(s.log.String(), apikey.Hash("a")) {
		t.Errorf("want the digest prefix only in the log:\n%s", s.log)
	}
}

// Invalidations that are not a digest or "*" change nothing; "*" drops all.
func TestInvalidationMessages(t *testing.T) {
	srv := redistest.Start(t, "internal/authn/rediskeys")
	w := writer(t, srv.Addr())
	put(t, w, "k", `{"id":"k1"}`)
	s := newSidecar(t, config(srv.Addr()))
	ctx := context.Background()
	s.Lookup(ctx, "k", s.clock.Now())
	s.Lookup(ctx, "x", s.clock.Now())
	if rec, unk := s.Entries(); rec != 1 || unk != 1 {
		t.Fatalf("entries %d, %d", rec, unk)
	}
	ch := (&Config{Prefix: DefaultPrefix}).Channel()
	for _, m := range []string{"k", strings.ToUpper(apikey.Hash("k")), apikey.Hash("k")[:63], ""} {
		w.Client.Publish(ctx, ch, m)
	}
	w.Client.Publish(ctx, ch, "*")
	s.counts.waitInvalidated(t) // messages arrive in order: the bad ones were seen first
	if rec, unk := s.Entries(); rec != 0 || unk != 0 {
		t.Errorf("after *: entries %d, %d", rec, unk)
	}
	if n := strings.Count(s.log.String(), "ignored an invalidation"); n != 4 {
		t.Errorf("%d ignored invalidations logged, want 4:\n%s", n, s.log)
	}
}

// Unknown keys sent in bulk fill the negative cache only: a known key
// stays cached.
func TestUnknownKeysDoNotEvictKnownOnes(t *testing.T) {
	srv := redistest.Start(t, "internal/authn/rediskeys")
	w := writer(t, srv.Addr())
	put(t, w, "k", `{"id":"k1"}`)
	cfg := config(srv.Addr())
	cfg.CacheSize, cfg.NegativeCacheSize = 4, 8
	s := newSidecar(t, cfg)
	ctx := context.Background()
	s.Lookup(ctx, "k", s.clock.Now())
	for i := range 100 {
		s.Lookup(ctx, fmt.Sprint("junk-", i), s.clock.Now())
	}
	if rec, unk := s.Entries(); rec != 1 || unk > 8 {
		t.Errorf("entries %d known, %d unknown (bounds 4, 8)", rec, unk)
	}
	misses := s.counts.get(ResultMiss)
	if r := s.Lookup(ctx, "k", s.clock.Now()); r.Status != authn.Valid || s.counts.get(ResultMiss) != misses {
		t.Errorf("the known key was not served from the cache: %s", r.Status)
	}
}

func TestWriter(t *testing.T) {
	srv := redistest.Start(t, "internal/authn/rediskeys")
	w := writer(t, srv.Addr())
	ctx := context.Background()
	if err := w.Put(ctx, "xa_plaintext_key", []byte(`{"id":"k"}`)); err == nil || strings.Contains(err.Error(), "xa_plaintext_key") {
		t.Errorf("a plaintext key as digest: %v", err)
	}
	if err := w.Put(ctx, apikey.Hash("k"), []byte(`{"id":"k","status":"maybe"}`)); err == nil {
		t.Error("an invalid record was written")
	}
	if err := w.SetStatus(ctx, apikey.Hash("none"), "revoked"); !errors.Is(err, ErrNotFound) {
		t.Errorf("revoking a missing key: %v", err)
	}
	if err := w.Delete(ctx, apikey.Hash("none")); !errors.Is(err, ErrNotFound) {
		t.Errorf("deleting a missing key: %v", err)
	}
	put(t, w, "k", `{"id":"k", "plan": "free",  "scopes": ["a"]}`)
	if err := w.SetStatus(ctx, apikey.Hash("k"), "suspended"); err != nil {
		t.Fatal(err)
	}
	got, _ := w.Client.Get(ctx, Name(DefaultPrefix, apikey.Hash("k"))).Result()
	if got != `{"id":"k","scopes":["a"],"status":"suspended","plan":"free"}` {
		t.Errorf("stored %s", got)
	}
	if err := w.SetStatus(ctx, apikey.Hash("k"), "gone"); err == nil {
		t.Error("a bad status was written")
	}

	// Import: every record stored, batched; a bad record stops it, named.
	var b strings.Builder
	b.WriteString("{")
	for i := range 25 {
		fmt.Fprintf(&b, "%q: {\"id\": \"imp-%d\"},\n", apikey.Hash(fmt.Sprint("imp", i)), i)
	}
	b.WriteString(`"` + apikey.Hash("last") + `": {"id": "imp-last", "tenants": ["42"]}}`)
	var batches atomic.Int32
	n, err := w.Import(ctx, strings.NewReader(b.String()), 10, func(int) { batches.Add(1) })
	if err != nil || n != 26 || batches.Load() != 3 {
		t.Fatalf("import: %d records, %d batches, %v", n, batches.Load(), err)
	}
	s := newSidecar(t, config(srv.Addr()))
	if r := s.Lookup(ctx, "imp7", s.clock.Now()); r.Status != authn.Valid || r.Identity.KeyID != "imp-7" {
		t.Errorf("imported key: %s %+v", r.Status, r.Identity)
	}
	bad := `{"` + apikey.Hash("x") + `": {"id": "x"}, "` + apikey.Hash("y") + `": {"id": "y", "status": "maybe"}}`
	n, err = w.Import(ctx, strings.NewReader(bad), 10, nil)
	if err == nil || n != 0 || !strings.Contains(err.Error(), apikey.Hash("y")[:12]) || !strings.Contains(err.Error(), "status") {
		t.Errorf("bad import: %d, %v", n, err)
	}
	if _, err := w.Import(ctx, strings.NewReader(`{"xa_plain": {"id": "x"}}`), 10, nil); err == nil || strings.Contains(err.Error(), "xa_plain") {
		t.Errorf("plaintext key in import: %v", err)
	}
}

func TestConfigCheck(t *testing.T) {
	c := Config{Type: TypeRedis, Addr: "r:6379"}
	if p := c.Check(); len(p) != 0 || c.Prefix != DefaultPrefix || c.TimeoutMS != 50 || c.CacheSize != DefaultCacheSize || c.PositiveTTLMS != 30000 {
		t.Errorf("defaults: %v %+v", p, c)
	}
	bad := Config{Type: TypeRedis, TimeoutMS: -1, CacheSize: -5, PositiveTTLMS: 1 << 40, Prefix: "a b"}
	p := bad.Check()
	for _, want := range []string{"addr: required", "timeout_ms:", "cache_size:", "positive_ttl_ms:", "prefix:"} {
		if !strings.Contains(strings.Join(p, "\n"), want) {
			t.Errorf("problems %q lack %q", p, want)
		}
	}
	if p := (&Config{Type: "memcached"}).Check(); len(p) != 1 || !strings.HasPrefix(p[0], "type:") {
		t.Errorf("bad type: %v", p)
	}
}

// The failing order: a scan over more keys than the cache holds,
// then a hot key. The hot key is cached (and served without a round trip)
// though the cache was full; the bound holds throughout.
func TestHotKeyCachedAfterScan(t *testing.T) {
	srv := redistest.Start(t, "internal/authn/rediskeys")
	w := writer(t, srv.Addr())
	for i := range 40 {
		put(t, w, fmt.Sprint("scan-", i), fmt.Sprintf(`{"id":"s%d"}`, i))
	}
	put(t, w, "hot", `{"id":"hot"}`)
	cfg := config(srv.Addr())
	cfg.CacheSize = 8
	s := newSidecar(t, cfg)
	ctx := context.Background()
	for i := range 40 {
		if r := s.Lookup(ctx, fmt.Sprint("scan-", i), s.clock.Now()); r.Status != authn.Valid {
			t.Fatalf("scan-%d: %s", i, r.Status)
		}
		if rec, _ := s.Entries(); rec > 8 {
			t.Fatalf("%d records cached; bound 8", rec)
		}
	}
	for range 3 {
		if r := s.Lookup(ctx, "hot", s.clock.Now()); r.Status != authn.Valid {
			t.Fatal(r.Status)
		}
	}
	if got := s.counts.get(ResultMiss); got != 41 {
		t.Errorf("%d reads from Redis; want 41 (each key once: the hot key was cached)", got)
	}
	if got := s.counts.get(ResultHit); got != 2 {
		t.Errorf("%d cache hits; want 2", got)
	}
}

// A revocation (pub/sub) removes the key wherever the cache holds it: also
// from the older generation, which a full cache keeps for keys not used
// since it filled.
func TestRevocationReachesOlderGeneration(t *testing.T) {
	srv := redistest.Start(t, "internal/authn/rediskeys")
	w := writer(t, srv.Addr())
	for _, k := range []string{"k1", "k2", "other"} {
		put(t, w, k, fmt.Sprintf(`{"id":%q}`, k))
	}
	cfg := config(srv.Addr())
	cfg.CacheSize = 4 // a generation holds 2
	s := newSidecar(t, cfg)
	ctx := context.Background()
	for _, k := range []string{"k1", "k2", "other"} { // "other" starts a new generation: k1, k2 are the older one
		if r := s.Lookup(ctx, k, s.clock.Now()); r.Status != authn.Valid {
			t.Fatal(r.Status)
		}
	}
	// The older generation serves: k2 from the cache.
	if r := s.Lookup(ctx, "k2", s.clock.Now()); r.Status != authn.Valid || s.counts.get(ResultHit) != 1 {
		t.Fatalf("k2 from the older generation: %s, %d hits", r.Status, s.counts.get(ResultHit))
	}
	if err := w.SetStatus(ctx, apikey.Hash("k1"), "revoked"); err != nil {
		t.Fatal(err)
	}
	s.counts.waitInvalidated(t)
	if r := s.Lookup(ctx, "k1", s.clock.Now()); r.Status != authn.Revoked {
		t.Errorf("k1 after its revocation: %s (served from the older generation)", r.Status)
	}
	if got := s.counts.get(ResultMiss); got != 4 {
		t.Errorf("%d reads from Redis; want 4 (k1 re-read after the revocation)", got)
	}
}

// A change nobody published is seen once the TTL has passed also for an
// entry in the older generation, for one moved back from it by a hit (the
// move keeps its TTL), and for an unknown key.
func TestTTLHoldsInOlderGeneration(t *testing.T) {
	srv := redistest.Start(t, "internal/authn/rediskeys")
	w := writer(t, srv.Addr())
	for _, k := range []string{"k", "k2", "a"} {
		put(t, w, k, fmt.Sprintf(`{"id":%q}`, k))
	}
	cfg := config(srv.Addr())
	cfg.CacheSize, cfg.NegativeCacheSize = 4, 4
	s := newSidecar(t, cfg)
	ctx := context.Background()
	for _, k := range []string{"k", "u", "k2", "u2", "a", "u3"} { // k, k2 and u, u2 end in the older generations
		s.Lookup(ctx, k, s.clock.Now())
	}
	for _, k := range []string{"k", "k2"} {
		w.Client.Set(ctx, Name(DefaultPrefix, apikey.Hash(k)), fmt.Sprintf(`{"id":%q,"status":"revoked"}`, k), 0)
	}
	w.Client.Set(ctx, Name(DefaultPrefix, apikey.Hash("u")), `{"id":"u"}`, 0)
	s.clock.Add(5 * time.Second) // negative_ttl
	if r := s.Lookup(ctx, "u", s.clock.Now()); r.Status != authn.Valid {
		t.Errorf("unknown key at negative_ttl: %s", r.Status)
	}
	if r := s.Lookup(ctx, "k", s.clock.Now()); r.Status != authn.Valid {
		t.Errorf("within positive_ttl: %s (served from the cache, as documented)", r.Status)
	}
	s.clock.Add(25 * time.Second) // positive_ttl
	for _, k := range []string{"k", "k2"} {
		if r := s.Lookup(ctx, k, s.clock.Now()); r.Status != authn.Revoked {
			t.Errorf("%s at positive_ttl: %s", k, r.Status)
		}
	}
}
