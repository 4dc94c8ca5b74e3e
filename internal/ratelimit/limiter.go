package ratelimit

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"
)

// kind tells what a counting key's id is; the flags keep namespaces apart so
// a key id can never collide with a subject, a tenant or a hashed identity.
type kind uint8

const (
	kindKey     kind = 1 // id = API key id
	kindSubject kind = 2 // id = JWT subject
	kindTenant  kind = 3 // id = tenant

	kindHashed kind = 0x10 // flag: id is the hex SHA-256 of a long identity
	kindRoute  kind = 0x20 // flag: principal + route (route holds the route id)
)

// maxIDLen is the longest identity used verbatim in a counting key.
const maxIDLen = 128

// key is a counting key: one local table entry, one Redis key per window.
type key struct {
	kind  kind
	id    string
	route string
}

func mkKey(k kind, id string) key {
	if len(id) > maxIDLen {
		sum := sha256.Sum256([]byte(id))
		return key{kind: k | kindHashed, id: hex.EncodeToString(sum[:])}
	}
	return key{kind: k, id: id}
}

// MaxTenantPlans bounds the tenant plans one request is counted against
// (it acts for every tenant header it sends, or for every tenant its
// credential holds when it names none): a request over it fails with
// ErrTooManyTenants, a deny, never an uncounted allow.
const MaxTenantPlans = 4

// ErrTooManyTenants: the request acts for more tenants with a plan than
// MaxTenantPlans.
var ErrTooManyTenants = errors.New("ratelimit: the request acts for more tenants with a plan than one check counts")

// maxParts bounds the plans one Take counts: the tenant plans (or the
// principal's plan) and the route's.
const maxParts = MaxTenantPlans + 1

// part is one plan counted on one key.
type part struct {
	plan *cplan
	key  key
}

// target is what one Take counts: every part's windows, atomically.
type target struct {
	parts [maxParts]part
	n     int
	route bool // the last part is the route's
}

func (t *target) add(p *cplan, k key) { t.parts[t.n] = part{p, k}; t.n++ }

func (t *target) limited() bool { return t.n > 0 }

func (t *target) policy() string {
	switch {
	case t.n == 1:
		return t.parts[0].plan.policy
	case t.n == 2 && t.route:
		if p, ok := t.parts[1].plan.withPlan[t.parts[0].plan]; ok {
			return p
		}
	}
	ps := make([]string, t.n)
	for i := range t.n {
		ps[i] = t.parts[i].plan.policy
	}
	return strings.Join(ps, ", ")
}

// resolve derives the counting keys from the verified subject (package doc).
func (c *compiled) resolve(s *Subject) (tg target, err error) {
	var principal key
	hasPrincipal := true
	switch {
	case s.KeyID != "":
		principal = mkKey(kindKey, s.KeyID)
	case s.Subject != "":
		principal = mkKey(kindSubject, s.Subject)
	default:
		hasPrincipal = false
	}

	var plan *cplan
	if s.KeyID != "" {
		plan = c.keys[s.KeyID]
	}
	if plan == nil && s.Subject != "" {
		plan = c.keys[s.Subject]
	}
	if plan == nil {
		for i, t := range s.Tenants {
			if p := c.tenants[t]; p != nil && !slices.Contains(s.Tenants[:i], t) { // each tenant once
				if tg.n == MaxTenantPlans {
					return target{}, ErrTooManyTenants
				}
				tg.add(p, mkKey(kindTenant, t))
			}
		}
	}
	if tg.n == 0 && hasPrincipal {
		if plan == nil && s.Plan != "" {
			plan = c.plans[s.Plan]
		}
		if plan == nil {
			plan = c.def
		}
		if plan != nil {
			tg.add(plan, principal)
		}
	}
	if hasPrincipal && s.Route != "" {
		if r := c.routes[s.Route]; r != nil {
			tg.add(r, key{kind: principal.kind | kindRoute, id: principal.id, route: s.Route})
			tg.route = true
		}
	}
	return tg, nil
}

// evalWin is one window's state during a Take: cur is its count before this
// request in window idx.
type evalWin struct {
	w   *cwin
	idx int64
	cur int64
}

