package loadtest

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/engine"
	"github.com/extauthz/extauthz/internal/source"
)

var moduleRoot, moduleRootErr = ModuleRoot()

// The servers, built once per test binary (see buildBinaries).
var (
	binOnce        sync.Once
	binDir         string
	binEx, binNoop string
	binErr         error
)

// buildBinaries builds both servers, once per test binary, into a temporary
// directory that TestMain removes.
func buildBinaries(t *testing.T) (string, string) {
	t.Helper()
	if moduleRootErr != nil {
		t.Fatal(moduleRootErr)
	}
	binOnce.Do(func() {
		if binDir, binErr = os.MkdirTemp("", "extauthz-loadtest-bin-"); binErr != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		binEx, binNoop, binErr = Build(ctx, moduleRoot, binDir)
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binEx, binNoop
}

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// noneRunning fails t at cleanup if a process still runs one of bins.
func noneRunning(t *testing.T, bins ...string) {
	t.Cleanup(func() {
		for _, bin := range bins {
			if pids := running(bin); len(pids) > 0 {
				t.Errorf("%s still running: pids %v", bin, pids)
			}
		}
	})
}

// running lists the pids of processes executing bin.
func running(bin string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe")); err == nil && exe == bin {
			pids = append(pids, pid)
		}
	}
	return pids
}

func smokeConfig(t *testing.T, ex, noop string) Config {
	jwt, err := ReadJWT(filepath.Join(moduleRoot, "testdata", "demo.jwt"))
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("progress:\n%s", log.String())
		}
	})
	return Config{ExtauthzBin: ex, NoopBin: noop, Mix: "blend", JWT: jwt, Log: &syncWriter{w: &log}}
}

