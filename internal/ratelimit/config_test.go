package ratelimit

import (
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustParse(t testing.TB, js string) *Config {
	t.Helper()
	cfg, err := ParseConfig(json.RawMessage(js))
	if err != nil {
		t.Fatalf("ParseConfig: %v", err)
	}
	return cfg
}

func TestParseConfigSample(t *testing.T) {
	cfg := mustParse(t, string(readTestdata(t, "limits.json")))
	want := &Config{
		Plans: map[string]Plan{
			"free":         {Windows: []Window{{10, "minute"}, {100, "hour"}}},
			"starter":      {Windows: []Window{{100, "minute"}, {5000, "hour"}}},
			"professional": {Windows: []Window{{500, "minute"}, {25000, "hour"}}},
		},
		DefaultPlan: "free",
		Tenants:     map[string]string{"42": "starter"},
		Keys:        map[string]string{"demo-orders": "professional"},
		Routes:      map[string]Plan{"orders-write": {Windows: []Window{{5, "second"}}}},
		Headers:     HeadersXRateLimit,
		Backend:     Backend{Type: BackendLocal, Timeout: DefaultTimeout, MaxKeys: 100000},
	}
	if d := cmp.Diff(want, cfg, cmpopts.IgnoreUnexported(Config{})); d != "" {
		t.Fatalf("config (-want +got):\n%s", d)
	}
}

func TestParseConfigDefaults(t *testing.T) {
	for _, raw := range []string{"", "null", " {} "} {
		cfg, err := ParseConfig(json.RawMessage(raw))
		if err != nil {
			t.Fatalf("%q: %v", raw, err)
		}
		want := &Config{Headers: HeadersXRateLimit, Backend: Backend{Type: BackendLocal, Timeout: DefaultTimeout, MaxKeys: DefaultMaxKeys}}
		if d := cmp.Diff(want, cfg, cmpopts.IgnoreUnexported(Config{})); d != "" {
			t.Fatalf("%q (-want +got):\n%s", raw, d)
		}
	}
	cfg := mustParse(t, `{"backend": {"type": "redis", "addr": "127.0.0.1:6379"}}`)
	want := Backend{Type: BackendRedis, Addr: "127.0.0.1:6379", Timeout: 50 * time.Millisecond, OnError: OnErrorDeny, MaxKeys: DefaultMaxKeys, Prefix: DefaultPrefix}
	if cfg.Backend != want {
		t.Fatalf("redis defaults = %+v, want %+v", cfg.Backend, want)
	}
}

// TestParseConfigErrors checks that every problem is reported, each naming
// its field (testdata/invalid.json -> testdata/invalid.golden).
func TestParseConfigErrors(t *testing.T) {
	_, err := ParseConfig(readTestdata(t, "invalid.json"))
	var ce *ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("err = %v, want *ConfigError", err)
	}
	got := strings.Join(ce.Problems, "\n") + "\n"
	want := string(readTestdata(t, "invalid.golden"))
	if got != want {
		t.Fatalf("problems (-want +got):\n%s", cmp.Diff(want, got))
	}
}