// maxWins bounds the windows of one Take: one per period for each part.
const maxWins = maxParts * nPeriods

// summarize builds the Result from the windows' state (package doc, header
// math).
func summarize(ev []evalWin, allowed bool, t int64, policy string) Result {
	best := -1
	var bestRem, bestReset int64
	for i := range ev {
		e := &ev[i]
		reset := (e.idx + 1) * e.w.secs
		var rem int64
		if allowed {
			rem = e.w.limit - e.cur - 1
		} else {
			if e.cur < e.w.limit {
				continue // this window did not deny
			}
			rem = 0
		}
		if best < 0 {
			best, bestRem, bestReset = i, rem, reset
			continue
		}
		b := ev[best].w
		var better bool
		if allowed {
			better = rem < bestRem || (rem == bestRem && e.w.secs < b.secs)
		} else {
			better = reset > bestReset || (reset == bestReset && e.w.secs < b.secs)
		}
		if better {
			best, bestRem, bestReset = i, rem, reset
		}
	}
	if best < 0 { // unreachable: a denial always has a denying window
		return Result{Allowed: allowed}
	}
	w := ev[best].w
	r := Result{
		Allowed:       allowed,
		Limit:         w.limit,
		Remaining:     max(bestRem, 0),
		Reset:         bestReset,
		ResetIn:       bestReset - t,
		WindowSeconds: w.secs,
		Window:        w.human,
		Policy:        policy,
		Name:          w.name,
	}
	if !allowed {
		r.RetryAfter = r.ResetIn
	}
	return r
}

// limiter is the Limiter New returns.
type limiter struct {
	cfg     atomic.Pointer[compiled]
	opts    Options
	local   *localStore
	redis   *redisStore // nil for the local backend
	failing atomic.Bool // redis is failing (for logging transitions)
}

func (l *limiter) Take(ctx context.Context, s Subject, now time.Time) (Result, error) {
	c := l.cfg.Load()
	tg, err := c.resolve(&s)
	if err != nil {
		return Result{}, err
	}
	if !tg.limited() {
		return Result{Allowed: true}, nil
	}
	if now.IsZero() {
		now = time.Now()
	}
	t := now.Unix()
	if l.redis == nil {
		r := l.local.take(&tg, t, &l.opts.Metrics)
		l.taken("local", r)
		return r, nil
	}
	r, err := l.redis.take(ctx, c.backend.Timeout, &tg, t)
	if err == nil {
		if l.failing.Load() && l.failing.CompareAndSwap(true, false) {
			l.opts.Logger.Info("ratelimit: redis backend recovered", "addr", c.backend.Addr)
		}
		l.taken("redis", r)
		return r, nil
	}
	if f := l.opts.Metrics.BackendError; f != nil {
		f(err)
	}
	if !l.failing.Load() && l.failing.CompareAndSwap(false, true) {
		l.opts.Logger.Warn("ratelimit: redis backend failing", "addr", c.backend.Addr, "on_error", c.backend.OnError, "err", err)
	}
	if c.backend.OnError != OnErrorAllowLocal {
		return Result{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	r = l.local.take(&tg, t, &l.opts.Metrics)
	r.Degraded = true
	l.taken("local", r)
	return r, nil
}

func (l *limiter) taken(backend string, r Result) {
	if f := l.opts.Metrics.Taken; f != nil {
		f(backend, r.Allowed, r.Degraded)
	}
}

// Reload implements Reloader.
func (l *limiter) Reload(cfg *Config) error {
	c, err := compile(cfg)
	if err != nil {
		return err
	}
	old := l.cfg.Load()
	ob, nb := old.backend, c.backend
	if ob.Type != nb.Type || (nb.Type == BackendRedis && (ob.Addr != nb.Addr || ob.Prefix != nb.Prefix || ob.Timeout != nb.Timeout)) {
		return ErrBackendChanged
	}
	l.local.max.Store(int64(nb.MaxKeys))
	l.cfg.Store(c)
	return nil
}

// Close releases the Redis client; the local backend has nothing to close.
func (l *limiter) Close() error {
	if l.redis != nil {
		return l.redis.close()
	}
	return nil
}
