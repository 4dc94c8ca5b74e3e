package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// day0 is 2023-10-18T00:00:00Z: aligned to every period.
const day0 = 1697587200

// at is the fake clock: day0 + sec seconds (plus optional nanoseconds).
func at(sec int64, nsec ...int64) time.Time {
	var ns int64
	if len(nsec) > 0 {
		ns = nsec[0]
	}
	return time.Unix(day0+sec, ns)
}

func sampleConfig(t testing.TB) *Config {
	return mustParse(t, `{
	  "plans": {
	    "free": {"windows": [{"limit": 10, "period": "minute"}, {"limit": 100, "period": "hour"}]},
	    "starter": {"windows": [{"limit": 100, "period": "minute"}, {"limit": 5000, "period": "hour"}]},
	    "professional": {"windows": [{"limit": 500, "period": "minute"}, {"limit": 25000, "period": "hour"}]}
	  },
	  "default_plan": "free",
	  "tenants": {"42": "starter"},
	  "keys": {"demo-orders": "professional"},
	  "routes": {"orders-write": {"windows": [{"limit": 5, "period": "second"}]}}
	}`)
}

func newLimiter(t testing.TB, cfg *Config, opts Options) Limiter {
	t.Helper()
	l, err := New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.(interface{ Close() error }).Close() })
	return l
}

func take(t testing.TB, l Limiter, s Subject, now time.Time) Result {
	t.Helper()
	r, err := l.Take(context.Background(), s, now)
	if err != nil {
		t.Fatalf("Take(%+v, %d): %v", s, now.Unix()-day0, err)
	}
	return r
}

// checkConsistent asserts the header-math invariants of one Result.
func checkConsistent(t testing.TB, r Result, now time.Time) {
	t.Helper()
	if !r.Limited() {
		return
	}
	ts := now.Unix()
	switch {
	case r.Reset <= ts || r.Reset-ts > r.WindowSeconds:
		t.Errorf("Reset %d not in (now, now+window] (now %d, window %d)", r.Reset, ts, r.WindowSeconds)
	case r.Reset%r.WindowSeconds != 0:
		t.Errorf("Reset %d not aligned to window %d", r.Reset, r.WindowSeconds)
	case r.ResetIn != r.Reset-ts:
		t.Errorf("ResetIn %d != Reset-now %d", r.ResetIn, r.Reset-ts)
	case r.Allowed && r.RetryAfter != 0:
		t.Errorf("allowed with RetryAfter %d", r.RetryAfter)
	case !r.Allowed && (r.RetryAfter != r.Reset-ts || r.RetryAfter < 1 || r.Remaining != 0):
		t.Errorf("denied: RetryAfter %d, Reset-now %d, Remaining %d", r.RetryAfter, r.Reset-ts, r.Remaining)
	case r.Remaining < 0 || r.Remaining > r.Limit:
		t.Errorf("Remaining %d out of [0, %d]", r.Remaining, r.Limit)
	}
}

// TestWindowEdges walks the free plan (10/minute, 100/hour) over the last
// second of a minute window and the first of the next.
func TestWindowEdges(t *testing.T) {
	l := newLimiter(t, sampleConfig(t), Options{})
	s := Subject{KeyID: "k1"}
	m0 := int64(5 * 60) // 00:05:00
	// 10 requests at 00:05:50: remaining 9..0, reported window the minute.
	for i := int64(0); i < 10; i++ {
		now := at(m0 + 50)
		r := take(t, l, s, now)
		want := Result{Allowed: true, Limit: 10, Remaining: 9 - i, Reset: day0 + m0 + 60, ResetIn: 10,
			WindowSeconds: 60, Window: "1 minute", Name: "minute", Policy: `"minute";q=10;w=60, "hour";q=100;w=3600`}
		if d := cmp.Diff(want, r); d != "" {
			t.Fatalf("take %d (-want +got):\n%s", i, d)
		}
	}
	// Denied until the minute ends; the last second of the window (with
	// nanoseconds) still says 1s.
	for _, now := range []time.Time{at(m0 + 50), at(m0 + 58), at(m0+59, 999_999_999)} {
		r := take(t, l, s, now)
		checkConsistent(t, r, now)
		wantRetry := day0 + m0 + 60 - now.Unix()
		if r.Allowed || r.Remaining != 0 || r.RetryAfter != wantRetry || r.Reset != day0+m0+60 || r.Limit != 10 || r.Window != "1 minute" {
			t.Fatalf("at %v: %+v, want denied retry %d", now.Unix()-day0, r, wantRetry)
		}
	}
	// First second of the next window: admitted, 9 left, hour has 89.
	r := take(t, l, s, at(m0+60))
	if !r.Allowed || r.Remaining != 9 || r.Reset != day0+m0+120 || r.ResetIn != 60 {
		t.Fatalf("next window: %+v", r)
	}
}

