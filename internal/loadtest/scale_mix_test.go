package loadtest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/check"
	"github.com/extauthz/extauthz/internal/clientip"
	"github.com/extauthz/extauthz/internal/engine"
	"github.com/extauthz/extauthz/internal/source"
)

// scaleMixCase is what one scale_allow case must send.
type scaleMixCase struct {
	key, tenant, source, path string
}

func (w scaleMixCase) check(t *testing.T, sc Scale, j int, c Case) {
	t.Helper()
	h := c.Request().GetAttributes().GetRequest().GetHttp().GetHeaders()
	src := c.Request().GetAttributes().GetSource().GetAddress().GetSocketAddress().GetAddress()
	if h["x-api-key"] != w.key || h["x-tenant-id"] != w.tenant || src != w.source || h[":path"] != w.path || c.Path != w.path ||
		h[":method"] != "GET" || c.Want != 200 {
		t.Errorf("%+v case %d (%s): key %s tenant %s source %s %s %s want %d; want %+v",
			sc, j, c.Name, h["x-api-key"], h["x-tenant-id"], src, h[":method"], h[":path"], c.Want, w)
	}
}

func TestScaleMix(t *testing.T) {
	demo := scaleMixCase{DemoAPIKey, "42", "127.0.0.1", "/v1/orders/17"}
	nDemo := demoKeyCount()
	if nDemo < 7 {
		t.Fatalf("%d demo keys", nDemo)
	}
	cases := []struct {
		sc   Scale
		want map[int]scaleMixCase // by case index; cases not listed are not checked
	}{
		// No synthetic keys: the demo key, also when there are synthetic
		// routes (it lacks their scope).
		{Scale{}, map[int]scaleMixCase{0: demo, 15: demo}},
		{Scale{Keys: nDemo, Tenants: 100, Routes: 10}, map[int]scaleMixCase{0: demo, 7: demo}},
		// Two synthetic keys on tenant 42, routes 0..9.
		{Scale{Keys: nDemo + 2, Routes: 10}, map[int]scaleMixCase{
			0:  {SyntheticKey(0), "42", "127.0.0.1", "/v1/svc0/items/1"},
			7:  {SyntheticKey(0), "42", "127.0.0.1", "/v1/svc4/items/1"},
			8:  {SyntheticKey(1), "42", "127.0.0.1", "/v1/svc5/items/1"},
			15: {SyntheticKey(1), "42", "127.0.0.1", "/v1/svc9/items/1"},
		}},
		// 42 synthetic keys over 5 tenants, no synthetic routes.
		{Scale{Keys: nDemo + 42, Tenants: 5}, map[int]scaleMixCase{
			0:  {SyntheticKey(0), "1000", "10.0.0.7", "/v1/orders/17"},
			3:  {SyntheticKey(7), "1002", "10.0.2.7", "/v1/orders/17"},
			15: {SyntheticKey(39), "1004", "10.0.4.7", "/v1/orders/17"},
		}},
		// The full scale: a million synthetic keys, 10k tenants, 1k routes.
		{Scale{Keys: nDemo + 1_000_000, Tenants: 10_000, Routes: 1000}, map[int]scaleMixCase{
			0:  {SyntheticKey(0), "1000", "10.0.0.7", "/v1/svc0/items/1"},
			1:  {SyntheticKey(62_500), "3500", "10.9.196.7", "/v1/svc62/items/1"},
			15: {SyntheticKey(937_500), "8500", "10.29.76.7", "/v1/svc937/items/1"},
		}},
	}
	for _, c := range cases {
		m, err := NewScaledMix(ScaleMix, "", c.sc)
		if err != nil {
			t.Fatal(err)
		}
		if len(m.Cases) != 16 || len(m.Schedule) != 16 {
			t.Fatalf("%+v: %d cases, schedule %v", c.sc, len(m.Cases), m.Schedule)
		}
		seen := map[int]bool{}
		for _, i := range m.Schedule {
			seen[i] = true
		}
		if len(seen) != 16 {
			t.Errorf("%+v: schedule %v does not use every case once", c.sc, m.Schedule)
		}
		for j, w := range c.want {
			w.check(t, c.sc, j, m.Cases[j])
		}
		if !strings.HasPrefix(m.Describe(), "scale_allow GET→200 100%") {
			t.Errorf("Describe: %s", m.Describe())
		}
	}
	// Fresh addresses never repeat within a tenant, nor across tenants.
	if a, b, c := SyntheticTenantAddr6(3, 1), SyntheticTenantAddr6(3, 1<<16), SyntheticTenantAddr6(4, 1); a == b || a == c {
		t.Errorf("fresh addresses repeat: %s %s %s", a, b, c)
	}
	// Keys of distinct tenants are spread over the whole key set.
	m, _ := NewScaledMix(ScaleMix, "", Scale{Keys: nDemo + 1600, Tenants: 1600})
	tenants := map[string]bool{}
	for _, c := range m.Cases {
		tenants[c.Headers["x-tenant-id"]] = true
	}
	if len(tenants) != 16 {
		t.Errorf("16 cases over 1600 keys and tenants use %d tenants", len(tenants))
	}
}

