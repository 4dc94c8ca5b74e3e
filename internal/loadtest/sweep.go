package loadtest

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// DefaultSweepKeys are the key counts --sweep keys measures.
var DefaultSweepKeys = []int{10, 1000, 100000, 1000000}

// SweepPoint is extauthz at one policy size.
type SweepPoint struct {
	Scale     Scale
	DataBytes int64 // size of the generated data.json
	Server    ServerResult
}

// SweepReport is one Sweep.
type SweepReport struct {
	Mix, MixDesc      string
	Requests, Warmup  int
	Conns             int
	ExtauthzArgs      []string
	Machine           Machine
	ClockTicks        int
	ClockTicksAssumed bool
	Noop              ServerResult // the floor, measured once
	Points            []SweepPoint
}

// Problems lists errors, unexpected decisions and truncated levels.
func (r *SweepReport) Problems() []string {
	servers := []ServerResult{r.Noop}
	for _, p := range r.Points {
		servers = append(servers, p.Server)
	}
	return problems(servers)
}

// Sweep measures extauthz over growing numbers of API keys (base fixes
// tenants and routes; base.Keys is ignored). For each size it writes a
// scaled policy under workDir (removed afterwards), starts a fresh extauthz
// on it, warms up and drives cfg's levels. The no-op server is measured once
// at the start as the floor. cfg.PolicyDir is ignored. If cfg.Requests is
// zero it defaults to 20000 per level here.
func Sweep(ctx context.Context, cfg Config, keys []int, base Scale, workDir string) (*SweepReport, error) {
	if cfg.Requests <= 0 {
		cfg.Requests = 20000
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = 5 * time.Minute // a million keys take a while to load
	}
	cfg.defaults()
	cfg.PolicyDir = ""
	mix, err := cfg.check()
	if err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		keys = DefaultSweepKeys
	}
	hz, assumed := ClockTicks()
	r := &SweepReport{Mix: mix.Name, MixDesc: mix.Describe(), Requests: cfg.Requests, Warmup: cfg.Warmup, Conns: cfg.Conns,
		ExtauthzArgs: cfg.ExtauthzArgs, Machine: ReadMachine(), ClockTicks: hz, ClockTicksAssumed: assumed}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var seq uint64

	noop, err := StartNoop(ctx, cfg.NoopBin, cfg.ReadyTimeout)
	if err != nil {
		return nil, err
	}
	noT, err := newTarget(noop, cfg.Conns, false)
	if err != nil {
		return nil, err
	}
	err = func() error {
		defer noT.close()
		if err := warm(ctx, &cfg, mix, noT, &seq); err != nil {
			return err
		}
		return runLevels(ctx, &cfg, mix, hz, []*target{noT}, &seq)
	}()
	if err != nil {
		return nil, err
	}
	r.Noop = noT.res

	for _, n := range keys {
		sc := base
		sc.Keys = n
		p, err := sweepPoint(ctx, &cfg, mix, hz, sc, workDir, &seq)
		if err != nil {
			return r, fmt.Errorf("keys=%d: %w", n, err)
		}
		r.Points = append(r.Points, *p)
	}
	return r, nil
}

func sweepPoint(ctx context.Context, cfg *Config, mix *Mix, hz int, sc Scale, workDir string, seq *uint64) (*SweepPoint, error) {
	dir, err := os.MkdirTemp(workDir, "extauthz-scale-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	t0 := time.Now()
	if err := WriteScaledPolicy(dir, sc.Keys, sc.Tenants, sc.Routes); err != nil {
		return nil, err
	}
	st, err := os.Stat(filepath.Join(dir, "data.json"))
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(cfg.Log, "scale keys=%d tenants=%d routes=%d: data.json %s written in %s\n",
		sc.Keys, sc.Tenants, sc.Routes, mib(st.Size()), time.Since(t0).Round(time.Millisecond))
	ex, err := StartExtauthz(ctx, cfg.ExtauthzBin, dir, cfg.ReadyTimeout, cfg.ExtauthzArgs...)
	if err != nil {
		return nil, err
	}
	t, err := newTarget(ex, cfg.Conns, true)
	if err != nil {
		return nil, err
	}
	defer t.close()
	if err := warm(ctx, cfg, mix, t, seq); err != nil {
		return nil, err
	}
	if err := runLevels(ctx, cfg, mix, hz, []*target{t}, seq); err != nil {
		return nil, err
	}
	return &SweepPoint{Scale: sc, DataBytes: st.Size(), Server: t.res}, nil
}

// Markdown writes the sweep as Markdown.
func (r *SweepReport) Markdown(w io.Writer) {
	fmt.Fprintf(w, "### key-count sweep, mix `%s`: %d checks per size and level, %d warm-up, %d client connections\n\n", r.Mix, r.Requests, r.Warmup, r.Conns)
	if len(r.Points) > 0 {
		sc := r.Points[0].Scale
		fmt.Fprintf(w, "Synthetic tenants: %d, synthetic routes: %d (besides the demo ones). Mix: %s.\n", sc.Tenants, sc.Routes, r.MixDesc)
	}
	fmt.Fprintln(w, extauthzFlags(r.ExtauthzArgs))
	r.Machine.markdown(w, r.ClockTicks, r.ClockTicksAssumed)
	fmt.Fprint(w, "\n")
	fmt.Fprintln(w, "| keys | data.json | start to ready | idle RSS | peak RSS | c | checks/s | p50 | p99 | server CPU/check | CPU/check vs no-op | errors | unexpected |")
	fmt.Fprintln(w, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	floor := map[int]time.Duration{}
	for _, l := range r.Noop.Levels {
		floor[l.Concurrency] = l.CPUPerCheck
		fmt.Fprintf(w, "| no-op | – | %s | %s | %s | %d | %s | %s | %s | %s | 1.00× | %d | n/a |\n", r.Noop.Ready.Round(time.Millisecond),
			mib(r.Noop.IdleRSS), mib(r.Noop.PeakRSS), l.Concurrency, fmtRate(l.Throughput()), fmtDur(l.Latency.P50), fmtDur(l.Latency.P99),
			fmtCPU(l.CPUPerCheck), l.Errors)
	}
	for _, p := range r.Points {
		for _, l := range p.Server.Levels {
			fmt.Fprintf(w, "| %d | %s | %s | %s | %s | %d | %s | %s | %s | %s | %s | %d | %s |\n", p.Scale.Keys, mib(p.DataBytes),
				p.Server.Ready.Round(time.Millisecond), mib(p.Server.IdleRSS), mib(p.Server.PeakRSS), l.Concurrency,
				fmtRate(l.Throughput()), fmtDur(l.Latency.P50), fmtDur(l.Latency.P99), fmtCPU(l.CPUPerCheck),
				ratio(float64(l.CPUPerCheck), float64(floor[l.Concurrency])), l.Errors, decisions(l))
		}
	}
	fmt.Fprintf(w, "\nPeak RSS includes loading the policy (data.json is decoded whole). %s\n", cpuNote)
	if p := r.Problems(); len(p) > 0 {
		fmt.Fprintf(w, "\n**Problems:**\n\n- %s\n", strings.Join(p, "\n- "))
	}
}
