package loadtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"
)

// Compare measures several request mixes against the same two server
// processes, so their costs can be compared within one run: for each
// concurrency level, rounds times, every mix is driven against extauthz and
// then the no-op server. Interleaving mixes and rounds spreads slow drifts
// in machine load over all of them. Its question is "is a deny any slower
// than an allow?", which separate runs (one process per mix) cannot answer
// on a noisy machine.
func Compare(ctx context.Context, cfg Config, mixNames []string, rounds int) (*CompareReport, error) {
	cfg.defaults()
	if len(mixNames) < 2 {
		return nil, errors.New("loadtest: compare needs at least two mixes")
	}
	rounds = max(rounds, 1)
	var mixes []*Mix
	for _, n := range mixNames {
		c := cfg
		c.Mix = n
		m, err := c.check()
		if err != nil {
			return nil, err
		}
		mixes = append(mixes, m)
	}
	hz, assumed := ClockTicks()
	r := &CompareReport{Requests: cfg.Requests, Rounds: rounds, Conns: cfg.Conns, ExtauthzArgs: cfg.ExtauthzArgs,
		Machine: ReadMachine(), ClockTicks: hz, ClockTicksAssumed: assumed}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ex, err := StartExtauthz(ctx, cfg.ExtauthzBin, cfg.PolicyDir, cfg.ReadyTimeout, cfg.ExtauthzArgs...)
	if err != nil {
		return nil, err
	}
	exT, err := newTarget(ex, cfg.Conns, true)
	if err != nil {
		return nil, err
	}
	defer exT.close()
	noop, err := StartNoop(ctx, cfg.NoopBin, cfg.ReadyTimeout)
	if err != nil {
		return nil, err
	}
	noT, err := newTarget(noop, cfg.Conns, false)
	if err != nil {
		return nil, err
	}
	defer noT.close()

	targets := []*target{exT, noT}
	var seq uint64
	for _, m := range mixes {
		for _, t := range targets {
			if err := warm(ctx, &cfg, m, t, &seq); err != nil {
				return nil, err
			}
		}
	}
	for _, conc := range cfg.Concurrency {
		rows := make([]CompareRow, len(mixes))
		for i, m := range mixes {
			rows[i] = CompareRow{Mix: m.Name, Concurrency: conc}
		}
		for range rounds {
			for i, m := range mixes {
				for j, t := range targets {
					l, err := measure(ctx, &cfg, m, conc, hz, t, &seq)
					if err != nil {
						return nil, err
					}
					rows[i].add(j, l)
				}
			}
		}
		r.Rows = append(r.Rows, rows...)
	}
	return r, nil
}

// CompareReport is one Compare run.
type CompareReport struct {
	Requests, Rounds, Conns int
	ExtauthzArgs            []string
	Machine                 Machine
	ClockTicks              int
	ClockTicksAssumed       bool
	Rows                    []CompareRow // per level, per mix, in the order given
}

// CompareRow is one mix at one level, summed over the rounds: index 0 is
// extauthz, 1 the no-op server.
type CompareRow struct {
	Mix         string
	Concurrency int
	Sent        [2]int
	Errors      int // extauthz's gRPC errors
	Unexpected  int // extauthz's unexpected decisions
	CPU         [2]time.Duration
	Elapsed     [2]time.Duration
	P50, P99    [2][]time.Duration // per round
}

func (c *CompareRow) add(server int, l Level) {
	c.Sent[server] += l.Sent
	c.CPU[server] += l.ServerCPU
	c.Elapsed[server] += l.Elapsed
	c.P50[server] = append(c.P50[server], l.Latency.P50)
	c.P99[server] = append(c.P99[server], l.Latency.P99)
	if server == 0 {
		c.Errors += l.Errors
		c.Unexpected += l.Unexpected
	}
}

// CPUPerCheck is the server's CPU over every round / checks completed.
func (c CompareRow) CPUPerCheck(server int) time.Duration {
	if c.Sent[server] == 0 {
		return 0
	}
	return c.CPU[server] / time.Duration(c.Sent[server])
}

// Throughput is checks completed / time spent over every round.
func (c CompareRow) Throughput(server int) float64 {
	if c.Elapsed[server] <= 0 {
		return 0
	}
	return float64(c.Sent[server]) / c.Elapsed[server].Seconds()
}

func median(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Sorted(slices.Values(d))
	return s[len(s)/2]
}

// Problems lists extauthz's errors and unexpected decisions.
func (r *CompareReport) Problems() []string {
	var out []string
	for _, row := range r.Rows {
		if row.Errors > 0 || row.Unexpected > 0 {
			out = append(out, fmt.Sprintf("%s c=%d: %d gRPC errors, %d unexpected decisions", row.Mix, row.Concurrency, row.Errors, row.Unexpected))
		}
	}
	return out
}

// Markdown writes the comparison: per level, each mix's extauthz CPU per
// check against the first mix's (the baseline) and against the no-op
// server's for the same mix.
func (r *CompareReport) Markdown(w io.Writer) {
	fmt.Fprintf(w, "### mixes compared: %d checks per mix, server, level and round; %d rounds, interleaved; %d client connections\n\n",
		r.Requests, r.Rounds, r.Conns)
	if len(r.ExtauthzArgs) > 0 {
		fmt.Fprintf(w, "extauthz flags: %s.\n", extauthzFlags(r.ExtauthzArgs))
	}
	r.Machine.markdown(w, r.ClockTicks, r.ClockTicksAssumed)
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| c | mix | extauthz CPU/check | vs first mix | no-op CPU/check | vs no-op | checks/s | vs no-op | p50 | p99 | errors | unexpected |")
	fmt.Fprintln(w, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	var base CompareRow
	for i, row := range r.Rows {
		if i == 0 || row.Concurrency != r.Rows[i-1].Concurrency {
			base = row
		}
		fmt.Fprintf(w, "| %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d | %d |\n", row.Concurrency, row.Mix,
			fmtCPU(row.CPUPerCheck(0)), ratio(float64(row.CPUPerCheck(0)), float64(base.CPUPerCheck(0))),
			fmtCPU(row.CPUPerCheck(1)), ratio(float64(row.CPUPerCheck(0)), float64(row.CPUPerCheck(1))),
			fmtRate(row.Throughput(0)), ratio(row.Throughput(0), row.Throughput(1)),
			fmtDur(median(row.P50[0])), fmtDur(median(row.P99[0])), row.Errors, row.Unexpected)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "CPU/check is the server's utime+stime over all rounds of that mix / checks completed; p50 and p99 are the median over rounds of each round's client-side percentile.")
}
