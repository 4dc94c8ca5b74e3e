package rediskeys

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/authn"
	"github.com/extauthz/extauthz/internal/authn/apikey"
	"github.com/extauthz/extauthz/internal/testutil/redistest"
)

// BenchmarkLookup: one key of 100,000 looked up in the embedded store and
// in the Redis store, cached and not. The shape of apikey.BenchmarkLookup,
// the same keys in both stores; run them with -count to interleave.
//
//	embedded:       apikey.Store.Lookup
//	redis_cached:   a cached record (no round trip)
//	redis_miss:     a cached record re-read every time, as once it is stale (one GET to loopback Redis)
//	redis_unknown:  an unknown key every time (one GET, answered nil)
func BenchmarkLookup(b *testing.B) {
	const n = 100_000
	srv := redistest.Start(b, "internal/authn/rediskeys")
	var sb strings.Builder
	sb.WriteString("{")
	for i := range n {
		if i > 0 {
			sb.WriteString(",")
		}
		fmt.Fprintf(&sb, "%q: {\"id\": \"id%d\", \"tenants\": [\"42\"], \"scopes\": [\"orders:read\"]}", apikey.Hash(fmt.Sprint("key-", i)), i)
	}
	sb.WriteString("}")
	embedded, err := apikey.Parse(json.RawMessage(sb.String()))
	if err != nil {
		b.Fatal(err)
	}
	w := writer(b, srv.Addr())
	if _, err := w.Import(context.Background(), strings.NewReader(sb.String()), 1000, nil); err != nil {
		b.Fatal(err)
	}
	cfg := config(srv.Addr())
	now := time.Now()
	const key = "key-4242"

	b.Run("embedded", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if embedded.Lookup(key, now).Status != authn.Valid {
				b.Fatal("not valid")
			}
		}
	})
	b.Run("redis_cached", func(b *testing.B) {
		s := New(cfg, Options{})
		defer s.Close()
		s.Lookup(context.Background(), key, now)
		b.ReportAllocs()
		for b.Loop() {
			if s.Lookup(context.Background(), key, now).Status != authn.Valid {
				b.Fatal("not valid")
			}
		}
	})
	b.Run("redis_miss", func(b *testing.B) {
		s := New(cfg, Options{})
		defer s.Close()
		t := now
		b.ReportAllocs()
		for b.Loop() {
			// Past positive_ttl, within the 2 × positive_ttl the record is
			// kept: stale, re-read, its identity kept (a hot key's steady state).
			t = t.Add(time.Duration(cfg.PositiveTTLMS+1000) * time.Millisecond)
			if s.Lookup(context.Background(), key, t).Status != authn.Valid {
				b.Fatal("not valid")
			}
		}
	})
	b.Run("redis_unknown", func(b *testing.B) {
		s := New(cfg, Options{})
		defer s.Close()
		t := now
		b.ReportAllocs()
		for b.Loop() {
			t = t.Add(time.Hour)
			if s.Lookup(context.Background(), "key-unknown", t).Status != authn.Unknown {
				b.Fatal("not unknown")
			}
		}
	})
}
