package jwt

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	gojwt "github.com/golang-jwt/jwt/v5"
	"github.com/google/go-cmp/cmp"

	"github.com/extauthz/extauthz/internal/cache"
)

func TestCachedResultStopsAtExp(t *testing.T) {
	k := keys()
	clock := newClock(t0)
	v := fileVerifier(t, clock, Options{}) // CacheTTL 5m > exp - now
	exp := t0.Add(time.Minute)
	tok := sign(t, gojwt.SigningMethodRS256, k.rsa, "rsa-1", with(claims(t0), "exp", exp.Unix(), "tenant", "t1"))
	ctx := context.Background()

	steps := []struct {
		at     time.Duration // since t0
		status Status
		stats  cache.Stats
	}{
		{0, Valid, cache.Stats{Misses: 1, Entries: 1}},                         // verified and cached
		{59 * time.Second, Valid, cache.Stats{Hits: 1, Misses: 1, Entries: 1}}, // from the cache
		{60 * time.Second, Valid, cache.Stats{Hits: 1, Misses: 2, Entries: 1}}, // at exp: not from the cache; valid by leeway, not re-cached
		{89 * time.Second, Valid, cache.Stats{Hits: 1, Misses: 3, Entries: 1}}, // still by leeway only
		{90 * time.Second, Expired, cache.Stats{Hits: 1, Misses: 4, Entries: 1}},
	}
	var first Result
	for i, s := range steps {
		clock.Set(t0.Add(s.at))
		got := v.Verify(ctx, tok)
		if got.Status != s.status {
			t.Fatalf("step %d (t0+%v): status %s; want %s", i, s.at, got.Status, s.status)
		}
		if st := v.CacheStats(); st != s.stats {
			t.Fatalf("step %d (t0+%v): stats %+v; want %+v", i, s.at, st, s.stats)
		}
		if i == 0 {
			first = got
		} else if got.Status == Valid {
			if diff := cmp.Diff(first, got); diff != "" {
				t.Fatalf("step %d: cached result differs (-first +got):\n%s", i, diff)
			}
		}
	}
}

func TestCacheTTLCapsLongLivedTokens(t *testing.T) {
	k := keys()
	clock := newClock(t0)
	v := fileVerifier(t, clock, Options{CacheTTL: 10 * time.Second})
	tok := sign(t, gojwt.SigningMethodRS256, k.rsa, "rsa-1", claims(t0)) // exp t0+1h
	ctx := context.Background()
	for _, s := range []struct {
		at   time.Duration
		hits uint64
	}{{0, 0}, {9 * time.Second, 1}, {10 * time.Second, 1}, {15 * time.Second, 2}, {19 * time.Second, 3}, {20 * time.Second, 3}} {
		clock.Set(t0.Add(s.at))
		if got := v.Verify(ctx, tok); got.Status != Valid {
			t.Fatalf("t0+%v: %s", s.at, got.Status)
		}
		if h := v.CacheStats().Hits; h != s.hits {
			t.Fatalf("t0+%v: hits %d; want %d", s.at, h, s.hits)
		}
	}
}

func TestOnlyValidResultsAreCached(t *testing.T) {
	k := keys()
	clock := newClock(t0)
	v := fileVerifier(t, clock, Options{})
	ctx := context.Background()
	bad := []string{
		sign(t, gojwt.SigningMethodRS256, k.rsa, "rsa-1", with(claims(t0), "aud", "other")),
		sign(t, gojwt.SigningMethodRS256, k.attacker, "rsa-1", claims(t0)),
		sign(t, gojwt.SigningMethodRS256, k.rsa, "nope", claims(t0)),
		"a.b.c",
	}
	for range 3 {
		for _, tok := range bad {
			if got := v.Verify(ctx, tok); got.Status == Valid {
				t.Fatalf("unexpectedly valid")
			}
		}
	}
	if st := v.CacheStats(); st.Entries != 0 || st.Hits != 0 || st.Misses != uint64(3*len(bad)) {
		t.Fatalf("stats %+v; want no entries, no hits, %d misses", st, 3*len(bad))
	}
	// Oversized tokens are refused before the cache is consulted.
	v.Verify(ctx, strings.Repeat("a", DefaultMaxTokenBytes+1))
	if st := v.CacheStats(); st.Misses != uint64(3*len(bad)) {
		t.Fatalf("oversized token counted as a cache miss: %+v", st)
	}
}

func TestCacheEntryCap(t *testing.T) {
	k := keys()
	clock := newClock(t0)
	v := fileVerifier(t, clock, Options{CacheEntries: 2})
	ctx := context.Background()
	for i := range 5 {
		tok := sign(t, gojwt.SigningMethodRS256, k.rsa, "rsa-1", with(claims(t0), "n", i))
		if got := v.Verify(ctx, tok); got.Status != Valid {
			t.Fatalf("token %d: %s", i, got.Status)
		}
	}
	if n := v.CacheStats().Entries; n != 2 {
		t.Fatalf("entries %d; want 2", n)
	}
}

func TestConcurrentVerify(t *testing.T) {
	k := keys()
	clock := newClock(t0)
	v := fileVerifier(t, clock, Options{CacheEntries: 3})
	toks := map[string]Status{}
	for i := range 4 {
		toks[sign(t, gojwt.SigningMethodRS256, k.rsa, "rsa-1", with(claims(t0), "n", i, "scope", "a b"))] = Valid
	}
	toks[sign(t, gojwt.SigningMethodES256, k.ec, "ec-1", claims(t0))] = Valid
	toks[sign(t, gojwt.SigningMethodRS256, k.rsa, "rsa-1", with(claims(t0), "aud", "x"))] = WrongAudience
	toks[sign(t, gojwt.SigningMethodRS256, k.attacker, "rsa-1", claims(t0))] = BadSignature
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				for tok, want := range toks {
					got := v.Verify(context.Background(), tok)
					if got.Status != want {
						t.Errorf("status %s; want %s", got.Status, want)
						return
					}
					if want == Valid && got.Subject != "user-1" {
						t.Errorf("subject %q", got.Subject)
					}
				}
			}
		}()
	}
	wg.Wait()
	if st := v.CacheStats(); st.Hits == 0 || st.Entries > 3 {
		t.Fatalf("stats %+v; want hits and at most 3 entries", st)
	}
}
