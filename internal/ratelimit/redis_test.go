package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/redis/go-redis/v9"

	"github.com/extauthz/extauthz/internal/testutil"
	"github.com/extauthz/extauthz/internal/testutil/redistest"
)

func TestMain(m *testing.M) {
	// go-redis logs dial failures through the standard logger; the outage
	// tests cause many on purpose.
	redis.SetLogger(quietLogger{})
	// A skipped test says so only under -v: say it loudly, once, always.
	if !redistest.Installed() {
		notice, _ := redistest.Missing(redisPkg)
		fmt.Fprintln(os.Stderr, notice)
	}
	os.Exit(m.Run())
}

const redisPkg = "internal/ratelimit"

type quietLogger struct{}

func (quietLogger) Printf(context.Context, string, ...any) {}

// startRedis starts a private redis-server, or skips the test when the
// binary is not installed (CI installs it and sets EXTAUTHZ_REQUIRE_REDIS=1).
func startRedis(tb testing.TB) *redistest.Server {
	tb.Helper()
	return redistest.Start(tb, redisPkg)
}

func redisConfig(tb testing.TB, addr, onError string, timeoutMS int, plans string) *Config {
	return mustParse(tb, fmt.Sprintf(`{%s, "backend": {"type": "redis", "addr": %q, "on_error": %q, "timeout_ms": %d}}`,
		plans, addr, onError, timeoutMS))
}

const samplePlans = `
  "plans": {
    "free": {"windows": [{"limit": 10, "period": "minute"}, {"limit": 100, "period": "hour"}]},
    "starter": {"windows": [{"limit": 100, "period": "minute"}, {"limit": 5000, "period": "hour"}]},
    "professional": {"windows": [{"limit": 500, "period": "minute"}, {"limit": 25000, "period": "hour"}]}
  },
  "default_plan": "free",
  "tenants": {"42": "starter", "workspace:7": "free"},
  "keys": {"demo-orders": "professional"},
  "routes": {"orders-write": {"windows": [{"limit": 5, "period": "second"}]}}`

// TestRedisMatchesLocal replays one pseudo-random sequence of Takes (window
// edges, several windows, routes, tenants, a plan change on reload) on the
// local and the redis backend: every Result must be identical.
func TestRedisMatchesLocal(t *testing.T) {
	srv := startRedis(t)
	rcfg := redisConfig(t, srv.Addr(), "deny", 2000, samplePlans)
	lcfg := mustParse(t, `{`+samplePlans+`}`)
	rl := newLimiter(t, rcfg, Options{})
	ll := newLimiter(t, lcfg, Options{})
	subjects := []Subject{
		{KeyID: "k1"}, {KeyID: "k1", Route: "orders-write"}, {KeyID: "k2", Tenants: []string{"42"}},
		{Subject: "user-9", Tenants: []string{"42"}, Route: "orders-write"}, {KeyID: "demo-orders"},
		{Subject: "k1"}, {KeyID: strings.Repeat("x", 200)}, {},
		{KeyID: "k3", Tenants: []string{"42", "workspace:7"}, Route: "orders-write"}, {KeyID: "k4", Tenants: []string{"workspace:7"}}, {KeyID: "k5", Tenants: []string{"42", "42"}},
	}
	rng := rand.New(rand.NewPCG(1, 2))
	sec := int64(0)
	denied := 0
	for step := 0; step < 1500; step++ {
		switch rng.IntN(10) {
		case 0:
			sec += int64(rng.IntN(120)) // jump over window edges
		case 1, 2:
			sec++
		}
		if step == 700 { // plan change on reload, on both
			up := `"keys": {"demo-orders": "professional", "k1": "starter"},`
			rcfg2 := redisConfig(t, srv.Addr(), "deny", 2000, strings.Replace(samplePlans, `"keys": {"demo-orders": "professional"},`, up, 1))
			lcfg2 := mustParse(t, `{`+strings.Replace(samplePlans, `"keys": {"demo-orders": "professional"},`, up, 1)+`}`)
			if err := rl.(Reloader).Reload(rcfg2); err != nil {
				t.Fatal(err)
			}
			if err := ll.(Reloader).Reload(lcfg2); err != nil {
				t.Fatal(err)
			}
		}
		s := subjects[rng.IntN(len(subjects))]
		now := at(sec, int64(rng.IntN(1e9)))
		want := take(t, ll, s, now)
		got := take(t, rl, s, now)
		if d := cmp.Diff(want, got); d != "" {
			t.Fatalf("step %d %+v at %d: local vs redis (-local +redis):\n%s", step, s, sec, d)
		}
		checkConsistent(t, got, now)
		if !got.Allowed {
			denied++
		}
	}
	if denied < 50 {
		t.Fatalf("only %d denials: sequence too weak", denied)
	}
}

