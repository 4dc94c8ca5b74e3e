package ratelimit

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
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

// ParseConfig parses and validates the extauthz.limits data section. An
// empty or null section is a valid config that limits nothing. The error,
// a *ConfigError, reports all problems, each naming its field.
func ParseConfig(raw json.RawMessage) (*Config, error) {
	p := &parser{bad: map[string]bool{}}
	cfg := &Config{}
	raw = bytes.TrimSpace(raw)
	if len(raw) > 0 && !bytes.Equal(raw, []byte("null")) {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		var v any
		if err := dec.Decode(&v); err != nil {
			return nil, &ConfigError{Problems: []string{"limits: invalid JSON: " + err.Error()}}
		}
		if dec.More() {
			return nil, &ConfigError{Problems: []string{"limits: invalid JSON: trailing data"}}
		}
		p.root(v, cfg)
	}
	p.problems = append(p.problems, validate(cfg, p.bad)...)
	if len(p.problems) > 0 {
		sort.Strings(p.problems)
		return nil, &ConfigError{Problems: p.problems}
	}
	applyDefaults(cfg)
	return cfg, nil
}

// parser walks the decoded JSON; it reports type errors and unknown fields
// and records their paths in bad so that validate does not report them twice.
type parser struct {
	problems []string
	bad      map[string]bool
}

func (p *parser) addf(path, format string, args ...any) {
	p.bad[path] = true
	p.problems = append(p.problems, path+": "+fmt.Sprintf(format, args...))
}

var identRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