// TestMultipleWindows exhausts the hour with full minutes, then checks that
// the denial reports the hour window and that denied requests consume no
// quota in any window.
func TestMultipleWindows(t *testing.T) {
	l := newLimiter(t, sampleConfig(t), Options{})
	s := Subject{KeyID: "k1"}
	for m := int64(0); m < 10; m++ {
		for i := 0; i < 10; i++ {
			r := take(t, l, s, at(m*60+1))
			if !r.Allowed {
				t.Fatalf("minute %d take %d denied: %+v", m, i, r)
			}
			if m == 9 && i == 0 {
				// hour remaining 9 ties with minute remaining 9: shortest wins
				if r.Window != "1 minute" || r.Remaining != 9 {
					t.Fatalf("tie: %+v", r)
				}
			}
			if m == 9 && i == 1 { // hour: 100-92 = 8 < minute 8? equal again
				if r.Window != "1 minute" || r.Remaining != 8 {
					t.Fatalf("tie: %+v", r)
				}
			}
		}
	}
	// Minute 10 has minute quota but the hour is spent.
	now := at(10*60 + 30)
	r := take(t, l, s, now)
	checkConsistent(t, r, now)
	want := Result{Allowed: false, Limit: 100, Remaining: 0, Reset: day0 + 3600, ResetIn: 3600 - 630, RetryAfter: 3600 - 630,
		WindowSeconds: 3600, Window: "1 hour", Name: "hour", Policy: `"minute";q=10;w=60, "hour";q=100;w=3600`}
	if d := cmp.Diff(want, r); d != "" {
		t.Fatalf("hour exhausted (-want +got):\n%s", d)
	}
	// The denied requests did not count in the minute window: raise the hour
	// limit and the minute still has all 10.
	cfg := sampleConfig(t)
	cfg.Plans["free"] = Plan{Windows: []Window{{10, "minute"}, {1000, "hour"}}}
	if err := l.(Reloader).Reload(cfg); err != nil {
		t.Fatal(err)
	}
	if r := take(t, l, s, at(10*60+31)); !r.Allowed || r.Window != "1 minute" || r.Remaining != 9 {
		t.Fatalf("after raising the hour: %+v", r)
	}

	// Both windows exhausted at once: the one that resets last is reported.
	l2 := newLimiter(t, mustParse(t, `{"plans": {"p": {"windows": [{"limit": 2, "period": "minute"}, {"limit": 2, "period": "hour"}]}}, "default_plan": "p"}`), Options{})
	take(t, l2, s, at(100))
	take(t, l2, s, at(100))
	r = take(t, l2, s, at(110))
	if r.Allowed || r.Window != "1 hour" || r.RetryAfter != 3600-110 {
		t.Fatalf("both exhausted: %+v", r)
	}
	// At the end of the hour both reset at the same instant: tie -> shortest.
	l3 := newLimiter(t, mustParse(t, `{"plans": {"p": {"windows": [{"limit": 2, "period": "minute"}, {"limit": 2, "period": "hour"}]}}, "default_plan": "p"}`), Options{})
	take(t, l3, s, at(3590))
	take(t, l3, s, at(3590))
	r = take(t, l3, s, at(3595))
	if r.Allowed || r.Window != "1 minute" || r.RetryAfter != 5 || r.Reset != day0+3600 {
		t.Fatalf("same reset: %+v", r)
	}
}

