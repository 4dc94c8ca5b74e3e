package loadtest

import (
	"fmt"
	"io"
	"strings"
	"time"
)

func mib(b int64) string {
	if b <= 0 {
		return "–"
	}
	if b < 1<<20 {
		return fmt.Sprintf("%.0f KiB", float64(b)/(1<<10))
	}
	return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
}

// fmtDur prints a latency in ms with sensible precision.
func fmtDur(d time.Duration) string {
	ms := float64(d) / float64(time.Millisecond)
	switch {
	case ms >= 100:
		return fmt.Sprintf("%.0f ms", ms)
	case ms >= 10:
		return fmt.Sprintf("%.1f ms", ms)
	default:
		return fmt.Sprintf("%.2f ms", ms)
	}
}

// fmtCPU prints a per-check CPU time in µs.
func fmtCPU(d time.Duration) string {
	return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond))
}

func fmtRate(r float64) string {
	if r >= 1000 {
		return fmt.Sprintf("%.1fk", r/1000)
	}
	return fmt.Sprintf("%.0f", r)
}

func ratio(a, b float64) string {
	if b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

func decisions(l Level) string {
	if !l.DecisionsChecked {
		return "n/a"
	}
	if l.Deadline > 0 {
		return fmt.Sprintf("%d (+%d failed closed at the deadline)", l.Unexpected, l.Deadline)
	}
	return fmt.Sprint(l.Unexpected)
}

func (m Machine) markdown(w io.Writer, hz int, assumed bool) {
	tck := fmt.Sprintf("CLK_TCK %d (getconf)", hz)
	if assumed {
		tck = fmt.Sprintf("CLK_TCK assumed %d (getconf unavailable)", hz)
	}
	fmt.Fprintf(w, "Machine: %d CPUs (nproc), %s, %s RAM, Linux %s, %s; %s. Load generator on the same host, loopback gRPC.\n",
		m.NumCPU, orDash(m.CPUModel), orDash(m.MemTotal), orDash(m.Kernel), m.GoVersion, tck)
}

func orDash(s string) string {
	if s == "" {
		return "?"
	}
	return s
}

const cpuNote = "Server CPU/check = (utime+stime of the server process over the level, from /proc/<pid>/stat, in CLK_TCK ticks) / checks completed in the level; it includes GC and every server thread. Driver CPU/check is the load generator's own, read the same way. Latency is client-side per call (sorted sample, nearest rank)."

// Markdown writes the report as Markdown, ready for BENCHMARKS.md.
func (r *Report) Markdown(w io.Writer) {
	rounds := ""
	if r.Rounds > 1 {
		rounds = fmt.Sprintf(" (%d rounds of %d, alternating the servers; latency percentiles are the median round's)", r.Rounds, r.Requests)
	}
	fmt.Fprintf(w, "### mix `%s`: %d checks per server and level%s, %d warm-up, %d client connections\n\n", r.Mix, r.Requests*max(r.Rounds, 1), rounds, r.Warmup, r.Conns)
	fmt.Fprintf(w, "Mix: %s.", r.MixDesc)
	if r.PolicyDir != "" {
		fmt.Fprintf(w, " Policy dir: `%s`.", r.PolicyDir)
	} else {
		fmt.Fprint(w, " Policy: embedded demo policy.")
	}
	fmt.Fprintf(w, " %s\n", extauthzFlags(r.ExtauthzArgs))
	r.Machine.markdown(w, r.ClockTicks, r.ClockTicksAssumed)
	fmt.Fprint(w, "\n")

	if r.DecodeFull {
		fmt.Fprint(w, "The driver decodes every reply whole (--decode-full), as Envoy does.\n\n")
	}
	fmt.Fprintln(w, "| server | c | checks | checks/s | p50 | p90 | p99 | server CPU/check | driver CPU/check | reply bytes/check | errors | unexpected |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	levels := map[int]bool{}
	var order []int
	for _, s := range r.Servers {
		for _, l := range s.Levels {
			if !levels[l.Concurrency] {
				levels[l.Concurrency] = true
				order = append(order, l.Concurrency)
			}
		}
	}
	for _, c := range order {
		for _, s := range r.Servers {
			for _, l := range s.Levels {
				if l.Concurrency != c {
					continue
				}
				n := fmt.Sprint(l.Sent)
				if l.TimedOut {
					n += " (time bound)"
				}
				fmt.Fprintf(w, "| %s | %d | %s | %s | %s | %s | %s | %s | %s | %.0f | %d | %s |\n", s.Name, c, n, fmtRate(l.Throughput()),
					fmtDur(l.Latency.P50), fmtDur(l.Latency.P90), fmtDur(l.Latency.P99), fmtCPU(l.CPUPerCheck), fmtCPU(l.DriverCPUPerCheck),
					l.ReplyBytesPerCheck, l.Errors, decisions(l))
			}
		}
	}

	// Every extauthz against the no-op server (the last).
	for _, a := range r.Servers[:max(len(r.Servers)-1, 0)] {
		b := r.Servers[len(r.Servers)-1]
		fmt.Fprintf(w, "\n| c | CPU/check %s/%s | throughput %s/%s | p99 %s/%s |\n", a.Name, b.Name, a.Name, b.Name, a.Name, b.Name)
		fmt.Fprintln(w, "|---:|---:|---:|---:|")
		for i := range min(len(a.Levels), len(b.Levels)) {
			la, lb := a.Levels[i], b.Levels[i]
			fmt.Fprintf(w, "| %d | %s | %s | %s |\n", la.Concurrency,
				ratio(float64(la.CPUPerCheck), float64(lb.CPUPerCheck)),
				ratio(la.Throughput(), lb.Throughput()),
				ratio(float64(la.Latency.P99), float64(lb.Latency.P99)))
		}
	}

	fmt.Fprintln(w, "\n| server | start to serving | idle RSS (after warm-up) | peak RSS (VmHWM) |")
	fmt.Fprintln(w, "|---|---:|---:|---:|")
	for _, s := range r.Servers {
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", s.Name, s.Ready.Round(time.Millisecond), mib(s.IdleRSS), mib(s.PeakRSS))
	}
	fmt.Fprintf(w, "\n%s\n", cpuNote)
	if p := r.Problems(); len(p) > 0 {
		fmt.Fprintf(w, "\n**Problems:**\n\n- %s\n", strings.Join(p, "\n- "))
	}
}

func extauthzFlags(args []string) string {
	if len(args) == 0 {
		return "extauthz runs with its default flags (and any EXTAUTHZ_* environment)."
	}
	return fmt.Sprintf("extauthz flags: `%s`.", strings.Join(args, " "))
}
