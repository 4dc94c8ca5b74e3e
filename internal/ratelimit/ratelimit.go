// Package ratelimit enforces per-plan quotas after a request has been
// authenticated and authorized. It is keyed only on the verified identity
// (so unverified input never creates quota state), counts in fixed windows,
// and renders the quota state as X-RateLimit-* or IETF
// RateLimit-Policy/RateLimit headers.
//
// # Counting keys
//
// The counting key is derived only from the verified Subject, never from raw
// request input:
//
//   - principal = "k"+KeyID when KeyID is set, else "s"+Subject (JWT sub);
//     with neither there is no principal.
//   - The plan is chosen in this order: limits.keys[KeyID] (then
//     limits.keys[Subject]); the plans limits.tenants gives the Tenants the
//     request acts for (every one of them, up to MaxTenantPlans); the
//     identity's Plan when it names a configured plan; limits.default_plan.
//     The first hit wins.
//   - A tenant plan is counted per tenant (every key and user acting for the
//     tenant shares it), and a request acting for several tenants with plans
//     counts against each, all or none; every other plan is counted per
//     principal.
//   - limits.routes[Route] windows are counted per principal and route, in
//     addition to the plan windows.
//   - Without a principal only a tenant plan can apply; a request with no
//     principal and no tenant plan is unlimited and creates no state, so
//     anonymous traffic cannot grow the key set. Tenant and route counting
//     keys exist only for tenants and routes named in the config.
//   - Identities longer than 128 bytes are replaced by their SHA-256.
//
// # Algorithm: fixed windows aligned to the Unix epoch
//
// Each window has a limit L and a period P in {1, 60, 3600, 86400} seconds.
// With t = now.Unix() (whole seconds, floor), the current window is
// idx = t / P; it covers [idx*P, (idx+1)*P) and its counter holds c, the
// requests admitted in it. A request is admitted only if every window that
// applies admits it (c < L); then, and only then, every window's counter is
// incremented. A denied request consumes nothing in any window. The check
// and the increments are atomic (one lock section locally, one Lua script in
// Redis), so concurrent Takes are exact. A Take stamped before a later
// window's first count but locked after it counts in that later window
// (local backend; Redis keys each window apart), never rewinding a counter.
//
// Fixed windows were chosen over GCRA/sliding windows because the contract
// headers carry an absolute reset time (X-RateLimit-Reset, unix seconds),
// the counter is a single integer per window that Redis can hold with INCR
// and a TTL, and reset/retry are exact to the second. The known cost: a
// client can send up to 2L requests around a window boundary (L at the end of
// one window, L at the start of the next). Windows are aligned to the epoch
// (minutes start at :00, days at 00:00 UTC), so every key of a period resets
// at the same instant.
//
// # Header math
//
// For each window: Reset = (idx+1)*P (unix seconds), ResetIn = Reset - t
// (1..P), Remaining = L - c - 1 after an admitted request, and
// max(0, L - c) on a denied one. The reported window is
//
//   - admitted: the window with the lowest Remaining; ties go to the shortest
//     period;
//   - denied: among the windows that denied, the one that resets last (ties:
//     the shortest period), because the request cannot pass before that
//     moment. Its Remaining is 0 and RetryAfter = ResetIn = Reset - t >= 1.
//
// So Reset - RetryAfter = t always, Retry-After names the same instant as
// X-RateLimit-Reset and as the IETF t parameter, and a client that waits
// Retry-After seconds from receipt arrives at or after the reset (t is the
// floor of now, so the advertised wait is never short; it may be long by
// under a second).
//
//	x-ratelimit: X-RateLimit-Limit: L, X-RateLimit-Remaining: Remaining,
//	             X-RateLimit-Reset: Reset [, Retry-After: RetryAfter]
//	ietf:        RateLimit-Policy: "minute";q=10;w=60, "hour";q=100;w=3600
//	             RateLimit: "minute";r=Remaining;t=ResetIn [, Retry-After]
//
// RateLimit-Policy lists every window that applied (plan windows named by
// their period, route windows "route-<period>"), shortest first; RateLimit
// names only the reported window (draft-ietf-httpapi-ratelimit-headers).
//
// # Backends
//
// The local backend is in-process: 64 lock-protected shards, at most
// backend.max_keys tracked counting keys. An entry whose windows have all
// ended is dead. When the table is full a new key triggers one sweep of dead
// entries over all shards (at most once per second of the clock passed to
// Take); if it is still full the new key is not tracked and the request is
// admitted with Degraded set and no quota headers (metrics: Untracked).
// Existing keys keep being counted exactly.
//
// The redis backend runs one Lua script per Take (EVALSHA; when the server
// does not know the script yet, after a start or a SCRIPT FLUSH, go-redis
// sends EVAL once, a second round trip within the same timeout) that
// applies the same algorithm to every window atomically; counters are keys named by identity, period and window
// index, expiring shortly after their window. Window arithmetic uses the
// caller's clock, so replicas need synchronised clocks (skew shifts window
// edges by the skew). Each Take is bounded by backend.timeout_ms (context
// deadline; go-redis retries are off so a script never runs twice). On any
// Redis failure, on_error "deny" returns an error wrapping ErrUnavailable
// (the caller answers 503) and "allow_local" answers from an in-process
// limiter with the same config and marks the Result Degraded; that local
// state is per replica, so during an outage each replica admits up to the
// full quota. Counting in Redis resumes by itself once Redis answers again.
// Redis Cluster is not supported (the keys of one Take are not hash-tagged
// into one slot).
//
// # Reload
//
// The Limiter that New returns also implements Reloader and io.Closer.
// Reload swaps the config atomically and keeps the counters, because
// counters are keyed by identity and period, not by plan: a key moved from
// free (10/min) to starter (100/min) after 10 requests this minute is
// admitted at once with 89 remaining. Calling New again instead starts the
// local counters from zero.
package ratelimit

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"time"

	"github.com/extauthz/extauthz/internal/decision"
)