// TestDeniedConsumesNothing: a route window denial leaves the plan windows
// untouched.
func TestDeniedConsumesNothing(t *testing.T) {
	l := newLimiter(t, sampleConfig(t), Options{})
	s := Subject{KeyID: "k1", Route: "orders-write"}
	for i := 0; i < 5; i++ {
		if r := take(t, l, s, at(7)); !r.Allowed {
			t.Fatalf("take %d denied: %+v", i, r)
		}
	}
	for i := 0; i < 20; i++ {
		r := take(t, l, s, at(7))
		want := Result{Allowed: false, Limit: 5, Remaining: 0, Reset: day0 + 8, ResetIn: 1, RetryAfter: 1, WindowSeconds: 1,
			Window: "1 second", Name: "route-second", Policy: `"minute";q=10;w=60, "hour";q=100;w=3600, "route-second";q=5;w=1`}
		if d := cmp.Diff(want, r); d != "" {
			t.Fatalf("route denial (-want +got):\n%s", d)
		}
	}
	// Same principal, other route: the minute saw only the 5 admitted.
	if r := take(t, l, Subject{KeyID: "k1"}, at(8)); !r.Allowed || r.Window != "1 minute" || r.Remaining != 10-6 {
		t.Fatalf("plan after route denials: %+v", r)
	}
}

// TestPlanChangeOnReload: a Reload that moves a key to another plan applies
// to the very next Take and keeps the counts.
func TestPlanChangeOnReload(t *testing.T) {
	cfg := sampleConfig(t)
	l := newLimiter(t, cfg, Options{})
	s := Subject{KeyID: "k1"}
	for i := 0; i < 10; i++ {
		take(t, l, s, at(61))
	}
	if r := take(t, l, s, at(61)); r.Allowed {
		t.Fatalf("free plan should be spent: %+v", r)
	}
	up := sampleConfig(t)
	up.Keys["k1"] = "starter"
	if err := l.(Reloader).Reload(up); err != nil {
		t.Fatal(err)
	}
	if r := take(t, l, s, at(62)); !r.Allowed || r.Limit != 100 || r.Remaining != 89 {
		t.Fatalf("after upgrade: %+v", r)
	}
	// Downgrade again: 11 used, limit 10 -> denied, Remaining clamps to 0.
	if err := l.(Reloader).Reload(cfg); err != nil {
		t.Fatal(err)
	}
	if r := take(t, l, s, at(63)); r.Allowed || r.Limit != 10 || r.Remaining != 0 || r.RetryAfter != 120-63 {
		t.Fatalf("after downgrade: %+v", r)
	}
	// Tenant plan change: the tenant moves from starter to free.
	ts := Subject{KeyID: "k2", Tenants: []string{"42"}}
	for i := 0; i < 10; i++ {
		take(t, l, ts, at(130))
	}
	if r := take(t, l, ts, at(130)); !r.Allowed || r.Limit != 100 {
		t.Fatalf("tenant starter: %+v", r)
	}
	down := sampleConfig(t)
	down.Tenants["42"] = "free"
	if err := l.(Reloader).Reload(down); err != nil {
		t.Fatal(err)
	}
	if r := take(t, l, ts, at(131)); r.Allowed || r.Limit != 10 {
		t.Fatalf("tenant moved to free: %+v", r)
	}
}

