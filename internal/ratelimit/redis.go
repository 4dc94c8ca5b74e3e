package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// takeScript is the fixed-window algorithm for all windows of one Take,
// atomically: KEYS[i] is window i's counter (named by identity, period and
// window index), ARGV[i] its limit and ARGV[n+i] its TTL in seconds. It
// admits only if every counter is below its limit and then increments all
// of them; a denial changes nothing. It returns {admitted (0|1), count_1
// before this request, ..., count_n before this request}.
var takeScript = redis.NewScript(`
local n = #KEYS
local out = {1}
for i = 1, n do
  local c = tonumber(redis.call('GET', KEYS[i]) or '0')
  out[i + 1] = c
  if c >= tonumber(ARGV[i]) then out[1] = 0 end
end
if out[1] == 1 then
  for i = 1, n do
    if redis.call('INCR', KEYS[i]) == 1 then
      redis.call('EXPIRE', KEYS[i], ARGV[n + i])
    end
  end
end
return out
`)

// redisStore is the Redis backend: one script run per Take.
type redisStore struct {
	client *redis.Client
	prefix string
}

func newRedisStore(b Backend) *redisStore {
	return &redisStore{
		prefix: b.Prefix,
		client: redis.NewClient(&redis.Options{
			Addr: b.Addr,
			// Every wait is bounded by the Take budget; the per-call context
			// deadline (ContextTimeoutEnabled) is the binding one.
			DialTimeout:           b.Timeout,
			ReadTimeout:           b.Timeout,
			WriteTimeout:          b.Timeout,
			PoolTimeout:           b.Timeout,
			ContextTimeoutEnabled: true,
			DialerRetries:         1,
			// No command retries: a retried script could count twice.
			MaxRetries:               -1,
			DisableIdentity:          true,
			MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
		}),
	}
}

func (r *redisStore) close() error { return r.client.Close() }

// kindTag renders a key kind for Redis key names.
func kindTag(k kind) string {
	var tag string
	switch k &^ (kindHashed | kindRoute) {
	case kindKey:
		tag = "k"
	case kindSubject:
		tag = "s"
	case kindTenant:
		tag = "t"
	default:
		tag = "x"
	}
	if k&kindHashed != 0 {
		tag += "h"
	}
	if k&kindRoute != 0 {
		tag = "r" + tag
	}
	return tag
}

// redisKey names window idx of period secs for k:
// <prefix>:<kind>:<len(id)>:<id>[:<route>]:<secs>:<idx>. The length prefix
// and the fixed numeric suffix make the name unambiguous whatever the id and
// route contain.
func (r *redisStore) redisKey(k *key, secs, idx int64) string {
	b := make([]byte, 0, len(r.prefix)+len(k.id)+len(k.route)+48)
	b = append(b, r.prefix...)
	b = append(b, ':')
	b = append(b, kindTag(k.kind)...)
	b = append(b, ':')
	b = strconv.AppendInt(b, int64(len(k.id)), 10)
	b = append(b, ':')
	b = append(b, k.id...)
	if k.kind&kindRoute != 0 {
		b = append(b, ':')
		b = append(b, k.route...)
	}
	b = append(b, ':')
	b = strconv.AppendInt(b, secs, 10)
	b = append(b, ':')
	b = strconv.AppendInt(b, idx, 10)
	return string(b)
}

var errBadReply = errors.New("ratelimit: unexpected reply from redis script")

// take runs the script for tg at unix second t within timeout.
func (r *redisStore) take(ctx context.Context, timeout time.Duration, tg *target, t int64) (Result, error) {
	var ev [maxWins]evalWin
	nev := 0
	keys := make([]string, 0, maxWins)
	limits := make([]any, 0, 2*maxWins)
	var ttls [maxWins]int64
	add := func(p *cplan, k *key) {
		for wi := range p.wins {
			w := &p.wins[wi]
			idx := t / w.secs
			ev[nev] = evalWin{w: w, idx: idx}
			// Live until the window ends plus a slack for replica clock skew.
			ttls[nev] = (idx+1)*w.secs - t + min(w.secs, 60)
			keys = append(keys, r.redisKey(k, w.secs, idx))
			limits = append(limits, w.limit)
			nev++
		}
	}
	for i := range tg.n {
		add(tg.parts[i].plan, &tg.parts[i].key)
	}
	for i := 0; i < nev; i++ {
		limits = append(limits, ttls[i])
	}

	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	vals, err := takeScript.Run(ctx, r.client, keys, limits...).Int64Slice()
	if err != nil {
		return Result{}, err
	}
	if len(vals) != nev+1 {
		return Result{}, fmt.Errorf("%w: %d values for %d windows", errBadReply, len(vals), nev)
	}
	for i := 0; i < nev; i++ {
		ev[i].cur = vals[i+1]
	}
	return summarize(ev[:nev], vals[0] == 1, t, tg.policy()), nil
}