// ErrUnavailable is wrapped by the error Take returns when the Redis backend
// fails (unreachable, timeout, script error) and backend.on_error is "deny".
// The caller maps it to the profile's 503.
var ErrUnavailable = errors.New("ratelimit: backend unavailable")

// ErrBackendChanged is returned by Reload when the new config changes the
// backend type, address, prefix or timeout; build a new Limiter with New.
var ErrBackendChanged = errors.New("ratelimit: backend settings changed; create a new limiter")

// Header families (limits.headers).
const (
	HeadersXRateLimit = "x-ratelimit"
	HeadersIETF       = "ietf"
)

// Subject is the verified identity a request acts as. Fill it only from
// verified credentials and resolved route/tenant, never from raw headers.
type Subject struct {
	KeyID   string   // API key id
	Subject string   // JWT subject, used when KeyID is empty
	Tenants []string // tenants the request acts for (verified; authn.TenantKey names)
	Plan    string   // plan attached to the identity by its credential store
	Route   string   // route id from the route table
}

// Result is the outcome of a Take.
type Result struct {
	Allowed bool
	// Limit and Remaining of the reported window (see the package doc).
	Limit, Remaining int64
	// Reset is the unix second at which the reported window ends.
	Reset int64
	// RetryAfter is Reset - now in seconds when !Allowed, else 0.
	RetryAfter int64
	// WindowSeconds and Window describe the reported window: 60, "1 minute".
	WindowSeconds int64
	Window        string
	// Policy is the IETF RateLimit-Policy value listing every window that
	// applied, e.g. `"minute";q=10;w=60, "hour";q=100;w=3600`.
	Policy string
	// Name is the IETF policy name of the reported window ("minute",
	// "route-second").
	Name string
	// ResetIn is Reset - now in seconds (the IETF t parameter).
	ResetIn int64
	// Degraded is set when the backend failed and on_error admitted the
	// request from local state, or when the local table was full and the key
	// was admitted untracked (then there is no window and no headers).
	Degraded bool
}

