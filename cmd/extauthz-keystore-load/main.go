// Command extauthz-keystore-load demonstrates the Redis key store at scale
// (a developer command, not part of the product binary): it fills a Redis
// with N synthetic key records through the same pipelined import as
// `extauthz key import`, reports the load time and Redis's memory, then
// looks up random keys through the store (its local cache in front) from
// several goroutines and reports lookups per second and latency
// percentiles, for keys drawn from the whole set (nearly every lookup a
// miss: one round trip) and from a hot set that fits the cache.
//
//	redis-server --port 6399 --save '' --appendonly no &
//	go run ./cmd/extauthz-keystore-load -redis 127.0.0.1:6399 -keys 10000000 -fill
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/extauthz/extauthz/internal/authn"
	"github.com/extauthz/extauthz/internal/authn/apikey"
	"github.com/extauthz/extauthz/internal/authn/rediskeys"
	"github.com/extauthz/extauthz/internal/loadtest"
)

func main() {
	addr := flag.String("redis", "127.0.0.1:6399", "Redis address")
	keys := flag.Int("keys", 10_000_000, "synthetic keys (key i is loadtest.SyntheticKey(i))")
	fill := flag.Bool("fill", false, "import the keys first")
	batch := flag.Int("batch", 1000, "records per pipelined round trip when filling")
	lookups := flag.Int("lookups", 200_000, "lookups per phase")
	conc := flag.Int("concurrency", 8, "goroutines looking up")
	hot := flag.Int("hot", 10_000, "keys in the hot set")
	cacheSize := flag.Int("cache-size", rediskeys.DefaultCacheSize, "api_keys_store.cache_size")
	flag.Parse()
	ctx := context.Background()
	c := redis.NewClient(&redis.Options{Addr: *addr, DisableIdentity: true})
	defer c.Close()

	if *fill {
		pr, pw := io.Pipe()
		go func() {
			bw := bufio.NewWriterSize(pw, 1<<20)
			bw.WriteString("{")
			for i := range *keys {
				if i > 0 {
					bw.WriteString(",\n")
				}
				fmt.Fprintf(bw, "%q: {\"id\": \"scale-%d\", \"subject\": \"svc:scale-%d\", \"tenants\": [\"%d\"], \"scopes\": [\"orders:read\", \"items:read\"]}",
					apikey.Hash(loadtest.SyntheticKey(i)), i, i, loadtest.SyntheticKeyTenant(i, 10000))
			}
			bw.WriteString("}\n")
			bw.Flush()
			pw.Close()
		}()
		start := time.Now()
		w := rediskeys.Writer{Client: c, Prefix: rediskeys.DefaultPrefix}
		n, err := w.Import(ctx, pr, *batch, func(n int) {
			if n%1_000_000 == 0 {
				fmt.Fprintf(os.Stderr, "%d records, %s\n", n, time.Since(start).Round(time.Second))
			}
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, "import:", err)
			os.Exit(1)
		}
		fmt.Printf("imported %d records in %s (%.0f records/s)\n", n, time.Since(start).Round(time.Millisecond), float64(n)/time.Since(start).Seconds())
	}
	info, _ := c.Info(ctx, "memory").Result()
	for _, l := range strings.Split(info, "\r\n") {
		if strings.HasPrefix(l, "used_memory:") || strings.HasPrefix(l, "used_memory_human:") {
			fmt.Println("redis", l)
		}
	}
	fmt.Println("redis dbsize:", c.DBSize(ctx).Val())

	cfg := rediskeys.Config{Type: rediskeys.TypeRedis, Addr: *addr, CacheSize: *cacheSize}
	cfg.Check()
	s := rediskeys.New(cfg, rediskeys.Options{})
	defer s.Close()
	phase := func(name string, pick func(r *rand.Rand) int) {
		var mu sync.Mutex
		var lat []time.Duration
		bad := map[authn.Status]int{}
		var wg sync.WaitGroup
		start := time.Now()
		for g := range *conc {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := rand.New(rand.NewPCG(uint64(g), 7))
				mine := make([]time.Duration, 0, *lookups / *conc)
				nbad := map[authn.Status]int{}
				for range *lookups / *conc {
					k := loadtest.SyntheticKey(pick(r))
					t0 := time.Now()
					res := s.Lookup(ctx, k, t0)
					mine = append(mine, time.Since(t0))
					if res.Status != authn.Valid {
						nbad[res.Status]++
					}
				}
				mu.Lock()
				lat = append(lat, mine...)
				for k, v := range nbad {
					bad[k] += v
				}
				mu.Unlock()
			}()
		}
		wg.Wait()
		el := time.Since(start)
		slices.Sort(lat)
		q := func(p float64) time.Duration { return lat[int(p*float64(len(lat)-1))] }
		rec, _ := s.Entries()
		fmt.Printf("%-28s %8d lookups in %6s: %7.0f/s  p50 %7s  p99 %7s  max %7s  not valid %v  cached records %d\n",
			name, len(lat), el.Round(time.Millisecond), float64(len(lat))/el.Seconds(), q(0.5), q(0.99), lat[len(lat)-1], bad, rec)
	}
	// The uniform phase first: it leaves the cache full (cache_size) of
	// keys the hot set does not use, which the hot set must then evict.
	phase(fmt.Sprintf("uniform over %d", *keys), func(r *rand.Rand) int { return r.IntN(*keys) })
	phase(fmt.Sprintf("hot set of %d (cold)", *hot), func(r *rand.Rand) int { return r.IntN(*hot) })
	phase(fmt.Sprintf("hot set of %d (warm)", *hot), func(r *rand.Rand) int { return r.IntN(*hot) })
}
