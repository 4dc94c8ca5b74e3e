package ratelimit

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/extauthz/extauthz/internal/authn"
	"github.com/extauthz/extauthz/internal/jsonx"
)

// Config is the policy data section extauthz.limits, parsed and validated:
//
//	{"plans": {"free": {"windows": [{"limit": 10, "period": "minute"}, {"limit": 100, "period": "hour"}]}},
//	 "default_plan": "free",
//	 "tenants": {"42": "starter"},
//	 "keys": {"demo-orders": "professional"},
//	 "routes": {"orders-write": {"windows": [{"limit": 5, "period": "second"}]}},
//	 "headers": "x-ratelimit",
//	 "backend": {"type": "local", "max_keys": 100000}}
//
// A Config built in code is validated by New and Reload.
type Config struct {
	Plans       map[string]Plan   // plan name -> windows
	DefaultPlan string            // plan for identities without one; "" = unlimited
	Tenants     map[string]string // tenant -> plan
	Keys        map[string]string // key id or JWT subject -> plan (override)
	Routes      map[string]Plan   // route id -> extra windows, per principal and route
	Headers     string            // HeadersXRateLimit (default) or HeadersIETF
	Backend     Backend

	gen uint64 // ParseConfig's order (0: built in code); see Quotas.For
}

// Plan is a set of windows, at most one per period.
type Plan struct {
	Windows []Window
}

// Window is one quota: Limit requests per Period.
type Window struct {
	Limit  int64
	Period string // second, minute, hour, day
}

// Backend types and on_error modes.
const (
	BackendLocal = "local"
	BackendRedis = "redis"

	OnErrorDeny       = "deny"
	OnErrorAllowLocal = "allow_local"
)

// Backend is limits.backend.
type Backend struct {
	Type    string        // BackendLocal (default) or BackendRedis
	Addr    string        // redis host:port
	Timeout time.Duration // redis per-Take budget; default DefaultTimeout (timeout_ms)
	OnError string        // redis failure mode: OnErrorDeny (default) or OnErrorAllowLocal
	MaxKeys int           // local (and fallback) table size; default 100000
	Prefix  string        // redis key prefix; default "extauthz:rl"
}

// Defaults and bounds.
const (
	// DefaultTimeout bounds one Redis round trip. It leaves room for a
	// loaded machine (20ms gave spurious 503s with a healthy Redis and the
	// CPU saturated) and still fits the server's check deadline after a
	// full policy evaluation: default --check-timeout 200ms minus
	// --eval-timeout 100ms. A Take is bounded by the earlier of this and
	// the check's context deadline.
	DefaultTimeout = 50 * time.Millisecond
	DefaultMaxKeys = 100000
	DefaultPrefix  = "extauthz:rl"

	maxLimit     = 1_000_000_000_000 // exact in Lua doubles, no int64 overflow
	maxTimeoutMS = 10000
	maxMaxKeys   = 100_000_000
)

// periods, shortest first; the index is the counter slot.
var periods = [...]struct {
	name  string
	secs  int64
	human string
}{
	{"second", 1, "1 second"},
	{"minute", 60, "1 minute"},
	{"hour", 3600, "1 hour"},
	{"day", 86400, "1 day"},
}

const nPeriods = len(periods)

func periodSlot(name string) int {
	for i, p := range periods {
		if p.name == name {
			return i
		}
	}
	return -1
}

// ConfigError lists every problem found in a config, each prefixed by the
// field path (limits.plans.free.windows[0].period).
type ConfigError struct {
	Problems []string
}

func (e *ConfigError) Error() string {
	return "invalid rate limit config: " + strings.Join(e.Problems, "; ")
}

// file is extauthz.limits as data.json spells it. ParseConfig decodes it with
// jsonx.Strict (unknown fields are errors) and converts it to a Config;
// pointers tell a missing value from a zero one.
type file struct {
	Plans       map[string]filePlan `json:"plans"`
	DefaultPlan string              `json:"default_plan"`
	Tenants     map[string]string   `json:"tenants"`
	Keys        map[string]string   `json:"keys"`
	Routes      map[string]filePlan `json:"routes"`
	Headers     string              `json:"headers"`
	Backend     fileBackend         `json:"backend"`
}