// TestRedisConcurrencyTwoClients: two limiters (two go-redis clients, like
// two replicas), 64 goroutines x 100 Takes against 1000/minute: exactly 1000.
func TestRedisConcurrencyTwoClients(t *testing.T) {
	srv := startRedis(t)
	cfg := redisConfig(t, srv.Addr(), "deny", 5000, `"plans": {"p": {"windows": [{"limit": 1000, "period": "minute"}, {"limit": 100000, "period": "hour"}]}},
	  "default_plan": "p", "routes": {"r": {"windows": [{"limit": 100000, "period": "second"}]}}`)
	a := newLimiter(t, cfg, Options{})
	b := newLimiter(t, cfg, Options{})
	if got := runConcurrent(t, []Limiter{a, b}, Subject{KeyID: "hot", Route: "r"}, at(90), 64, 100); got != 1000 {
		t.Fatalf("admitted %d, want 1000", got)
	}
	// Both see the same spent state.
	for _, l := range []Limiter{a, b} {
		if r := take(t, l, Subject{KeyID: "hot"}, at(91)); r.Allowed || r.Remaining != 0 || r.RetryAfter != 120-91 {
			t.Fatalf("after the race: %+v", r)
		}
	}
}

// TestRedisKeys checks the key layout and TTLs in Redis.
func TestRedisKeys(t *testing.T) {
	srv := startRedis(t)
	cfg := redisConfig(t, srv.Addr(), "deny", 2000, samplePlans)
	l := newLimiter(t, cfg, Options{})
	take(t, l, Subject{KeyID: "k:1", Route: "orders-write"}, at(3601))
	take(t, l, Subject{Tenants: []string{"42"}}, at(3601))
	c := redis.NewClient(&redis.Options{Addr: srv.Addr()})
	defer c.Close()
	ctx := context.Background()
	keys, err := c.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	m := (day0 + 3601) / 60
	h := (day0 + 3601) / 3600
	want := map[string]int64{ // key -> max TTL
		fmt.Sprintf("extauthz:rl:k:3:k:1:60:%d", m):                      59 + 60,
		fmt.Sprintf("extauthz:rl:k:3:k:1:3600:%d", h):                    3599 + 60,
		fmt.Sprintf("extauthz:rl:rk:3:k:1:orders-write:1:%d", day0+3601): 1 + 1,
		fmt.Sprintf("extauthz:rl:t:2:42:60:%d", m):                       59 + 60,
		fmt.Sprintf("extauthz:rl:t:2:42:3600:%d", h):                     3599 + 60,
	}
	if len(keys) != len(want) {
		t.Fatalf("keys = %q", keys)
	}
	for _, k := range keys {
		maxTTL, ok := want[k]
		if !ok {
			t.Fatalf("unexpected key %q (have %q)", k, keys)
		}
		ttl, err := c.TTL(ctx, k).Result()
		if err != nil || ttl <= 0 || ttl > time.Duration(maxTTL)*time.Second {
			t.Errorf("TTL(%s) = %v, %v; want (0, %ds]", k, ttl, err, maxTTL)
		}
		if v, _ := c.Get(ctx, k).Int64(); v != 1 {
			t.Errorf("%s = %d, want 1", k, v)
		}
	}
}

