package loadtest

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// DefaultSweepSizes are the sizes Sweep measures in each dimension when it
// is given none.
var DefaultSweepSizes = map[Dim][]int{
	DimKeys:    {10, 1000, 100000, 1000000},
	DimTenants: {1, 100, 10000},
	DimRoutes:  {10, 100, 1000},
}

// SweepBaseKeys is the key count a tenants or routes sweep uses when its base
// has none, so that mix scale_allow has synthetic keys (of synthetic tenants)
// to send.
const SweepBaseKeys = 10000

// SweepPoint is extauthz at one policy size.
type SweepPoint struct {
	Scale     Scale
	DataBytes int64 // size of the generated data.json
	Server    ServerResult
}

// SweepReport is one Sweep.
type SweepReport struct {
	Dim               Dim   // the dimension swept
	Base              Scale // the other dimensions' sizes
	Mix, MixDesc      string
	Requests, Warmup  int // Requests per level and round
	Conns             int
	Rounds            int
	ExtauthzArgs      []string
	Machine           Machine
	ClockTicks        int
	ClockTicksAssumed bool
	Noop              ServerResult // the floor, driven in turn with the sizes
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

// Sweep measures extauthz over growing sizes of one dimension of a scaled
// policy: API keys, tenants (with IP allowlists) or routes. base fixes the
// other two (its size in dim is ignored); a tenants or routes sweep whose
// base has no keys uses SweepBaseKeys. For each size it writes a scaled
// policy under workDir (removed afterwards), starts an extauthz on it and
// warms it up with cfg's mix built for that policy (see NewScaledMix;
// cfg.Mix defaults to scale_allow here). Then, per level and for rounds
// rounds, it drives the no-op server (with the first size's mix) and every
// size in turn, so drifts in machine load spread over all sizes alike; each
// size's figures sum its rounds. cfg.PolicyDir and cfg.Scale are ignored.
// No sizes means DefaultSweepSizes[dim]. If cfg.Requests is zero it defaults
// to 20000 per level and round here.
func Sweep(ctx context.Context, cfg Config, dim Dim, sizes []int, base Scale, workDir string, rounds int) (*SweepReport, error) {
	if _, err := ParseDim(string(dim)); err != nil {
		return nil, fmt.Errorf("sweep: %w", err)
	}
	if len(sizes) == 0 {
		sizes = DefaultSweepSizes[dim]
	}
	if dim != DimKeys && base.Keys == 0 {
		base.Keys = SweepBaseKeys
	}
	base = dim.With(base, 0)
	if cfg.Requests <= 0 {
		cfg.Requests = 20000
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = 5 * time.Minute // a million keys take a while to load
	}
	if cfg.Mix == "" {
		cfg.Mix = ScaleMix
	}
	rounds = max(rounds, 1)
	cfg.defaults()
	cfg.PolicyDir = ""
	cfg.Scale = dim.With(base, sizes[0])
	mix, err := cfg.check()
	if err != nil {
		return nil, err
	}
	hz, assumed := ClockTicks()
	r := &SweepReport{Dim: dim, Base: base, Mix: mix.Name, MixDesc: mix.Describe(), Requests: cfg.Requests, Warmup: cfg.Warmup, Conns: cfg.Conns,
		Rounds: rounds, ExtauthzArgs: cfg.ExtauthzArgs, Machine: ReadMachine(), ClockTicks: hz, ClockTicksAssumed: assumed}
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
	defer noT.close()
	if err := warm(ctx, &cfg, mix, noT, &seq); err != nil {
		return nil, err
	}
	targets, mixes := []*target{noT}, []*Mix{mix}
	var points []SweepPoint
	for _, n := range sizes {
		cfg.Scale = dim.With(base, n)
		t, m, p, err := startPoint(ctx, &cfg, workDir, &seq)
		if t != nil {
			defer t.close()
		}
		if err != nil {
			return r, fmt.Errorf("%s=%d: %w", dim, n, err)
		}
		targets, mixes, points = append(targets, t), append(mixes, m), append(points, p)
	}

	cfg.Rounds = rounds
	if err := runLevels(ctx, &cfg, mixes, hz, targets, &seq); err != nil {
		return r, err
	}
	for i, t := range targets {
		if i == 0 {
			r.Noop = t.res
		} else {
			points[i-1].Server = t.res
		}
	}
	r.Points = points
	return r, nil
}

// startPoint writes a policy of size cfg.Scale (removed once the server has
// loaded it), starts extauthz on it and warms it up.
func startPoint(ctx context.Context, cfg *Config, workDir string, seq *uint64) (*target, *Mix, SweepPoint, error) {
	sc := cfg.Scale
	p := SweepPoint{Scale: sc}
	mix, err := cfg.check()
	if err != nil {
		return nil, nil, p, err
	}
	dir, err := os.MkdirTemp(workDir, "extauthz-scale-")
	if err != nil {
		return nil, nil, p, err
	}
	defer os.RemoveAll(dir)
	t0 := time.Now()
	if err := WriteScaledPolicy(dir, sc.Keys, sc.Tenants, sc.Routes); err != nil {
		return nil, nil, p, err
	}
	st, err := os.Stat(filepath.Join(dir, "data.json"))
	if err != nil {
		return nil, nil, p, err
	}
	p.DataBytes = st.Size()
	fmt.Fprintf(cfg.Log, "scale keys=%d tenants=%d routes=%d: data.json %s written in %s\n",
		sc.Keys, sc.Tenants, sc.Routes, mib(st.Size()), time.Since(t0).Round(time.Millisecond))
	ex, err := StartExtauthz(ctx, cfg.ExtauthzBin, dir, cfg.ReadyTimeout, cfg.ExtauthzArgs...)
	if err != nil {
		return nil, nil, p, err
	}
	t, err := newTarget(ex, cfg.Conns, true)
	if err != nil {
		return nil, nil, p, err
	}
	return t, mix, p, warm(ctx, cfg, mix, t, seq)
}

// mergeRounds sums one server's rounds at one level: counts, time and CPU
// add up; the latency percentiles are the median of the rounds'.
func mergeRounds(ls []Level) Level {
	if len(ls) == 1 {
		return ls[0]
	}
	m := Level{Concurrency: ls[0].Concurrency, DecisionsChecked: ls[0].DecisionsChecked}
	var p50, p90, p99 []time.Duration
	var driverCPU time.Duration
	for _, l := range ls {
		m.Sent += l.Sent
		m.Errors += l.Errors
		m.Unexpected += l.Unexpected
		m.Deadline += l.Deadline
		m.Late += l.Late
		m.Elapsed += l.Elapsed
		m.TimedOut = m.TimedOut || l.TimedOut
		m.ServerCPU += l.ServerCPU
		m.ReplyBytes += l.ReplyBytes
		driverCPU += l.DriverCPUPerCheck * time.Duration(l.Sent)
		m.ErrorSamples = appendUpTo(m.ErrorSamples, l.ErrorSamples)
		m.UnexpectedSamples = appendUpTo(m.UnexpectedSamples, l.UnexpectedSamples)
		m.DeadlineSamples = appendUpTo(m.DeadlineSamples, l.DeadlineSamples)
		p50, p90, p99 = append(p50, l.Latency.P50), append(p90, l.Latency.P90), append(p99, l.Latency.P99)
		m.Latency.N += l.Latency.N
		m.Latency.Max = max(m.Latency.Max, l.Latency.Max)
	}
	m.Latency.P50, m.Latency.P90, m.Latency.P99 = median(p50), median(p90), median(p99)
	if m.Sent > 0 {
		m.CPUPerCheck = m.ServerCPU / time.Duration(m.Sent)
		m.DriverCPUPerCheck = driverCPU / time.Duration(m.Sent)
		m.ReplyBytesPerCheck = float64(m.ReplyBytes) / float64(m.Sent)
	}
	return m
}

// Markdown writes the sweep as Markdown.
func (r *SweepReport) Markdown(w io.Writer) {
	fmt.Fprintf(w, "### %s-count sweep, mix `%s`: %d checks per size, level and round, %d rounds interleaved over the sizes, %d warm-up, %d client connections\n\n",
		r.Dim.Noun(), r.Mix, r.Requests, r.Rounds, r.Warmup, r.Conns)
	fmt.Fprintf(w, "Swept: %s. Fixed: %s. Mix: %s.\n", r.Dim, r.fixed(), r.MixDesc)
	fmt.Fprintln(w, extauthzFlags(r.ExtauthzArgs))
	r.Machine.markdown(w, r.ClockTicks, r.ClockTicksAssumed)
	fmt.Fprint(w, "\n")
	fmt.Fprintf(w, "| %s | data.json | start to ready | idle RSS | peak RSS | c | checks/s | p50 | p99 | server CPU/check | CPU/check vs no-op | errors | unexpected |\n", r.Dim)
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
			fmt.Fprintf(w, "| %d | %s | %s | %s | %s | %d | %s | %s | %s | %s | %s | %d | %s |\n", r.Dim.Of(p.Scale), mib(p.DataBytes),
				p.Server.Ready.Round(time.Millisecond), mib(p.Server.IdleRSS), mib(p.Server.PeakRSS), l.Concurrency,
				fmtRate(l.Throughput()), fmtDur(l.Latency.P50), fmtDur(l.Latency.P99), fmtCPU(l.CPUPerCheck),
				ratio(float64(l.CPUPerCheck), float64(floor[l.Concurrency])), l.Errors, decisions(l))
		}
	}
	fmt.Fprintf(w, "\nPeak RSS includes loading the policy (data.json is read whole). Latency percentiles are the median of the rounds'. %s\n", cpuNote)
	if p := r.Problems(); len(p) > 0 {
		fmt.Fprintf(w, "\n**Problems:**\n\n- %s\n", strings.Join(p, "\n- "))
	}
}

// fixed describes the sizes of the dimensions not swept.
func (r *SweepReport) fixed() string {
	var parts []string
	for _, d := range Dims() {
		if d == r.Dim {
			continue
		}
		switch d {
		case DimKeys:
			parts = append(parts, fmt.Sprintf("%d API keys in total (demo keys included)", r.Base.Keys))
		default:
			parts = append(parts, fmt.Sprintf("%d synthetic %s (besides the demo ones)", d.Of(r.Base), d))
		}
	}
	return strings.Join(parts, ", ")
}

func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(d))
	return s[len(s)/2]
}
