// Package loadtest is extauthz's own load driver. It starts extauthz and an
// in-tree no-op ext_authz server (cmd/extauthz-noop, the floor) as child
// processes on loopback, drives both with the same Envoy-like CheckRequest
// mix over gRPC at fixed concurrency levels, and reports client-side
// throughput and latency, server CPU per check from the server process's own
// accounting (/proc/<pid>/stat), RSS from /proc/<pid>/status, and the
// extauthz/no-op ratios.
//
// WriteScaledPolicy generates policies with many API keys, tenants with IP
// allowlists and routes; mix scale_allow (NewScaledMix) sends allows spread
// over a generated policy's keys, tenants and routes; and Sweep measures
// extauthz over growing sizes of one of those dimensions, to show its cost
// per check stays flat.
package loadtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"
)

// Config is one load run.
type Config struct {
	ExtauthzBin string // path to the extauthz binary (see Build)
	NoopBin     string // path to the extauthz-noop binary
	PolicyDir   string // passed to extauthz as --policy-dir; empty: embedded demo policy
	// ExtauthzArgs are extra extauthz flags, e.g. --decision-log none.
	ExtauthzArgs []string
	// VariantArgs, when set, start a second extauthz with ExtauthzArgs and
	// these flags added (e.g. --reply-metadata=full), driven in the same
	// rounds as the first and the no-op server (Run only).
	VariantArgs []string
	// VariantBin, when set, is the variant's binary (another build, e.g.
	// the branch it was changed from), with or without VariantArgs.
	VariantBin string
	// DecodeFull makes the driver decode every reply whole, as Envoy does,
	// instead of reading only the decision: its own CPU per check then
	// shows what a reply's size costs the client.
	DecodeFull bool

	Mix string // one of MixNames
	JWT string // the demo JWT (needed by mixes that send it)
	// Scale is the size of the generated policy in PolicyDir (see
	// WriteScaledPolicy), which mix scale_allow targets; zero for the demo
	// policy. Sweep sets it per size.
	Scale Scale

	Concurrency []int // worker goroutines per level; default 16, 64
	Requests    int   // checks per level, server and round; default 60000
	// Rounds splits each level into rounds that alternate the servers, so
	// drifts in machine load hit both alike; a level's figures sum its
	// rounds. Default 1.
	Rounds      int
	Warmup      int           // checks before measuring; default min(Requests/10, 3000), at least 100
	MaxDuration time.Duration // safety bound per level; default 90s
	Conns       int           // client connections per server; default 4

	ReadyTimeout time.Duration // startup bound; default 60s
	Log          io.Writer     // progress lines; nil discards
}