// TestRedisOutage kills redis-server mid-run: deny mode fails fast with
// ErrUnavailable, allow_local keeps counting locally (Degraded), and once
// Redis is back both count in Redis again.
func TestRedisOutage(t *testing.T) {
	srv := startRedis(t)
	plans := `"plans": {"p": {"windows": [{"limit": 3, "period": "minute"}]}}, "default_plan": "p"`
	var logs testutil.SyncBuffer
	var backendErrs sync.Map
	opts := Options{
		Logger:  slog.New(slog.NewTextHandler(&logs, nil)),
		Metrics: Metrics{BackendError: func(err error) { backendErrs.Store("seen", true) }},
	}
	deny := newLimiter(t, redisConfig(t, srv.Addr(), "deny", 20, plans), opts)
	allow := newLimiter(t, redisConfig(t, srv.Addr(), "allow_local", 20, plans), opts)
	s := Subject{KeyID: "k"}
	now := at(10)

	// Healthy: both replicas share one counter.
	if r := take(t, deny, s, now); r.Remaining != 2 || r.Degraded {
		t.Fatalf("healthy deny replica: %+v", r)
	}
	if r := take(t, allow, s, now); r.Remaining != 1 || r.Degraded {
		t.Fatalf("healthy allow replica: %+v", r)
	}

	srv.Kill()

	for i := 0; i < 20; i++ {
		r, err := deny.Take(context.Background(), s, now)
		if !errors.Is(err, ErrUnavailable) || r.Allowed {
			t.Fatalf("deny Take %d: %+v, %v; want ErrUnavailable", i, r, err)
		}
	}
	// allow_local: the local fallback counts from zero, per replica.
	for i := 0; i < 5; i++ {
		r, err := allow.Take(context.Background(), s, now)
		if err != nil || !r.Degraded || r.Allowed != (i < 3) || r.Limit != 3 {
			t.Fatalf("allow Take %d: %+v, %v", i, r, err)
		}
		if i == 3 && (r.RetryAfter != 50 || r.Headers("x-ratelimit")[3] != [2]string{"Retry-After", "50"}) {
			t.Fatalf("degraded denial: %+v", r)
		}
	}
	if _, ok := backendErrs.Load("seen"); !ok {
		t.Error("BackendError hook not called")
	}

	if err := srv.Restart(); err != nil {
		t.Fatalf("restart redis-server: %v", err)
	}
	// Wait (bounded) until both replicas reach Redis again; go-redis probes a
	// failed pool about once a second. Probe with another identity.
	deadline := time.Now().Add(10 * time.Second)
	for _, l := range []Limiter{deny, allow} {
		for {
			r, err := l.Take(context.Background(), Subject{KeyID: "probe"}, at(1000))
			if err == nil && !r.Degraded {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("redis did not come back: %+v, %v", r, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	// Distributed counting resumes (the restarted server lost its data).
	if r := take(t, deny, s, now); r.Remaining != 2 || r.Degraded {
		t.Fatalf("resumed deny replica: %+v", r)
	}
	if r := take(t, allow, s, now); r.Remaining != 1 || r.Degraded {
		t.Fatalf("resumed allow replica: %+v", r)
	}
	out := logs.String()
	if strings.Count(out, "redis backend failing") != 2 || strings.Count(out, "redis backend recovered") != 2 {
		t.Errorf("logs:\n%s", out)
	}
}

// TestRedisTimeout: a server that accepts but never answers costs at most
// the timeout per Take.
func TestRedisTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held []net.Conn
	var mu sync.Mutex
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-done
		mu.Lock()
		for _, c := range held {
			_ = c.Close()
		}
		mu.Unlock()
	})
	plans := `"plans": {"p": {"windows": [{"limit": 3, "period": "minute"}]}}, "default_plan": "p"`
	quiet := Options{Logger: slog.New(slog.DiscardHandler)}
	deny := newLimiter(t, redisConfig(t, ln.Addr().String(), "deny", 20, plans), quiet)
	allow := newLimiter(t, redisConfig(t, ln.Addr().String(), "allow_local", 20, plans), quiet)
	for i := 0; i < 5; i++ {
		// The held connections never answer: each Take gives up at the
		// configured timeout (a context of its own, not this test's clock).
		_, err := deny.Take(context.Background(), Subject{KeyID: "k"}, at(1))
		if !errors.Is(err, ErrUnavailable) {
			t.Fatalf("deny Take %d: %v", i, err)
		}
		r, err := allow.Take(context.Background(), Subject{KeyID: "k"}, at(1))
		if err != nil || !r.Degraded || r.Allowed != (i < 3) {
			t.Fatalf("allow Take %d: %+v, %v", i, r, err)
		}
	}
}