type filePlan struct {
	Windows []fileWindow `json:"windows"`
}

type fileWindow struct {
	Limit  *int64  `json:"limit"`
	Period *string `json:"period"`
}

type fileBackend struct {
	Type      string `json:"type"`
	Addr      string `json:"addr"`
	TimeoutMS *int64 `json:"timeout_ms"`
	OnError   string `json:"on_error"`
	MaxKeys   *int64 `json:"max_keys"`
	Prefix    string `json:"prefix"`
}

// ParseConfig parses and validates the extauthz.limits data section. An
// empty or null section is a valid config that limits nothing. The error,
// a *ConfigError, reports all problems, each naming its field.
func ParseConfig(raw json.RawMessage) (*Config, error) {
	raw = bytes.TrimSpace(raw)
	var f file
	r := &report{}
	if len(raw) > 0 && !bytes.Equal(raw, []byte("null")) {
		if !json.Valid(raw) {
			// Not one JSON value (json.Valid rejects trailing data too):
			// nothing more to read.
			return nil, &ConfigError{Problems: []string{jsonx.At("limits", jsonx.Strict(raw, &f)).Error()}}
		}
		err := jsonx.Strict(raw, &f)
		probs, _ := jsonx.Problems(jsonx.At("limits", err))
		for _, p := range probs {
			r.add(p.Path, "%s", p.Msg)
		}
	}
	cfg := f.config(r)
	cfg.check(r)
	if len(r.problems) > 0 {
		sort.Strings(r.problems)
		return nil, &ConfigError{Problems: r.problems}
	}
	applyDefaults(cfg)
	cfg.gen = generations.Add(1)
	return cfg, nil
}

// generations numbers the configs ParseConfig returns, in order.
var generations atomic.Uint64

// Validate checks a Config built in code (ParseConfig's result passes): it
// reports every problem at once, each naming its field, as a *ConfigError.
func (c *Config) Validate() error {
	r := &report{}
	c.check(r)
	if len(r.problems) > 0 {
		sort.Strings(r.problems)
		return &ConfigError{Problems: r.problems}
	}
	return nil
}

// report collects problems. A problem at a path silences later ones at that
// path or below it: a window that is not an object is not also missing its
// limit, a limit that is not an integer is not also out of range.
type report struct {
	problems []string
	bad      []string // paths with a problem
}

func (r *report) add(path, format string, args ...any) {
	for _, b := range r.bad {
		if path == b || strings.HasPrefix(path, b) && (path[len(b)] == '.' || path[len(b)] == '[') {
			return
		}
	}
	r.bad = append(r.bad, path)
	r.problems = append(r.problems, path+": "+fmt.Sprintf(format, args...))
}

// config converts the file form; it reports missing and out-of-range values
// that the Config cannot hold (a missing limit, a timeout_ms of 0).
func (f *file) config(r *report) *Config {
	cfg := &Config{
		Plans:       plans(r, "limits.plans", f.Plans),
		DefaultPlan: f.DefaultPlan,
		Tenants:     f.Tenants,
		Keys:        f.Keys,
		Routes:      plans(r, "limits.routes", f.Routes),
		Headers:     f.Headers,
	}
	fb, b := f.Backend, &cfg.Backend
	b.Type, b.Addr, b.OnError, b.Prefix = fb.Type, fb.Addr, fb.OnError, fb.Prefix
	if ms := fb.TimeoutMS; ms != nil {
		if *ms < 1 || *ms > maxTimeoutMS {
			r.add("limits.backend.timeout_ms", "must be between 1 and %d, got %d", maxTimeoutMS, *ms)
		} else {
			b.Timeout = time.Duration(*ms) * time.Millisecond
		}
	}
	if n := fb.MaxKeys; n != nil {
		if *n < 1 || *n > maxMaxKeys {
			r.add("limits.backend.max_keys", "must be between 1 and %d, got %d", maxMaxKeys, *n)
		} else {
			b.MaxKeys = int(*n)
		}
	}
	return cfg
}