func TestCaseSource(t *testing.T) {
	r := Case{Method: "GET", Path: "/"}.Request().GetAttributes()
	if a := r.GetSource().GetAddress().GetSocketAddress().GetAddress(); a != "127.0.0.1" {
		t.Errorf("default source %s", a)
	}
	if xff := r.GetRequest().GetHttp().GetHeaders()["x-forwarded-for"]; xff != "203.0.113.9" {
		t.Errorf("default x-forwarded-for %s", xff)
	}
	r = Case{Method: "GET", Path: "/", Source: "10.1.2.7"}.Request().GetAttributes()
	h := r.GetRequest().GetHttp().GetHeaders()
	if a := r.GetSource().GetAddress().GetSocketAddress().GetAddress(); a != "10.1.2.7" || h["x-forwarded-for"] != "10.1.2.7" || h["x-envoy-external-address"] != "10.1.2.7" {
		t.Errorf("source %s, x-forwarded-for %s, x-envoy-external-address %s", a, h["x-forwarded-for"], h["x-envoy-external-address"])
	}
	if a := r.GetDestination().GetAddress().GetSocketAddress().GetAddress(); a != "127.0.0.1" {
		t.Errorf("destination %s", a)
	}
}

// TestScaleMixAllowed evaluates every scale_allow case in process against
// the policy WriteScaledPolicy writes for its scale, with the client address
// resolved as with and without trusted proxy hops: all must be allowed.
// Deny checks show the allowlist and the scopes are really in play.
func TestScaleMixAllowed(t *testing.T) {
	for _, sc := range []Scale{{}, {Keys: 10}, {Keys: 5, Routes: 3}, {Keys: 50, Tenants: 5, Routes: 3}, {Keys: 30, Tenants: 300, Routes: 1}, {Keys: 20, Routes: 40}} {
		dir := t.TempDir()
		if err := WriteScaledPolicy(dir, sc.Keys, sc.Tenants, sc.Routes); err != nil {
			t.Fatal(err)
		}
		eng, err := source.Engine(context.Background(), dir, engine.Options{})
		if err != nil {
			t.Fatal(err)
		}
		var h engine.Holder
		h.Store(eng)
		m, err := NewScaledMix(ScaleMix, "", sc)
		if err != nil {
			t.Fatal(err)
		}
		for _, hops := range []int{0, 1} {
			s := check.NewServer(&h, clientip.Resolver{TrustedHops: hops})
			s.Timeout = 5 * time.Second
			s.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
			decide := func(c Case) (int, string) {
				resp, err := s.Check(context.Background(), c.Request())
				if err != nil {
					t.Fatalf("%+v %s: %v", sc, c.Name, err)
				}
				return Decision(resp), fmt.Sprint(resp.GetDeniedResponse().GetBody(), resp.GetStatus().GetMessage())
			}
			for _, c := range m.Cases {
				if got, why := decide(c); got != c.Want {
					t.Errorf("%+v hops=%d %s: got %d (%s), want %d", sc, hops, c.Name, got, why, c.Want)
				}
				if c.FreshSource != nil {
					// Every fresh address is in the tenant's allowlist, and
					// one in no tenant's /64 is refused.
					for _, seq := range []uint64{0, 1, 65537, 1<<40 + 7} {
						fresh := c
						fresh.Source = c.FreshSource(seq)
						if got, why := decide(fresh); got != 200 {
							t.Errorf("%+v hops=%d %s from fresh address %s: got %d (%s), want 200", sc, hops, c.Name, fresh.Source, got, why)
						}
					}
					out := c
					out.Source = SyntheticTenantAddr6(0xffff, 1)
					if got, _ := decide(out); got != 403 {
						t.Errorf("%+v hops=%d %s from %s: got %d, want 403", sc, hops, c.Name, out.Source, got)
					}
				}
				if c.Source != "" {
					out := c
					out.Source = "192.0.2.1"
					if got, _ := decide(out); got != 403 {
						t.Errorf("%+v hops=%d %s from outside the allowlist: got %d, want 403", sc, hops, c.Name, got)
					}
				}
				if strings.HasPrefix(c.Path, "/v1/svc") {
					other := c
					other.Headers = map[string]string{"x-api-key": ReadonlyAPIKey, "x-tenant-id": "42"}
					other.Source = ""
					if got, _ := decide(other); got != 403 {
						t.Errorf("%+v hops=%d %s with a key lacking items:read: got %d, want 403", sc, hops, c.Name, got)
					}
				}
			}
		}
		eng.Close()
	}
}