func field(path, name string) string {
	if identRE.MatchString(name) {
		return path + "." + name
	}
	return path + "[" + strconv.Quote(name) + "]"
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func describe(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		return strconv.Quote(x)
	case json.Number:
		return x.String()
	case bool:
		return strconv.FormatBool(x)
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

func (p *parser) object(path string, v any, known ...string) (map[string]any, bool) {
	m, ok := v.(map[string]any)
	if !ok {
		p.addf(path, "must be an object, got %s", describe(v))
		return nil, false
	}
	if known != nil {
		for _, k := range sortedKeys(m) {
			isKnown := false
			for _, kn := range known {
				if k == kn {
					isKnown = true
					break
				}
			}
			if !isKnown {
				p.addf(field(path, k), "unknown field (known: %s)", strings.Join(known, ", "))
			}
		}
	}
	return m, true
}

func (p *parser) str(path string, v any) (string, bool) {
	s, ok := v.(string)
	if !ok {
		p.addf(path, "must be a string, got %s", describe(v))
	}
	return s, ok
}

func (p *parser) integer(path string, v any) (int64, bool) {
	n, ok := v.(json.Number)
	if ok {
		if i, err := strconv.ParseInt(n.String(), 10, 64); err == nil {
			return i, true
		}
	}
	p.addf(path, "must be an integer, got %s", describe(v))
	return 0, false
}

func (p *parser) root(v any, cfg *Config) {
	m, ok := p.object("limits", v, "plans", "default_plan", "tenants", "keys", "routes", "headers", "backend")
	if !ok {
		return
	}
	if x, ok := m["plans"]; ok {
		cfg.Plans = p.plans("limits.plans", x)
	}
	if x, ok := m["routes"]; ok {
		cfg.Routes = p.plans("limits.routes", x)
	}
	if x, ok := m["default_plan"]; ok {
		cfg.DefaultPlan, _ = p.str("limits.default_plan", x)
	}
	if x, ok := m["tenants"]; ok {
		cfg.Tenants = p.stringMap("limits.tenants", x)
	}
	if x, ok := m["keys"]; ok {
		cfg.Keys = p.stringMap("limits.keys", x)
	}
	if x, ok := m["headers"]; ok {
		cfg.Headers, _ = p.str("limits.headers", x)
	}
	if x, ok := m["backend"]; ok {
		p.backend("limits.backend", x, &cfg.Backend)
	}
}

func (p *parser) stringMap(path string, v any) map[string]string {
	m, ok := p.object(path, v)
	if !ok {
		return nil
	}
	out := make(map[string]string, len(m))
	for _, k := range sortedKeys(m) {
		if s, ok := p.str(field(path, k), m[k]); ok {
			out[k] = s
		}
	}
	return out
}

func (p *parser) plans(path string, v any) map[string]Plan {
	m, ok := p.object(path, v)
	if !ok {
		return nil
	}
	out := make(map[string]Plan, len(m))
	for _, name := range sortedKeys(m) {
		pp := field(path, name)
		pm, ok := p.object(pp, m[name], "windows")
		if !ok {
			continue
		}
		var plan Plan
		if wv, ok := pm["windows"]; ok {
			arr, ok := wv.([]any)
			if !ok {
				p.addf(pp+".windows", "must be an array, got %s", describe(wv))
			} else {
				plan.Windows = make([]Window, len(arr))
				for i, w := range arr {
					p.window(fmt.Sprintf("%s.windows[%d]", pp, i), w, &plan.Windows[i])
				}
			}
		}
		out[name] = plan
	}
	return out
}

func (p *parser) window(path string, v any, w *Window) {
	m, ok := p.object(path, v, "limit", "period")
	if !ok {
		p.bad[path+".limit"], p.bad[path+".period"] = true, true
		return
	}
	if x, ok := m["limit"]; ok {
		w.Limit, _ = p.integer(path+".limit", x)
	} else {
		p.addf(path+".limit", "required: an integer from 1 to %d", int64(maxLimit))
	}
	if x, ok := m["period"]; ok {
		w.Period, _ = p.str(path+".period", x)
	} else {
		p.addf(path+".period", "required: one of second, minute, hour, day")
	}
}

func (p *parser) backend(path string, v any, b *Backend) {
	m, ok := p.object(path, v, "type", "addr", "timeout_ms", "on_error", "max_keys", "prefix")
	if !ok {
		return
	}
	if x, ok := m["type"]; ok {
		b.Type, _ = p.str(path+".type", x)
	}
	if x, ok := m["addr"]; ok {
		b.Addr, _ = p.str(path+".addr", x)
	}
	if x, ok := m["on_error"]; ok {
		b.OnError, _ = p.str(path+".on_error", x)
	}
	if x, ok := m["prefix"]; ok {
		b.Prefix, _ = p.str(path+".prefix", x)
	}
	if x, ok := m["timeout_ms"]; ok {
		if ms, ok := p.integer(path+".timeout_ms", x); ok {
			if ms < 1 || ms > maxTimeoutMS {
				p.addf(path+".timeout_ms", "must be between 1 and %d, got %d", maxTimeoutMS, ms)
			} else {
				b.Timeout = time.Duration(ms) * time.Millisecond
			}
		}
	}
	if x, ok := m["max_keys"]; ok {
		if n, ok := p.integer(path+".max_keys", x); ok {
			if n < 1 || n > maxMaxKeys {
				p.addf(path+".max_keys", "must be between 1 and %d, got %d", maxMaxKeys, n)
			} else {
				b.MaxKeys = int(n)
			}
		}
	}
}

// validate checks values and cross references; problems at paths in bad
// were already reported by the parser.
func validate(cfg *Config, bad map[string]bool) []string {
	var probs []string
	add := func(path, format string, args ...any) {
		if !bad[path] {
			probs = append(probs, path+": "+fmt.Sprintf(format, args...))
		}
	}
	checkPlans := func(path string, plans map[string]Plan) {
		for _, name := range sortedKeys(plans) {
			pp := field(path, name)
			if name == "" {
				add(pp, "name must not be empty")
			}
			ws := plans[name].Windows
			if len(ws) == 0 {
				add(pp+".windows", "must list at least one window")
			}
			seen := map[string]int{}
			for i, w := range ws {
				wp := fmt.Sprintf("%s.windows[%d]", pp, i)
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
	checkPlans("limits.plans", cfg.Plans)
	checkPlans("limits.routes", cfg.Routes)

	planRef := func(path, plan string) {
		if _, ok := cfg.Plans[plan]; !ok {
			add(path, "%q names no plan in limits.plans", plan)
		}
	}
	if cfg.DefaultPlan != "" {
		planRef("limits.default_plan", cfg.DefaultPlan)
	}
	for _, section := range []struct {
		path string
		m    map[string]string
	}{{"limits.tenants", cfg.Tenants}, {"limits.keys", cfg.Keys}} {
		for _, k := range sortedKeys(section.m) {
			fp := field(section.path, k)
			if k == "" {
				add(fp, "name must not be empty")
			}
			planRef(fp, section.m[k])
		}
	}
	switch cfg.Headers {
	case "", HeadersXRateLimit, HeadersIETF:
	default:
		add("limits.headers", "%q is not one of x-ratelimit, ietf", cfg.Headers)
	}

	b := cfg.Backend
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
	return probs
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
	if probs := validate(cfg, nil); len(probs) > 0 {
		sort.Strings(probs)
		return nil, &ConfigError{Problems: probs}
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