// Limited reports whether a window applied, i.e. whether there are quota
// headers to send. Unlimited results (no plan, no principal, untracked keys)
// have WindowSeconds 0.
func (r Result) Limited() bool { return r.WindowSeconds > 0 }

// RateLimit converts r for decision.Decision.RateLimit; nil when unlimited.
func (r Result) RateLimit() *decision.RateLimit {
	if !r.Limited() {
		return nil
	}
	return &decision.RateLimit{
		Limit:         r.Limit,
		Remaining:     r.Remaining,
		Reset:         r.Reset,
		RetryAfter:    r.RetryAfter,
		WindowSeconds: r.WindowSeconds,
		Window:        r.Window,
	}
}

// Headers returns the header name/value pairs for r in the given family
// ("x-ratelimit", the default for any other value, or "ietf"), for allowed
// and denied responses alike; Retry-After is added when the request was
// denied. Unlimited results have no headers.
func (r Result) Headers(family string) [][2]string {
	if !r.Limited() {
		return nil
	}
	n := 3
	if !r.Allowed {
		n++
	}
	h := make([][2]string, 0, n)
	if family == HeadersIETF {
		h = append(h,
			[2]string{"RateLimit-Policy", r.Policy},
			[2]string{"RateLimit", `"` + r.Name + `";r=` + strconv.FormatInt(r.Remaining, 10) + ";t=" + strconv.FormatInt(r.ResetIn, 10)},
		)
	} else {
		h = append(h,
			[2]string{"X-RateLimit-Limit", strconv.FormatInt(r.Limit, 10)},
			[2]string{"X-RateLimit-Remaining", strconv.FormatInt(r.Remaining, 10)},
			[2]string{"X-RateLimit-Reset", strconv.FormatInt(r.Reset, 10)},
		)
	}
	if !r.Allowed {
		h = append(h, [2]string{"Retry-After", strconv.FormatInt(r.RetryAfter, 10)})
	}
	return h
}

// Limiter is what the check path calls after authn and authz succeeded.
type Limiter interface {
	// Take counts one request for s at now and says whether it is admitted.
	// A zero now means time.Now(). The error is non-nil only for the redis
	// backend with on_error "deny", and then wraps ErrUnavailable.
	Take(ctx context.Context, s Subject, now time.Time) (Result, error)
}

// Reloader is implemented by every Limiter that New returns.
type Reloader interface {
	// Reload applies cfg to subsequent Takes and keeps the counters. It
	// returns ErrBackendChanged (and changes nothing) when cfg needs a
	// different backend connection.
	Reload(cfg *Config) error
}

// Metrics are optional hooks; nil fields are skipped. They are called on the
// hot path and must be cheap and safe for concurrent use.
type Metrics struct {
	// Taken is called once per limited Take: backend is "local" or "redis"
	// (fallback answers report "local" with degraded set).
	Taken func(backend string, allowed, degraded bool)
	// BackendError is called on every failed Redis call, before on_error
	// decides.
	BackendError func(err error)
	// Untracked is called when the local table is full and a key is admitted
	// without being counted.
	Untracked func()
}

// Options configures New.
type Options struct {
	Metrics Metrics
	Logger  *slog.Logger // default slog.Default()
}

// New returns a Limiter for cfg. For the redis backend it does not contact
// Redis (the first Take does), so a missing Redis never blocks start-up. The
// result also implements Reloader and io.Closer.
func New(cfg *Config, opts Options) (Limiter, error) {
	c, err := compile(cfg)
	if err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	l := &limiter{opts: opts, local: newLocalStore(int64(c.backend.MaxKeys))}
	l.cfg.Store(c)
	if c.backend.Type == BackendRedis {
		l.redis = newRedisStore(c.backend)
	}
	return l, nil
}