func TestParseConfigErrorCases(t *testing.T) {
	for _, tc := range []struct {
		raw  string
		want string // one of the problems
	}{
		{`{"plans": {"free": {"windows": [{"limit": 10, "period": "fortnight"}]}}}`,
			`limits.plans.free.windows[0].period: "fortnight" is not one of second, minute, hour, day`},
		{`[]`, `limits: must be an object, got an array`},
		{`{"plans": 3}`, `limits.plans: must be an object, got 3`},
		{`{"plans": {"a b": {"windows": [{"limit": 1.5, "period": "day"}]}}}`,
			`limits.plans["a b"].windows[0].limit: must be an integer, got 1.5`},
		{`{"plans": {"p": {"windows": [{"limit": 1, "period": "day", "burst": 2}]}}}`,
			`limits.plans.p.windows[0].burst: unknown field (known: limit, period)`},
		{`{"plans": {"p": {"windows": [{"limit": 1, "period": "day"}]}}, "default_plan": "q"}`,
			`limits.default_plan: "q" names no plan in limits.plans`},
		{`{"backend": {"type": "redis"}}`, `limits.backend.addr: required with type redis (host:port)`},
		{`{"backend": {"addr": "127.0.0.1:1"}}`, `limits.backend.addr: only valid with type redis`},
		{`{"backend": {"type": "memcached"}}`, `limits.backend.type: "memcached" is not one of local, redis`},
		{`{"backend": {"type": "redis", "addr": "h:1", "timeout_ms": 20000}}`, `limits.backend.timeout_ms: must be between 1 and 10000, got 20000`},
		{`{"headers": "ietf", "x": 1}`, `limits.x: unknown field (known: plans, default_plan, tenants, keys, routes, headers, backend)`},
		{`{"plans": {}} {}`, `limits: invalid JSON: trailing data`},
		{`{"plans": `, `limits: invalid JSON: unexpected EOF`},
		{`{"plans": {"p": {"windows": [{"limit": 1000000000001, "period": "day"}]}}}`,
			`limits.plans.p.windows[0].limit: must be from 1 to 1000000000000, got 1000000000001`},
	} {
		_, err := ParseConfig(json.RawMessage(tc.raw))
		var ce *ConfigError
		if !errors.As(err, &ce) {
			t.Errorf("%s: err = %v, want *ConfigError", tc.raw, err)
			continue
		}
		found := false
		for _, p := range ce.Problems {
			found = found || p == tc.want
		}
		if !found {
			t.Errorf("%s:\n got  %q\n want %q among them", tc.raw, ce.Problems, tc.want)
		}
	}
}

// A Config built in code is validated by New and Reload.
func TestNewValidatesConfig(t *testing.T) {
	bad := &Config{Plans: map[string]Plan{"p": {Windows: []Window{{Limit: 0, Period: "minute"}}}}, DefaultPlan: "nope"}
	if _, err := New(bad, Options{}); err == nil || !strings.Contains(err.Error(), "limits.plans.p.windows[0].limit: must be from 1") ||
		!strings.Contains(err.Error(), `limits.default_plan: "nope" names no plan`) {
		t.Fatalf("New(bad) err = %v", err)
	}
	l, err := New(nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.(Reloader).Reload(bad); err == nil {
		t.Fatal("Reload(bad) succeeded")
	}
	if err := l.(Reloader).Reload(&Config{Backend: Backend{Type: BackendRedis, Addr: "127.0.0.1:1"}}); !errors.Is(err, ErrBackendChanged) {
		t.Fatalf("Reload(redis) err = %v, want ErrBackendChanged", err)
	}
}

// Validate reports every problem of a Config built in code at once.
func TestConfigValidate(t *testing.T) {
	if err := mustParse(t, string(readTestdata(t, "limits.json"))).Validate(); err != nil {
		t.Fatalf("parsed config: %v", err)
	}
	bad := &Config{
		Plans:   map[string]Plan{"free": {Windows: []Window{{10, "minute"}, {5, "minut"}}}},
		Tenants: map[string]string{"7": "gold"},
		Backend: Backend{Type: BackendLocal, Addr: "h:1"},
	}
	var ce *ConfigError
	if err := bad.Validate(); !errors.As(err, &ce) {
		t.Fatalf("Validate = %v, want *ConfigError", err)
	}
	want := []string{
		`limits.backend.addr: only valid with type redis`,
		`limits.plans.free.windows[1].period: "minut" is not one of second, minute, hour, day`,
		`limits.tenants.7: "gold" names no plan in limits.plans`,
	}
	if d := cmp.Diff(want, ce.Problems); d != "" {
		t.Fatalf("problems (-want +got):\n%s", d)
	}
}