func plans(r *report, path string, in map[string]filePlan) map[string]Plan {
	if in == nil {
		return nil
	}
	out := make(map[string]Plan, len(in))
	for _, name := range sortedKeys(in) {
		fp := in[name]
		var plan Plan
		if fp.Windows != nil {
			plan.Windows = make([]Window, len(fp.Windows))
		}
		for i, fw := range fp.Windows {
			wp := jsonx.Index(jsonx.Field(path, name)+".windows", i)
			w := &plan.Windows[i]
			if fw.Limit == nil {
				r.add(wp+".limit", "required: an integer from 1 to %d", int64(maxLimit))
			} else {
				w.Limit = *fw.Limit
			}
			if fw.Period == nil {
				r.add(wp+".period", "required: one of second, minute, hour, day")
			} else {
				w.Period = *fw.Period
			}
		}
		out[name] = plan
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// check reports the values and cross references of c that are wrong.
func (c *Config) check(r *report) {
	add := r.add
	checkPlans := func(path string, plans map[string]Plan) {
		for _, name := range sortedKeys(plans) {
			pp := jsonx.Field(path, name)
			if name == "" {
				add(pp, "name must not be empty")
			}
			ws := plans[name].Windows
			if len(ws) == 0 {
				add(pp+".windows", "must list at least one window")
			}
			seen := map[string]int{}
			for i, w := range ws {
				wp := jsonx.Index(pp+".windows", i)
				if w.Limit < 1 || w.Limit > maxLimit {
					add(wp+".limit", "must be from 1 to %d, got %d", int64(maxLimit), w.Limit)
				}
				switch {
				case periodSlot(w.Period) < 0:
					add(wp+".period", "%q is not one of second, minute, hour, day", w.Period)
				default:
					if j, dup := seen[w.Period]; dup {
						add(wp+".period", "%q repeats windows[%d]; use one window per period", w.Period, j)
					} else {
						seen[w.Period] = i
					}
				}
			}
		}
	}
	checkPlans("limits.plans", c.Plans)
	checkPlans("limits.routes", c.Routes)

	planRef := func(path, plan string) {
		if _, ok := c.Plans[plan]; !ok {
			add(path, "%q names no plan in limits.plans", plan)
		}
	}
	if c.DefaultPlan != "" {
		planRef("limits.default_plan", c.DefaultPlan)
	}
	for _, section := range []struct {
		path string
		m    map[string]string
	}{{"limits.tenants", c.Tenants}, {"limits.keys", c.Keys}} {
		for _, k := range sortedKeys(section.m) {
			fp := jsonx.Field(section.path, k)
			if k == "" {
				add(fp, "name must not be empty")
			} else if section.path == "limits.tenants" {
				if err := authn.CheckTenantKey(k); err != nil {
					add(fp, "%v", err)
				}
			}
			planRef(fp, section.m[k])
		}
	}
	switch c.Headers {
	case "", HeadersXRateLimit, HeadersIETF:
	default:
		add("limits.headers", "%q is not one of x-ratelimit, ietf", c.Headers)
	}

	b := c.Backend
	switch b.Type {
	case "", BackendLocal:
		if b.Addr != "" {
			add("limits.backend.addr", "only valid with type redis")
		}
		if b.OnError != "" {
			add("limits.backend.on_error", "only valid with type redis")
		}
		if b.Prefix != "" {
			add("limits.backend.prefix", "only valid with type redis")
		}
	case BackendRedis:
		if b.Addr == "" {
			add("limits.backend.addr", "required with type redis (host:port)")
		} else if host, port, err := net.SplitHostPort(b.Addr); err != nil || host == "" || port == "" {
			add("limits.backend.addr", "%q is not host:port", b.Addr)
		}
		switch b.OnError {
		case "", OnErrorDeny, OnErrorAllowLocal:
		default:
			add("limits.backend.on_error", "%q is not one of deny, allow_local", b.OnError)
		}
	default:
		add("limits.backend.type", "%q is not one of local, redis", b.Type)
	}
	if b.Timeout < 0 || b.Timeout > maxTimeoutMS*time.Millisecond {
		add("limits.backend.timeout_ms", "must be between 1 and %d", maxTimeoutMS)
	}
	if b.MaxKeys < 0 || b.MaxKeys > maxMaxKeys {
		add("limits.backend.max_keys", "must be between 1 and %d", maxMaxKeys)
	}
}

func applyDefaults(cfg *Config) {
	if cfg.Headers == "" {
		cfg.Headers = HeadersXRateLimit
	}
	b := &cfg.Backend
	if b.Type == "" {
		b.Type = BackendLocal
	}
	if b.Timeout == 0 {
		b.Timeout = DefaultTimeout
	}
	if b.MaxKeys == 0 {
		b.MaxKeys = DefaultMaxKeys
	}
	if b.Type == BackendRedis {
		if b.OnError == "" {
			b.OnError = OnErrorDeny
		}
		if b.Prefix == "" {
			b.Prefix = DefaultPrefix
		}
	}
}

// compiled is the hot-path form of a Config.
type compiled struct {
	plans   map[string]*cplan
	def     *cplan
	tenants map[string]*cplan
	keys    map[string]*cplan
	routes  map[string]*cplan
	headers string
	backend Backend
}

type cplan struct {
	wins   []cwin // shortest period first
	policy string // IETF RateLimit-Policy items for these windows
	// withPlan (route plans only) holds plan.policy + ", " + policy for
	// every plan, so Takes with both build no string.
	withPlan map[*cplan]string
}

type cwin struct {
	limit int64
	secs  int64
	slot  int    // counter slot = index in periods
	name  string // IETF policy name: "minute", "route-minute"
	human string // "1 minute"
}

func compile(cfg *Config) (*compiled, error) {
	if cfg == nil {
		cfg = &Config{}
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := *cfg
	applyDefaults(&c)
	out := &compiled{
		plans:   make(map[string]*cplan, len(c.Plans)),
		tenants: make(map[string]*cplan, len(c.Tenants)),
		keys:    make(map[string]*cplan, len(c.Keys)),
		routes:  make(map[string]*cplan, len(c.Routes)),
		headers: c.Headers,
		backend: c.Backend,
	}
	for name, p := range c.Plans {
		out.plans[name] = compilePlan(p, "")
	}
	for name, p := range c.Routes {
		rp := compilePlan(p, "route-")
		rp.withPlan = make(map[*cplan]string, len(out.plans))
		for _, pp := range out.plans {
			rp.withPlan[pp] = pp.policy + ", " + rp.policy
		}
		out.routes[name] = rp
	}
	out.def = out.plans[c.DefaultPlan]
	for k, plan := range c.Tenants {
		out.tenants[k] = out.plans[plan]
	}
	for k, plan := range c.Keys {
		out.keys[k] = out.plans[plan]
	}
	return out, nil
}

func compilePlan(p Plan, namePrefix string) *cplan {
	cp := &cplan{}
	for _, w := range p.Windows {
		slot := periodSlot(w.Period)
		cp.wins = append(cp.wins, cwin{
			limit: w.Limit,
			secs:  periods[slot].secs,
			slot:  slot,
			name:  namePrefix + periods[slot].name,
			human: periods[slot].human,
		})
	}
	sort.Slice(cp.wins, func(i, j int) bool { return cp.wins[i].secs < cp.wins[j].secs })
	items := make([]string, len(cp.wins))
	for i, w := range cp.wins {
		items[i] = fmt.Sprintf("%q;q=%d;w=%d", w.name, w.limit, w.secs)
	}
	cp.policy = strings.Join(items, ", ")
	return cp
}