// TestSmoke runs the --smoke mode end to end: both servers as child
// processes, ~300 blended checks each at concurrency 4, no gRPC errors and
// every extauthz decision as expected; then the same against a scaled
// policy; and checks that the decision check itself catches a wrong answer.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs both servers")
	}
	ex, noop := buildBinaries(t)
	noneRunning(t, ex, noop)

	t.Run("demo policy", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
		defer cancel()
		r, err := Smoke(ctx, smokeConfig(t, ex, noop))
		if r != nil {
			var md strings.Builder
			r.Markdown(&md)
			t.Logf("\n%s", md.String())
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Servers) != 2 || r.Servers[0].Name != "extauthz" || r.Servers[1].Name != "no-op" {
			t.Fatalf("servers %+v", r.Servers)
		}
		for _, s := range r.Servers {
			if len(s.Levels) != 1 || s.Levels[0].Sent != 300 || s.Levels[0].Concurrency != 4 {
				t.Errorf("%s: levels %+v", s.Name, s.Levels)
			}
			if s.IdleRSS <= 0 || s.PeakRSS < s.IdleRSS {
				t.Errorf("%s: idle RSS %d, peak %d", s.Name, s.IdleRSS, s.PeakRSS)
			}
		}
		if !r.Servers[0].Levels[0].DecisionsChecked {
			t.Error("extauthz decisions were not checked")
		}
		for _, bin := range []string{ex, noop} {
			if pids := running(bin); len(pids) > 0 {
				t.Errorf("after Smoke, %s still running: pids %v", bin, pids)
			}
		}
	})

	// A variant extauthz driven in the same rounds, every reply decoded
	// whole: the full metadata makes each allow's reply larger, and the
	// no-op's empty OK is the smallest.
	t.Run("variant and full decoding", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
		defer cancel()
		cfg := smokeConfig(t, ex, noop)
		cfg.Mix, cfg.Requests = "apikey_allow", 100
		cfg.VariantArgs, cfg.DecodeFull = []string{"--reply-metadata=full"}, true
		r, err := Smoke(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Servers) != 3 || r.Servers[1].Name != "extauthz --reply-metadata=full" || r.Servers[2].Name != "no-op" {
			t.Fatalf("servers %+v", r.Servers)
		}
		minimal, full, floor := r.Servers[0].Levels[0], r.Servers[1].Levels[0], r.Servers[2].Levels[0]
		if !(floor.ReplyBytesPerCheck > 0 && floor.ReplyBytesPerCheck < minimal.ReplyBytesPerCheck && minimal.ReplyBytesPerCheck < full.ReplyBytesPerCheck) {
			t.Errorf("reply bytes per check: no-op %.0f, minimal %.0f, full %.0f", floor.ReplyBytesPerCheck, minimal.ReplyBytesPerCheck, full.ReplyBytesPerCheck)
		}
		if minimal.Sent != 100 || full.Sent != 100 || !full.DecisionsChecked {
			t.Errorf("levels %+v / %+v", minimal, full)
		}
		var md strings.Builder
		r.Markdown(&md)
		if !strings.Contains(md.String(), "CPU/check extauthz --reply-metadata=full/no-op") || !strings.Contains(md.String(), "decodes every reply whole") {
			t.Errorf("report:\n%s", md.String())
		}
	})

	t.Run("rounds", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
		defer cancel()
		cfg := smokeConfig(t, ex, noop)
		cfg.Requests, cfg.Rounds = 100, 2
		r, err := Smoke(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range r.Servers {
			if len(s.Levels) != 1 || s.Levels[0].Sent != 200 {
				t.Errorf("%s: levels %+v, want one level of 2 × 100 checks", s.Name, s.Levels)
			}
		}
		var md strings.Builder
		r.Markdown(&md)
		if !strings.Contains(md.String(), "200 checks per server and level (2 rounds of 100") {
			t.Errorf("report:\n%s", md.String())
		}
	})

	t.Run("a new client address per request", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
		defer cancel()
		cfg := smokeConfig(t, ex, noop)
		cfg.Mix, cfg.Requests = ManyIPsMix, 200
		if _, err := Smoke(ctx, cfg); err != nil { // every one of them allowed
			t.Fatal(err)
		}
	})

	t.Run("scaled policy", func(t *testing.T) {
		dir := t.TempDir()
		if err := WriteScaledPolicy(dir, 2000, 100, 50); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
		defer cancel()
		cfg := smokeConfig(t, ex, noop)
		cfg.PolicyDir = dir
		cfg.Requests = 200
		if _, err := Smoke(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("wrong expectations are caught", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := StartExtauthz(ctx, ex, "", 20*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Stop()
		p, err := Dial(c.GRPCAddr, 1)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		m, err := NewMix("blend", smokeConfig(t, ex, noop).JWT)
		if err != nil {
			t.Fatal(err)
		}
		for i := range m.Cases {
			m.Cases[i].Want = 299 // no server answers this
		}
		o := Drive{Mix: m, Concurrency: 2, Requests: 100, MaxDuration: 20 * time.Second, CheckDecisions: true}.Run(ctx, p)
		if o.Errors != 0 || o.Sent != 100 || o.Unexpected != 100 || len(o.UnexpectedSamples) == 0 {
			t.Fatalf("outcome %+v", o)
		}
		t.Logf("e.g. %s", o.UnexpectedSamples[0])
	})
}

// TestCompare runs --compare end to end in smoke size: two mixes against the
// same two processes, two rounds, every extauthz decision as expected. It
// asserts nothing about timing.
func TestCompare(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs both servers")
	}
	ex, noop := buildBinaries(t)
	noneRunning(t, ex, noop)
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	cfg := smokeConfig(t, ex, noop)
	cfg.Requests, cfg.Warmup, cfg.Concurrency = 100, 20, []int{4}
	r, err := Compare(ctx, cfg, []string{"apikey_allow", "deny_tenant"}, 2)
	if err != nil {
		t.Fatal(err)
	}
	var md strings.Builder
	r.Markdown(&md)
	t.Logf("\n%s", md.String())
	if p := r.Problems(); len(p) > 0 {
		t.Fatal(p)
	}
	if len(r.Rows) != 2 || r.Rows[0].Mix != "apikey_allow" || r.Rows[1].Mix != "deny_tenant" {
		t.Fatalf("rows %+v", r.Rows)
	}
	for _, row := range r.Rows {
		ex, noop := row.Servers[0], row.Servers[1]
		// Two rounds of 100 checks each, summed.
		if ex.Sent != 200 || noop.Sent != 200 || !ex.DecisionsChecked || noop.DecisionsChecked {
			t.Errorf("%s: extauthz %+v, no-op %+v", row.Mix, ex, noop)
		}
	}
	if !strings.Contains(md.String(), "| 4 | deny_tenant |") {
		t.Errorf("report lacks the deny_tenant row:\n%s", md.String())
	}
	if _, err := Compare(ctx, cfg, []string{"apikey_allow"}, 1); err == nil {
		t.Error("one mix compared with nothing: no error")
	}
}

// TestScaleAllow drives mix scale_allow end to end against extauthz on a
// small scaled policy, once through Smoke and once as a tenants sweep: every
// check must be answered and allowed. It asserts nothing about timing.
func TestScaleAllow(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs both servers")
	}
	ex, noop := buildBinaries(t)
	noneRunning(t, ex, noop)
	sc := Scale{Keys: 50, Tenants: 5, Routes: 3}

	t.Run("smoke", func(t *testing.T) {
		dir := t.TempDir()
		if err := WriteScaledPolicy(dir, sc.Keys, sc.Tenants, sc.Routes); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
		defer cancel()
		cfg := smokeConfig(t, ex, noop)
		cfg.Mix, cfg.Scale, cfg.PolicyDir, cfg.Requests = ScaleMix, sc, dir, 400
		r, err := Smoke(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		l := r.Servers[0].Levels[0]
		if r.Servers[0].Name != "extauthz" || l.Sent != 400 || !l.DecisionsChecked || l.Errors != 0 || l.Unexpected != 0 {
			t.Fatalf("extauthz: %+v", l)
		}
	})

	t.Run("tenants sweep", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cfg := smokeConfig(t, ex, noop)
		cfg.Mix = "" // the sweep default
		cfg.Requests, cfg.Warmup, cfg.Concurrency, cfg.MaxDuration = 200, 50, []int{4}, 30*time.Second
		r, err := Sweep(ctx, cfg, DimTenants, []int{1, sc.Tenants}, Scale{Keys: sc.Keys, Routes: sc.Routes}, t.TempDir(), 2)
		var md strings.Builder
		if r != nil {
			r.Markdown(&md)
			t.Logf("\n%s", md.String())
		}
		if err != nil {
			t.Fatal(err)
		}
		if p := r.Problems(); len(p) > 0 {
			t.Fatalf("problems: %v", p)
		}
		if r.Mix != ScaleMix || len(r.Points) != 2 {
			t.Fatalf("mix %s, %d points", r.Mix, len(r.Points))
		}
		for i, want := range []Scale{{Keys: 50, Tenants: 1, Routes: 3}, sc} {
			p := r.Points[i]
			// Two rounds of 200 checks, summed.
			if p.Scale != want || len(p.Server.Levels) != 1 || p.Server.Levels[0].Sent != 400 || !p.Server.Levels[0].DecisionsChecked {
				t.Errorf("point %d: scale %+v, levels %+v", i, p.Scale, p.Server.Levels)
			}
		}
		if l := r.Noop.Levels; len(l) != 1 || l[0].Sent != 400 {
			t.Errorf("no-op levels %+v", l)
		}
		for _, s := range []string{"### tenant-count sweep, mix `scale_allow`", "2 rounds interleaved", "| tenants | data.json |", "| 5 | "} {
			if !strings.Contains(md.String(), s) {
				t.Errorf("report lacks %q", s)
			}
		}
	})
}

// TestScaledPolicy writes a scaled policy and loads it the way extauthz
// does: every key, tenant and route is accepted.
func TestScaledPolicy(t *testing.T) {
	dir := t.TempDir()
	const keys, tenants, routes = 500, 50, 20
	if err := WriteScaledPolicy(dir, keys, tenants, routes); err != nil {
		t.Fatal(err)
	}
	eng, err := source.Engine(context.Background(), dir, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	demo, err := source.Engine(context.Background(), "", engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer demo.Close()
	if eng.Keys.Len() != keys {
		t.Errorf("keys: %d, want %d", eng.Keys.Len(), keys)
	}
	if eng.Routes.Len() != demo.Routes.Len()+routes {
		t.Errorf("routes: %d, want %d", eng.Routes.Len(), demo.Routes.Len()+routes)
	}
	// Fewer keys than the demo set keeps the demo set.
	small := t.TempDir()
	if err := WriteScaledPolicy(small, 1, 0, 0); err != nil {
		t.Fatal(err)
	}
	e, err := source.Engine(context.Background(), small, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if e.Keys.Len() != demo.Keys.Len() {
		t.Errorf("keys=1: %d keys, want the %d demo keys", e.Keys.Len(), demo.Keys.Len())
	}
}

type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