func TestHeaders(t *testing.T) {
	l := newLimiter(t, sampleConfig(t), Options{})
	s := Subject{KeyID: "k1"}
	var r Result
	for i := 0; i < 3; i++ {
		r = take(t, l, s, at(48))
	}
	for _, tc := range []struct {
		family string
		want   [][2]string
	}{
		{"x-ratelimit", [][2]string{{"X-RateLimit-Limit", "10"}, {"X-RateLimit-Remaining", "7"}, {"X-RateLimit-Reset", fmt.Sprint(day0 + 60)}}},
		{"", [][2]string{{"X-RateLimit-Limit", "10"}, {"X-RateLimit-Remaining", "7"}, {"X-RateLimit-Reset", fmt.Sprint(day0 + 60)}}},
		{"ietf", [][2]string{{"RateLimit-Policy", `"minute";q=10;w=60, "hour";q=100;w=3600`}, {"RateLimit", `"minute";r=7;t=12`}}},
	} {
		if d := cmp.Diff(tc.want, r.Headers(tc.family)); d != "" {
			t.Errorf("allowed %q (-want +got):\n%s", tc.family, d)
		}
	}
	for i := 0; i < 7; i++ {
		take(t, l, s, at(48))
	}
	r = take(t, l, s, at(48))
	for _, tc := range []struct {
		family string
		want   [][2]string
	}{
		{"x-ratelimit", [][2]string{{"X-RateLimit-Limit", "10"}, {"X-RateLimit-Remaining", "0"}, {"X-RateLimit-Reset", fmt.Sprint(day0 + 60)}, {"Retry-After", "12"}}},
		{"ietf", [][2]string{{"RateLimit-Policy", `"minute";q=10;w=60, "hour";q=100;w=3600`}, {"RateLimit", `"minute";r=0;t=12`}, {"Retry-After", "12"}}},
	} {
		if d := cmp.Diff(tc.want, r.Headers(tc.family)); d != "" {
			t.Errorf("denied %q (-want +got):\n%s", tc.family, d)
		}
	}
	rl := r.RateLimit()
	if rl == nil || rl.Limit != 10 || rl.Remaining != 0 || rl.Reset != day0+60 || rl.RetryAfter != 12 || rl.WindowSeconds != 60 || rl.Window != "1 minute" {
		t.Errorf("RateLimit() = %+v", rl)
	}
	// Unlimited: no headers, no RateLimit.
	var u Result
	u.Allowed = true
	if u.Headers("ietf") != nil || u.RateLimit() != nil {
		t.Error("unlimited result has headers")
	}
}

// TestRetryAfterResetConsistency sweeps an hour for a 3/second + 5/minute +
// 40/hour plan and checks, for every Result, the header invariants and, for
// every denial, that RetryAfter is exact: one second earlier is still
// denied and exactly at now+RetryAfter the request is admitted. Denials
// change no state, so the history of admitted Takes replayed on a fresh
// limiter reproduces the state at any point.
func TestRetryAfterResetConsistency(t *testing.T) {
	cfg := mustParse(t, `{"plans": {"p": {"windows": [{"limit": 3, "period": "second"}, {"limit": 5, "period": "minute"}, {"limit": 40, "period": "hour"}]}}, "default_plan": "p"}`)
	l := newLimiter(t, cfg, Options{})
	s := Subject{Subject: "user-1"}
	var history []time.Time // admitted Takes
	denials := 0
	windows := map[string]int{}
	for sec := int64(0); sec < 3600; sec += 7 {
		for i := 0; i < 4; i++ {
			now := at(sec, 123)
			r := take(t, l, s, now)
			checkConsistent(t, r, now)
			if r.Allowed {
				history = append(history, now)
				continue
			}
			denials++
			windows[r.Window]++
			if r.RetryAfter > 1 {
				if r2 := take(t, l, s, now.Add(time.Duration(r.RetryAfter-1)*time.Second)); r2.Allowed {
					t.Fatalf("admitted 1s before RetryAfter %d at %d", r.RetryAfter, sec)
				}
			}
			if r.Window == "1 hour" && r.RetryAfter > 600 && windows["1 hour"] > 1 {
				continue // replaying a spent hour is the same check each time
			}
			fresh := newLimiter(t, cfg, Options{})
			for _, h := range history {
				if !take(t, fresh, s, h).Allowed {
					t.Fatal("replay diverged")
				}
			}
			if r2 := take(t, fresh, s, now.Add(time.Duration(r.RetryAfter)*time.Second)); !r2.Allowed {
				t.Fatalf("denied at now+RetryAfter (%d at %d, window %s): %+v", r.RetryAfter, sec, r.Window, r2)
			}
		}
	}
	if len(history) != 40 {
		t.Fatalf("admitted %d in the hour, want 40", len(history))
	}
	for _, w := range []string{"1 second", "1 minute", "1 hour"} {
		if windows[w] == 0 {
			t.Errorf("no denial by the %s window (%v)", w, windows)
		}
	}
}