func (c *Config) defaults() {
	if len(c.Concurrency) == 0 {
		c.Concurrency = []int{16, 64}
	}
	if c.Requests <= 0 {
		c.Requests = 60000
	}
	if c.Warmup <= 0 {
		c.Warmup = max(min(c.Requests/10, 3000), 100)
	}
	if c.MaxDuration <= 0 {
		c.MaxDuration = 90 * time.Second
	}
	if c.Conns <= 0 {
		c.Conns = 4
	}
	if c.Rounds <= 0 {
		c.Rounds = 1
	}
	if c.ReadyTimeout <= 0 {
		c.ReadyTimeout = 60 * time.Second
	}
	if c.Mix == "" {
		c.Mix = "blend"
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
}

// Level is one server at one concurrency level.
type Level struct {
	Concurrency int
	Outcome
	ServerCPU          time.Duration // utime+stime the server spent during the level
	CPUPerCheck        time.Duration // ServerCPU / Sent
	DriverCPUPerCheck  time.Duration // the load generator's own CPU / Sent
	ReplyBytesPerCheck float64       // ReplyBytes / Sent
	DecisionsChecked   bool
}

// ServerResult is everything measured for one server process.
type ServerResult struct {
	Name    string
	Ready   time.Duration // start to serving
	IdleRSS int64         // VmRSS after warm-up, bytes
	PeakRSS int64         // VmHWM at the end, bytes
	Levels  []Level
}

// Report is one Run.
type Report struct {
	Mix, MixDesc      string
	Requests, Warmup  int // Requests per level, server and round
	Rounds            int
	Conns             int
	PolicyDir         string
	ExtauthzArgs      []string
	Machine           Machine
	ClockTicks        int
	ClockTicksAssumed bool
	DecodeFull        bool
	Servers           []ServerResult // extauthz, its variant if any, then no-op
}

// Problems lists every error, unexpected decision and truncated level.
func (r *Report) Problems() []string {
	return problems(r.Servers)
}

func problems(servers []ServerResult) []string {
	var out []string
	for _, s := range servers {
		for _, l := range s.Levels {
			if l.Errors > 0 {
				out = append(out, fmt.Sprintf("%s c=%d: %d gRPC errors, e.g. %v", s.Name, l.Concurrency, l.Errors, l.ErrorSamples))
			}
			if l.Unexpected > 0 {
				out = append(out, fmt.Sprintf("%s c=%d: %d unexpected decisions, e.g. %v", s.Name, l.Concurrency, l.Unexpected, l.UnexpectedSamples))
			}
			if l.Deadline > 0 {
				out = append(out, fmt.Sprintf("%s c=%d: %d checks %s, e.g. %v", s.Name, l.Concurrency, l.Deadline, FailedAtDeadline, l.DeadlineSamples))
			}
			if l.TimedOut {
				out = append(out, fmt.Sprintf("%s c=%d: stopped at the max duration after %d checks", s.Name, l.Concurrency, l.Sent))
			}
		}
	}
	return out
}

type target struct {
	child *Child
	pool  *Pool
	check bool
	res   ServerResult
}

func (t *target) close() {
	if t.pool != nil {
		t.pool.Close()
	}
	t.child.Stop()
}

func newTarget(c *Child, conns int, check bool) (*target, error) {
	p, err := Dial(c.GRPCAddr, conns)
	if err != nil {
		c.Stop()
		return nil, err
	}
	return &target{child: c, pool: p, check: check, res: ServerResult{Name: c.Name, Ready: c.Ready}}, nil
}

// warm sends cfg.Warmup checks and records idle RSS. A warm-up where every
// check fails aborts the run.
func warm(ctx context.Context, cfg *Config, mix *Mix, t *target, seq *uint64) error {
	o := Drive{Mix: mix, Concurrency: slices.Max(cfg.Concurrency), Requests: cfg.Warmup, MaxDuration: cfg.MaxDuration, CheckDecisions: t.check, Seq: *seq,
		FailClosedAfter: t.child.FailClosedAfter, LateAfter: EnvoyTimeout}.Run(ctx, t.pool)
	*seq += uint64(cfg.Warmup)
	if o.Sent > 0 && o.Errors == o.Sent {
		return fmt.Errorf("%s: every warm-up check failed, e.g. %v; stderr:\n%s", t.res.Name, o.ErrorSamples, t.child.Stderr())
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	time.Sleep(300 * time.Millisecond) // let the post-warm-up GC settle
	m, err := ReadProcMem(t.child.Pid())
	if err != nil {
		return fmt.Errorf("%s: %w", t.res.Name, err)
	}
	t.res.IdleRSS = m.RSS
	fmt.Fprintf(cfg.Log, "%s: ready in %s, warmed up with %d checks (%d errors, %d unexpected), idle RSS %s\n",
		t.res.Name, t.res.Ready.Round(time.Millisecond), o.Sent, o.Errors, o.Unexpected, mib(m.RSS))
	return nil
}

// job is one server driven with one mix.
type job struct {
	t   *target
	mix *Mix
}

// runRounds drives every job at concurrency conc, cfg.Rounds (or rounds)
// times in turn, so slow drifts in machine load hit them all alike, and
// returns each job's rounds merged.
func runRounds(ctx context.Context, cfg *Config, jobs []job, conc, rounds, hz int, seq *uint64) ([]Level, error) {
	levels := make([][]Level, len(jobs))
	for range rounds {
		for i, j := range jobs {
			l, err := measure(ctx, cfg, j.mix, conc, hz, j.t, seq)
			if err != nil {
				return nil, err
			}
			levels[i] = append(levels[i], l)
		}
	}
	out := make([]Level, len(jobs))
	for i := range levels {
		out[i] = mergeRounds(levels[i])
	}
	return out, nil
}

// runLevels drives every target with mixes[i] at every level, for
// cfg.Rounds rounds each, and records the levels and peak RSS in the
// targets' results.
func runLevels(ctx context.Context, cfg *Config, mixes []*Mix, hz int, targets []*target, seq *uint64) error {
	jobs := make([]job, len(targets))
	for i, t := range targets {
		jobs[i] = job{t, mixes[i]}
	}
	for _, conc := range cfg.Concurrency {
		levels, err := runRounds(ctx, cfg, jobs, conc, cfg.Rounds, hz, seq)
		if err != nil {
			return err
		}
		for i, t := range targets {
			t.res.Levels = append(t.res.Levels, levels[i])
		}
	}
	for _, t := range targets {
		if m, err := ReadProcMem(t.child.Pid()); err == nil {
			t.res.PeakRSS = m.Peak
		}
	}
	return nil
}

// startPair starts extauthz (on cfg.PolicyDir) and the no-op server. The
// caller closes both.
func startPair(ctx context.Context, cfg *Config) (ex, noop *target, err error) {
	c, err := StartExtauthz(ctx, cfg.ExtauthzBin, cfg.PolicyDir, cfg.ReadyTimeout, cfg.ExtauthzArgs...)
	if err != nil {
		return nil, nil, err
	}
	if ex, err = newTarget(c, cfg.Conns, true); err != nil {
		return nil, nil, err
	}
	n, err := StartNoop(ctx, cfg.NoopBin, cfg.ReadyTimeout)
	if err != nil {
		ex.close()
		return nil, nil, err
	}
	if noop, err = newTarget(n, cfg.Conns, false); err != nil {
		ex.close()
		return nil, nil, err
	}
	return ex, noop, nil
}

// measure drives t with cfg.Requests checks of mix at concurrency conc and
// reads the server's and the driver's CPU around it.
func measure(ctx context.Context, cfg *Config, mix *Mix, conc, hz int, t *target, seq *uint64) (Level, error) {
	tick := time.Second / time.Duration(hz)
	if t.child.Exited() {
		return Level{}, fmt.Errorf("%s exited; stderr:\n%s", t.res.Name, t.child.Stderr())
	}
	s0, err := ReadProcCPU(t.child.Pid())
	if err != nil {
		return Level{}, fmt.Errorf("%s: %w", t.res.Name, err)
	}
	d0, _ := ReadProcCPU(os.Getpid())
	o := Drive{Mix: mix, Concurrency: conc, Requests: cfg.Requests, MaxDuration: cfg.MaxDuration, CheckDecisions: t.check, Seq: *seq, DecodeFull: cfg.DecodeFull,
		FailClosedAfter: t.child.FailClosedAfter, LateAfter: EnvoyTimeout}.Run(ctx, t.pool)
	*seq += uint64(cfg.Requests)
	s1, err := ReadProcCPU(t.child.Pid())
	if err != nil {
		return Level{}, fmt.Errorf("%s: %w (did it exit? stderr:\n%s)", t.res.Name, err, t.child.Stderr())
	}
	d1, _ := ReadProcCPU(os.Getpid())
	if err := ctx.Err(); err != nil {
		return Level{}, err
	}
	l := Level{Concurrency: conc, Outcome: o, DecisionsChecked: t.check}
	l.ServerCPU = time.Duration(s1.Ticks()-s0.Ticks()) * tick
	if o.Sent > 0 {
		l.CPUPerCheck = l.ServerCPU / time.Duration(o.Sent)
		l.DriverCPUPerCheck = time.Duration(d1.Ticks()-d0.Ticks()) * tick / time.Duration(o.Sent)
		l.ReplyBytesPerCheck = float64(o.ReplyBytes) / float64(o.Sent)
	}
	fmt.Fprintf(cfg.Log, "%s %s c=%d: %d checks in %s, %.0f/s, p50 %s p99 %s, server CPU/check %s, %d errors, %d unexpected, %d failed closed at the deadline, %d later than %s\n",
		t.res.Name, mix.Name, conc, o.Sent, o.Elapsed.Round(time.Millisecond), o.Throughput(), fmtDur(o.Latency.P50), fmtDur(o.Latency.P99),
		fmtCPU(l.CPUPerCheck), o.Errors, o.Unexpected, o.Deadline, o.Late, fmtDur(EnvoyTimeout))
	for _, s := range o.UnexpectedSamples {
		fmt.Fprintf(cfg.Log, "  unexpected: %s\n", s)
	}
	for _, s := range o.DeadlineSamples {
		fmt.Fprintf(cfg.Log, "  failed closed at the deadline: %s\n", s)
	}
	return l, nil
}

func (c *Config) check() (*Mix, error) {
	if c.ExtauthzBin == "" || c.NoopBin == "" {
		return nil, errors.New("loadtest: ExtauthzBin and NoopBin are required (see Build)")
	}
	for _, n := range c.Concurrency {
		if n <= 0 {
			return nil, fmt.Errorf("loadtest: concurrency %d: must be positive", n)
		}
	}
	return NewScaledMix(c.Mix, c.JWT, c.Scale)
}

// Run measures extauthz and the no-op server with the same mix. Both child
// processes are stopped before it returns, also on error or cancellation.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg.defaults()
	mix, err := cfg.check()
	if err != nil {
		return nil, err
	}
	hz, assumed := ClockTicks()
	r := &Report{Mix: mix.Name, MixDesc: mix.Describe(), Requests: cfg.Requests, Rounds: cfg.Rounds, Warmup: cfg.Warmup, Conns: cfg.Conns,
		PolicyDir: cfg.PolicyDir, ExtauthzArgs: cfg.ExtauthzArgs, DecodeFull: cfg.DecodeFull, Machine: ReadMachine(), ClockTicks: hz, ClockTicksAssumed: assumed}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // kills children started with ctx even if Stop is skipped

	exT, noT, err := startPair(ctx, &cfg)
	if err != nil {
		return nil, err
	}
	defer exT.close()
	defer noT.close()

	targets := []*target{exT, noT}
	if len(cfg.VariantArgs) > 0 || cfg.VariantBin != "" {
		bin, name := cfg.ExtauthzBin, "extauthz "+strings.Join(cfg.VariantArgs, " ")
		if cfg.VariantBin != "" {
			bin, name = cfg.VariantBin, strings.TrimSpace("variant "+strings.Join(cfg.VariantArgs, " "))
		}
		c, err := StartExtauthz(ctx, bin, cfg.PolicyDir, cfg.ReadyTimeout, slices.Concat(cfg.ExtauthzArgs, cfg.VariantArgs)...)
		if err != nil {
			return nil, err
		}
		c.Name = name
		vT, err := newTarget(c, cfg.Conns, true)
		if err != nil {
			return nil, err
		}
		defer vT.close()
		targets = []*target{exT, vT, noT}
	}
	var seq uint64
	mixes := make([]*Mix, len(targets))
	for i, t := range targets {
		mixes[i] = mix
		if err := warm(ctx, &cfg, mix, t, &seq); err != nil {
			return nil, err
		}
	}
	if err := runLevels(ctx, &cfg, mixes, hz, targets, &seq); err != nil {
		return nil, err
	}
	for _, t := range targets {
		r.Servers = append(r.Servers, t.res)
	}
	return r, nil
}

// Smoke is a short correctness run: a few hundred checks per server at
// concurrency 4 (unless cfg says otherwise). It fails if any check returned
// a gRPC error or extauthz gave an unexpected decision; it asserts nothing
// about timing.
func Smoke(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.Requests <= 0 {
		cfg.Requests = 300
	}
	if len(cfg.Concurrency) == 0 {
		cfg.Concurrency = []int{4}
	}
	if cfg.Warmup <= 0 {
		cfg.Warmup = 50
	}
	if cfg.MaxDuration <= 0 {
		cfg.MaxDuration = 30 * time.Second
	}
	r, err := Run(ctx, cfg)
	if err != nil {
		return r, err
	}
	var bad []error
	for _, s := range r.Servers {
		for _, l := range s.Levels {
			if l.Sent == 0 {
				bad = append(bad, fmt.Errorf("%s c=%d: no checks completed", s.Name, l.Concurrency))
			}
			if l.Errors > 0 {
				bad = append(bad, fmt.Errorf("%s c=%d: %d gRPC errors, e.g. %v", s.Name, l.Concurrency, l.Errors, l.ErrorSamples))
			}
			if l.Unexpected > 0 {
				bad = append(bad, fmt.Errorf("%s c=%d: %d unexpected decisions, e.g. %v", s.Name, l.Concurrency, l.Unexpected, l.UnexpectedSamples))
			}
			// At the smoke's low concurrency a check should never run out
			// of time: here it is a failure too.
			if l.Deadline > 0 {
				bad = append(bad, fmt.Errorf("%s c=%d: %d checks %s, e.g. %v", s.Name, l.Concurrency, l.Deadline, FailedAtDeadline, l.DeadlineSamples))
			}
		}
	}
	return r, errors.Join(bad...)
}
