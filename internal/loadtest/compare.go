package loadtest

import (
	"context"
	"errors"
	"fmt"
	"io"
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
	exT, noT, err := startPair(ctx, &cfg)
	if err != nil {
		return nil, err
	}
	defer exT.close()
	defer noT.close()

	var seq uint64
	var jobs []job
	for _, m := range mixes {
		for _, t := range []*target{exT, noT} {
			if err := warm(ctx, &cfg, m, t, &seq); err != nil {
				return nil, err
			}
			jobs = append(jobs, job{t, m})
		}
	}
	for _, conc := range cfg.Concurrency {
		levels, err := runRounds(ctx, &cfg, jobs, conc, rounds, hz, &seq)
		if err != nil {
			return nil, err
		}
		for i, m := range mixes {
			r.Rows = append(r.Rows, CompareRow{Mix: m.Name, Concurrency: conc, Servers: [2]Level{levels[2*i], levels[2*i+1]}})
		}
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

// CompareRow is one mix at one level, its rounds merged (see mergeRounds):
// Servers[0] is extauthz, Servers[1] the no-op server.
type CompareRow struct {
	Mix         string
	Concurrency int
	Servers     [2]Level
}

// Problems lists extauthz's errors and unexpected decisions.
func (r *CompareReport) Problems() []string {
	var out []string
	for _, row := range r.Rows {
		if l := row.Servers[0]; l.Errors > 0 || l.Unexpected > 0 {
			out = append(out, fmt.Sprintf("%s c=%d: %d gRPC errors, %d unexpected decisions", row.Mix, row.Concurrency, l.Errors, l.Unexpected))
		}
		if l := row.Servers[0]; l.Deadline > 0 {
			out = append(out, fmt.Sprintf("%s c=%d: %d checks %s", row.Mix, row.Concurrency, l.Deadline, FailedAtDeadline))
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
	var base Level
	for i, row := range r.Rows {
		ex, noop := row.Servers[0], row.Servers[1]
		if i == 0 || row.Concurrency != r.Rows[i-1].Concurrency {
			base = ex
		}
		fmt.Fprintf(w, "| %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d | %d |\n", row.Concurrency, row.Mix,
			fmtCPU(ex.CPUPerCheck), ratio(float64(ex.CPUPerCheck), float64(base.CPUPerCheck)),
			fmtCPU(noop.CPUPerCheck), ratio(float64(ex.CPUPerCheck), float64(noop.CPUPerCheck)),
			fmtRate(ex.Throughput()), ratio(ex.Throughput(), noop.Throughput()),
			fmtDur(ex.Latency.P50), fmtDur(ex.Latency.P99), ex.Errors, ex.Unexpected)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "CPU/check is the server's utime+stime over all rounds of that mix / checks completed; p50 and p99 are the median over rounds of each round's client-side percentile.")
}