// TestKeyDerivation checks which identity is counted.
func TestKeyDerivation(t *testing.T) {
	l := newLimiter(t, sampleConfig(t), Options{})
	ls := l.(*limiter).local
	now := at(30)
	check := func(s Subject, wantLimit, wantRemaining int64) {
		t.Helper()
		r := take(t, l, s, now)
		if r.Limit != wantLimit || r.Remaining != wantRemaining {
			t.Fatalf("%+v: limit %d remaining %d, want %d %d", s, r.Limit, r.Remaining, wantLimit, wantRemaining)
		}
	}
	// Anonymous: unlimited, no state.
	for i := 0; i < 1000; i++ {
		r := take(t, l, Subject{Route: "orders-write", Plan: "free", Tenants: []string{fmt.Sprint("t", i)}}, now)
		if !r.Allowed || r.Limited() || r.Degraded {
			t.Fatalf("anonymous: %+v", r)
		}
	}
	if n := ls.size(); n != 0 {
		t.Fatalf("anonymous traffic created %d keys", n)
	}
	// Key id and subject are separate namespaces.
	check(Subject{KeyID: "x"}, 10, 9)
	check(Subject{Subject: "x"}, 10, 9)
	check(Subject{KeyID: "x", Subject: "other"}, 10, 8)
	// Subject.Plan applies when configured; unknown plans fall back to default.
	check(Subject{KeyID: "p1", Plan: "starter"}, 100, 99)
	check(Subject{KeyID: "p2", Plan: "platinum"}, 10, 9)
	// Key override beats tenant and Subject.Plan.
	check(Subject{KeyID: "demo-orders", Tenants: []string{"42"}, Plan: "free"}, 500, 499)
	check(Subject{Subject: "demo-orders"}, 500, 499) // subject override, own counter
	// Tenant plan is shared by every key acting for the tenant, and is
	// counted separately from the keys' own plans.
	check(Subject{KeyID: "a", Tenants: []string{"42"}}, 100, 99)
	check(Subject{Subject: "b", Tenants: []string{"42"}}, 100, 98)
	check(Subject{Tenants: []string{"42"}}, 100, 97) // tenant plan applies without principal
	check(Subject{KeyID: "a"}, 10, 9)
	// Unknown tenant: the principal's plan.
	check(Subject{KeyID: "a", Tenants: []string{"43"}}, 10, 8)
	// Route windows per principal and route.
	check(Subject{KeyID: "r1", Route: "orders-write"}, 5, 4)
	check(Subject{KeyID: "r2", Route: "orders-write"}, 5, 4)
	check(Subject{KeyID: "r1", Route: "orders-write"}, 5, 3)
	check(Subject{KeyID: "r1", Route: "orders-read"}, 10, 7) // r1 spent 3 of its minute
	// Long identities are hashed: still distinct, still counted.
	long1, long2 := strings.Repeat("a", 300), strings.Repeat("a", 299)+"b"
	check(Subject{Subject: long1}, 10, 9)
	check(Subject{Subject: long2}, 10, 9)
	check(Subject{Subject: long1}, 10, 8)

	// No default plan: identities without a plan are unlimited.
	l2 := newLimiter(t, mustParse(t, `{"plans": {"p": {"windows": [{"limit": 1, "period": "day"}]}}, "keys": {"k": "p"}}`), Options{})
	if r := take(t, l2, Subject{KeyID: "other"}, now); !r.Allowed || r.Limited() {
		t.Fatalf("no default plan: %+v", r)
	}
	if r := take(t, l2, Subject{KeyID: "k"}, now); !r.Allowed || r.Window != "1 day" || r.Reset != day0+86400 {
		t.Fatalf("day window: %+v", r)
	}
	if n := l2.(*limiter).local.size(); n != 1 {
		t.Fatalf("keys tracked = %d, want 1", n)
	}
}

// TestLocalConcurrency: 64 goroutines x 100 Takes against 1000/minute admit
// exactly 1000, with a route window in the same Take (two shards locked).
func TestLocalConcurrency(t *testing.T) {
	cfg := mustParse(t, `{"plans": {"p": {"windows": [{"limit": 1000, "period": "minute"}, {"limit": 100000, "period": "hour"}]}},
	  "default_plan": "p", "routes": {"r": {"windows": [{"limit": 100000, "period": "second"}]}}}`)
	l := newLimiter(t, cfg, Options{})
	if got := runConcurrent(t, []Limiter{l}, Subject{KeyID: "hot", Route: "r"}, at(90), 64, 100); got != 1000 {
		t.Fatalf("admitted %d, want 1000", got)
	}
}