func TestDims(t *testing.T) {
	for _, d := range Dims() {
		got, err := ParseDim(string(d))
		if err != nil || got != d {
			t.Errorf("ParseDim(%s) = %s, %v", d, got, err)
		}
		s := d.With(Scale{Keys: 1, Tenants: 2, Routes: 3}, 99)
		if d.Of(s) != 99 || s.Keys+s.Tenants+s.Routes != 99+6-d.Of(Scale{Keys: 1, Tenants: 2, Routes: 3}) {
			t.Errorf("%s.With: %+v", d, s)
		}
		if len(DefaultSweepSizes[d]) == 0 {
			t.Errorf("no default sizes for %s", d)
		}
	}
	if _, err := ParseDim("users"); err == nil {
		t.Error("ParseDim(users): no error")
	}
	if DimKeys.Noun() != "key" || DimTenants.Noun() != "tenant" || DimRoutes.Noun() != "route" {
		t.Error("Noun")
	}
}

// TestSweepMarkdown checks that the report names the swept dimension.
func TestSweepMarkdown(t *testing.T) {
	lv := []Level{{Concurrency: 4, Outcome: Outcome{Sent: 10, Elapsed: time.Second}, DecisionsChecked: true}}
	r := &SweepReport{Dim: DimRoutes, Base: Scale{Keys: 10000, Tenants: 7}, Mix: ScaleMix, MixDesc: "d", Requests: 10, Warmup: 1, Conns: 1,
		Noop: ServerResult{Name: "no-op", Levels: lv},
		Points: []SweepPoint{
			{Scale: Scale{Keys: 10000, Tenants: 7, Routes: 10}, Server: ServerResult{Name: "extauthz", Levels: lv}},
			{Scale: Scale{Keys: 10000, Tenants: 7, Routes: 1000}, Server: ServerResult{Name: "extauthz", Levels: lv}},
		}}
	var b strings.Builder
	r.Markdown(&b)
	md := b.String()
	for _, s := range []string{"### route-count sweep, mix `scale_allow`", "Swept: routes. Fixed: 10000 API keys in total (demo keys included), 7 synthetic tenants (besides the demo ones).",
		"| routes | data.json |", "\n| 10 | ", "\n| 1000 | "} {
		if !strings.Contains(md, s) {
			t.Errorf("report lacks %q:\n%s", s, md)
		}
	}
	if strings.Contains(md, "key-count") || strings.Contains(md, "| keys |") {
		t.Errorf("report names keys:\n%s", md)
	}
}
