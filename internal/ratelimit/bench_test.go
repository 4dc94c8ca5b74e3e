package ratelimit

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
)

const benchPlans = `"plans": {"p": {"windows": [{"limit": 1000000000, "period": "minute"}, {"limit": 1000000000, "period": "hour"}]}},
  "default_plan": "p", "routes": {"r": {"windows": [{"limit": 1000000000, "period": "second"}]}}`

// BenchmarkTake measures one Take for an existing key with a minute and an
// hour window (all admitted): local is the hot path (target < 300ns, 0
// allocs), local_route adds a route window (two keys, two shards),
// local_parallel spreads 1024 keys over GOMAXPROCS goroutines, redis is one
// script round trip on loopback.
func BenchmarkTake(b *testing.B) {
	ctx := context.Background()
	now := at(30)
	b.Run("local", func(b *testing.B) {
		l := newLimiter(b, mustParse(b, `{`+benchPlans+`}`), Options{})
		s := Subject{KeyID: "bench-key"}
		take(b, l, s, now)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if r, _ := l.Take(ctx, s, now); !r.Allowed {
				b.Fatal("denied")
			}
		}
	})
	b.Run("local_route", func(b *testing.B) {
		l := newLimiter(b, mustParse(b, `{`+benchPlans+`}`), Options{})
		s := Subject{KeyID: "bench-key", Route: "r"}
		take(b, l, s, now)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if r, _ := l.Take(ctx, s, now); !r.Allowed {
				b.Fatal("denied")
			}
		}
	})
	b.Run("local_parallel", func(b *testing.B) {
		l := newLimiter(b, mustParse(b, `{`+benchPlans+`}`), Options{})
		subjects := make([]Subject, 1024)
		for i := range subjects {
			subjects[i] = Subject{KeyID: fmt.Sprint("key-", i)}
			take(b, l, subjects[i], now)
		}
		var next atomic.Int64
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			i := int(next.Add(1)) * 7
			for pb.Next() {
				i++
				if r, _ := l.Take(ctx, subjects[i&1023], now); !r.Allowed {
					b.Error("denied")
					return
				}
			}
		})
	})
	b.Run("redis", func(b *testing.B) {
		srv := startRedis(b)
		l := newLimiter(b, redisConfig(b, srv.Addr(), "deny", 1000, benchPlans), Options{})
		s := Subject{KeyID: "bench-key"}
		take(b, l, s, now)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if r, err := l.Take(ctx, s, now); err != nil || !r.Allowed {
				b.Fatal(r, err)
			}
		}
	})
}