// runConcurrent runs g goroutines x n Takes spread over ls and returns the
// number admitted.
func runConcurrent(t *testing.T, ls []Limiter, s Subject, now time.Time, g, n int) int64 {
	t.Helper()
	var admitted, failed atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < g; i++ {
		wg.Add(1)
		go func(l Limiter) {
			defer wg.Done()
			<-start
			for j := 0; j < n; j++ {
				r, err := l.Take(context.Background(), s, now)
				if err != nil || r.Degraded {
					failed.Add(1)
					continue
				}
				if r.Allowed {
					admitted.Add(1)
				}
			}
		}(ls[i%len(ls)])
	}
	close(start)
	wg.Wait()
	if f := failed.Load(); f != 0 {
		t.Fatalf("%d Takes failed or degraded", f)
	}
	return admitted.Load()
}

// TestMaxKeys: a full table sweeps dead entries first, then admits new keys
// untracked and Degraded; tracked keys keep being counted.
func TestMaxKeys(t *testing.T) {
	cfg := mustParse(t, `{"plans": {"p": {"windows": [{"limit": 2, "period": "minute"}]}}, "default_plan": "p", "backend": {"max_keys": 2}}`)
	var untracked atomic.Int64
	l := newLimiter(t, cfg, Options{Metrics: Metrics{Untracked: func() { untracked.Add(1) }}})
	ls := l.(*limiter).local
	take(t, l, Subject{KeyID: "k1"}, at(10))
	take(t, l, Subject{KeyID: "k2"}, at(10))
	for i := 0; i < 3; i++ {
		r := take(t, l, Subject{KeyID: "k3"}, at(10))
		if !r.Allowed || !r.Degraded || r.Limited() || r.Headers("x-ratelimit") != nil {
			t.Fatalf("k3 on a full table: %+v", r)
		}
	}
	if untracked.Load() != 3 || ls.size() != 2 {
		t.Fatalf("untracked %d size %d", untracked.Load(), ls.size())
	}
	// Tracked keys are still exact.
	take(t, l, Subject{KeyID: "k1"}, at(11))
	if r := take(t, l, Subject{KeyID: "k1"}, at(11)); r.Allowed || r.Degraded {
		t.Fatalf("k1 should be limited: %+v", r)
	}
	// Next minute: k1 and k2 are dead; the sweep makes room for k3.
	r := take(t, l, Subject{KeyID: "k3"}, at(60))
	if !r.Allowed || r.Degraded || r.Remaining != 1 {
		t.Fatalf("k3 after sweep: %+v", r)
	}
	if ls.size() != 1 {
		t.Fatalf("size after sweep = %d, want 1", ls.size())
	}
	// A key whose windows are still live is not evicted.
	take(t, l, Subject{KeyID: "k4"}, at(61))
	if r := take(t, l, Subject{KeyID: "k5"}, at(62)); !r.Degraded {
		t.Fatalf("k5 with two live keys: %+v", r)
	}
	// Partial tracking: the plan key is tracked, the route key is not.
	cfg2 := mustParse(t, `{"plans": {"p": {"windows": [{"limit": 2, "period": "minute"}]}}, "default_plan": "p",
	  "routes": {"r": {"windows": [{"limit": 1, "period": "second"}]}}, "backend": {"max_keys": 1}}`)
	l2 := newLimiter(t, cfg2, Options{})
	r = take(t, l2, Subject{KeyID: "k", Route: "r"}, at(5))
	if !r.Allowed || !r.Degraded || r.Window != "1 minute" || r.Remaining != 1 {
		t.Fatalf("partial tracking: %+v", r)
	}
}

func TestMetricsTaken(t *testing.T) {
	var mu sync.Mutex
	var got []string
	l := newLimiter(t, sampleConfig(t), Options{Metrics: Metrics{Taken: func(b string, allowed, degraded bool) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, fmt.Sprintf("%s %t %t", b, allowed, degraded))
	}}})
	for i := 0; i < 11; i++ {
		take(t, l, Subject{KeyID: "k"}, at(1))
	}
	take(t, l, Subject{}, at(1)) // unlimited: not reported
	if len(got) != 11 || got[0] != "local true false" || got[10] != "local false false" {
		t.Fatalf("Taken calls: %v", got)
	}
}

// A request acting for several tenants with plans counts against each,
// all or none: one spent tenant denies it and the others lose nothing.
func TestSeveralTenantPlans(t *testing.T) {
	cfg := mustParse(t, `{"plans": {"tiny": {"windows": [{"limit": 3, "period": "minute"}]}, "big": {"windows": [{"limit": 100, "period": "minute"}]}},
	  "tenants": {"42": "tiny", "workspace:w1": "tiny", "a": "big", "b": "big", "c": "big", "d": "big", "e": "big"}}`)
	l := newLimiter(t, cfg, Options{})
	now := at(30)
	both := Subject{KeyID: "k", Tenants: []string{"42", "workspace:w1"}}
	if r := take(t, l, Subject{KeyID: "other", Tenants: []string{"42"}}, now); !r.Allowed {
		t.Fatal("first take of tenant 42 denied")
	}
	for i := range 2 {
		if r := take(t, l, both, now); !r.Allowed {
			t.Fatalf("take %d for 42 and workspace:w1 denied", i+1)
		}
	}
	if r := take(t, l, both, now); r.Allowed || r.Limit != 3 {
		t.Fatalf("tenant 42 is spent, the request acting for it too was %+v", r)
	}
	// workspace:w1 was counted twice, not three times: one take left.
	if r := take(t, l, Subject{KeyID: "k", Tenants: []string{"workspace:w1"}}, now); !r.Allowed || r.Remaining != 0 {
		t.Fatalf("workspace:w1 after the denied take: %+v", r)
	}
	if _, err := l.Take(context.Background(), Subject{KeyID: "k", Tenants: []string{"a", "b", "c", "d", "e"}}, now); !errors.Is(err, ErrTooManyTenants) {
		t.Fatalf("five tenant plans: %v, want ErrTooManyTenants", err)
	}
}

// A check still running on an older policy version does not swing the
// shared limiter back to that version's limits.
func TestQuotasNeverGoBackToAnOlderConfig(t *testing.T) {
	old := mustParse(t, `{"plans": {"p": {"windows": [{"limit": 1, "period": "minute"}]}}, "default_plan": "p"}`)
	cur := mustParse(t, `{"plans": {"p": {"windows": [{"limit": 5, "period": "minute"}]}}, "default_plan": "p"}`)
	q := NewQuotas(Options{})
	defer q.Close()
	q.For(old)
	q.For(cur)
	r := take(t, q.For(old), Subject{KeyID: "k"}, at(30))
	if r.Limit != 5 {
		t.Fatalf("an older version's check reloaded the limiter to limit %d, want the newer 5", r.Limit)
	}
}

// Checks finish in another order than they read the clock: one stamped in
// the last second of a window can take the lock after one stamped in the
// next. It must not rewind the counter: with 3 a minute, three takes at
// :50, then twenty alternating takes stamped 1:01 and 0:59, admit 3 + 3,
// not 43 (each out-of-order take reset the counter).
func TestLocalTakesOutOfOrder(t *testing.T) {
	l := newLimiter(t, mustParse(t, `{"plans": {"tiny": {"windows": [{"limit": 3, "period": "minute"}]}}, "default_plan": "tiny"}`), Options{})
	s := Subject{KeyID: "k1"}
	admitted := 0
	for range 3 {
		if take(t, l, s, at(50)).Allowed {
			admitted++
		}
	}
	for range 20 {
		for _, sec := range []int64{61, 59} {
			if take(t, l, s, at(sec)).Allowed {
				admitted++
			}
		}
	}
	if admitted != 6 {
		t.Errorf("%d admitted over two minute windows of 3", admitted)
	}
}

// A clock stepped back (corrected after running ahead) is followed: keys
// counted while it was a day ahead are not denied for that day.
func TestLocalClockSteppedBack(t *testing.T) {
	l := newLimiter(t, mustParse(t, `{"plans": {"tiny": {"windows": [{"limit": 3, "period": "minute"}]}}, "default_plan": "tiny"}`), Options{})
	s := Subject{KeyID: "k1"}
	for range 3 {
		take(t, l, s, at(86400+50))
	}
	if r := take(t, l, s, at(50)); !r.Allowed {
		t.Errorf("a day back: %+v, want the minute's quota", r)
	}
}
