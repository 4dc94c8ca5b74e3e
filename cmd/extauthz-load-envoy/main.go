// Command extauthz-load-envoy measures what ext_authz adds to a request
// through real Envoy: an HTTP load generator (wrk) → Envoy running the
// shipped envoy/envoy.yaml → {no ext_authz filter (the floor), the in-tree
// no-op ext_authz server, extauthz, the no-op server answering a fixed reply
// shaped like extauthz's allow (what Envoy's and the upstream's handling of
// that reply costs, without extauthz's work)} → a loopback upstream. The Envoys
// run side by side and are measured in turn, over several rounds, at each
// concurrency; it prints requests/s and p50/p99 per target, and extauthz's
// p99 against the no-op server's, and the CPU each process spent per request
// (Envoy, the ext_authz server, wrk, the upstream) from /proc. Everything
// listens on 127.0.0.1.
//
//	go run ./cmd/extauthz-load-envoy [--concurrency 16,64] [--duration 5s] [--rounds 3]
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/extauthz/extauthz/internal/envoybin"
	"github.com/extauthz/extauthz/internal/loadtest"
)

func main() {
	conc := flag.String("concurrency", "16,64", "wrk connections, comma-separated")
	dur := flag.Duration("duration", 5*time.Second, "length of one measurement")
	rounds := flag.Int("rounds", 3, "rounds; each measures every target at every concurrency, in rotating order")
	var extra []extraTarget
	flag.Func("extra", "another ext_authz server to put behind its own Envoy, NAME=HOST:PORT[=PID] (PID: also measure its CPU); repeatable", func(v string) error {
		f := strings.Split(v, "=")
		if len(f) < 2 || len(f) > 3 || f[0] == "" || f[1] == "" {
			return fmt.Errorf("want NAME=HOST:PORT[=PID], got %q", v)
		}
		e := extraTarget{name: f[0], addr: f[1]}
		if len(f) == 3 {
			pid, err := strconv.Atoi(f[2])
			if err != nil {
				return fmt.Errorf("PID %q: %w", f[2], err)
			}
			e.pid = pid
		}
		extra = append(extra, e)
		return nil
	})
	flag.Parse()
	if err := run(*conc, *dur, *rounds, extra); err != nil {
		fmt.Fprintln(os.Stderr, "extauthz-load-envoy:", err)
		os.Exit(1)
	}
}

type extraTarget struct {
	name, addr string
	pid        int
}

type target struct {
	name     string
	addr     string // Envoy's listener
	envoyPid int
	authzPid int // 0: no ext_authz filter
}

type sample struct {
	rps      float64
	p50, p99 time.Duration
	// CPU per request, µs: Envoy, the ext_authz server, wrk, the upstream.
	envoyCPU, authzCPU, wrkCPU, upCPU float64
}

func run(concList string, dur time.Duration, rounds int, extra []extraTarget) error {
	ctx := context.Background()
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		return fmt.Errorf("wrk not found (apt-get install wrk): %w", err)
	}
	bin, err := envoybin.Find(os.Getenv, true)
	if err != nil {
		return err
	}
	root := envoybin.ModuleRoot()
	tmp, err := os.MkdirTemp("", "extauthz-load-envoy-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	extBin, noopBin, err := loadtest.Build(ctx, root, tmp)
	if err != nil {
		return err
	}
	ext, err := loadtest.StartExtauthz(ctx, extBin, "", 30*time.Second)
	if err != nil {
		return err
	}
	defer ext.Stop()
	noop, err := loadtest.StartNoop(ctx, noopBin, 30*time.Second)
	if err != nil {
		return err
	}
	defer noop.Stop()
	shaped, err := loadtest.StartNoop(ctx, noopBin, 30*time.Second, "--reply", "identity")
	if err != nil {
		return err
	}
	defer shaped.Stop()

	up, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go func() {
		_ = http.Serve(up, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }))
	}()

	var targets []target
	all := []extraTarget{
		{"Envoy, no ext_authz (floor)", "", 0},
		{"Envoy + no-op ext_authz", noop.GRPCAddr, noop.Pid()},
		{"Envoy + extauthz", ext.GRPCAddr, ext.Pid()},
		{"Envoy + no-op ext_authz, extauthz's reply", shaped.GRPCAddr, shaped.Pid()},
	}
	for _, e := range extra {
		all = append(all, extraTarget{"Envoy + " + e.name, e.addr, e.pid})
	}
	for _, t := range all {
		b, err := envoybin.LoadBootstrap(filepath.Join(root, "envoy", "envoy.yaml"))
		if err != nil {
			return err
		}
		authz := t.addr
		if authz == "" {
			authz = noop.GRPCAddr // the cluster stays; no filter calls it
		}
		if err := b.Loopback("127.0.0.1:0", map[string]string{"extauthz": authz, "upstream": up.Addr().String()}); err != nil {
			return err
		}
		for _, l := range b.Listeners() {
			hcm := envoybin.HCM(l)
			delete(hcm, "access_log") // alike for all three: no per-request log line
			if t.addr == "" {
				envoybin.RemoveHTTPFilter(hcm, ".ExtAuthz")
			}
		}
		p, err := envoybin.Run(bin, b, envoybin.RunOptions{})
		if err != nil {
			return err
		}
		defer p.Close()
		addr, ok := p.Listeners["ingress_http"]
		if !ok {
			return fmt.Errorf("envoy: no ingress_http listener (have %v)", p.Listeners)
		}
		targets = append(targets, target{t.name, addr, p.Pid(), t.pid})
	}

	var concs []int
	for _, s := range strings.Split(concList, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return fmt.Errorf("--concurrency: %q", s)
		}
		concs = append(concs, n)
	}
	m := loadtest.ReadMachine()
	fmt.Printf("%s: %d CPUs (%s), %s; envoy %s; wrk -t2, %v per measurement, %d rounds, median shown\n",
		time.Now().UTC().Format("2006-01-02"), m.NumCPU, m.CPUModel, m.GoVersion, envoybin.VersionOf(bin), dur, rounds)
	got := map[string][]sample{}
	for r := range rounds {
		for _, c := range concs {
			for i := range targets {
				t := targets[(i+r)%len(targets)] // rotate who goes first
				s, err := measure(wrk, t, c, dur)
				if err != nil {
					return fmt.Errorf("%s c=%d: %w", t.name, c, err)
				}
				key := fmt.Sprintf("%s|%d", t.name, c)
				got[key] = append(got[key], s)
				fmt.Fprintf(os.Stderr, "round %d c=%d %s: %.0f req/s p50 %v p99 %v; CPU µs/request envoy %.1f authz %.1f wrk %.1f upstream %.1f\n",
					r+1, c, t.name, s.rps, s.p50, s.p99, s.envoyCPU, s.authzCPU, s.wrkCPU, s.upCPU)
			}
		}
	}
	fmt.Println()
	fmt.Println("| target | c | req/s | p50 | p99 | p99 vs no-op ext_authz | p99 vs no-op with extauthz's reply | CPU µs/request: Envoy | ext_authz server | wrk | upstream |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|---|")
	for _, c := range concs {
		noopP99 := median(got[fmt.Sprintf("%s|%d", targets[1].name, c)]).p99
		shapedP99 := median(got[fmt.Sprintf("%s|%d", targets[3].name, c)]).p99
		for _, t := range targets {
			m := median(got[fmt.Sprintf("%s|%d", t.name, c)])
			fmt.Printf("| %s | %d | %.0f | %v | %v | %.2f× | %.2f× | %.1f | %.1f | %.1f | %.1f |\n", t.name, c, m.rps, m.p50.Round(time.Microsecond), m.p99.Round(time.Microsecond),
				float64(m.p99)/float64(noopP99), float64(m.p99)/float64(shapedP99), m.envoyCPU, m.authzCPU, m.wrkCPU, m.upCPU)
		}
	}
	return nil
}

// measure runs one wrk measurement of an allowed request (the demo key),
// with the CPU time each process spent meanwhile.
func measure(wrk string, t target, conns int, dur time.Duration) (sample, error) {
	cpu := func(pid int) float64 {
		if pid == 0 {
			return 0
		}
		c, err := loadtest.ReadProcCPU(pid)
		if err != nil {
			return 0
		}
		return float64(c.Ticks())
	}
	self := os.Getpid() // the upstream runs in this process
	e0, a0, u0 := cpu(t.envoyPid), cpu(t.authzPid), cpu(self)
	cmd := exec.Command(wrk, "-t2", fmt.Sprintf("-c%d", conns), fmt.Sprintf("-d%ds", int(dur.Seconds())), "--latency",
		"-H", "x-api-key: xa_demo_7Qm2vK9pL4sT8wZ1", "-H", "x-tenant-id: 42",
		"http://"+t.addr+"/v1/orders")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return sample{}, fmt.Errorf("%w: %s", err, out)
	}
	e1, a1, u1 := cpu(t.envoyPid), cpu(t.authzPid), cpu(self)
	s, err := parseWrk(string(out))
	if err != nil {
		return s, err
	}
	n := s.rps * dur.Seconds() // requests served
	if n > 0 {
		perReq := 1e6 / float64(clockTicks) / n // µs per tick per request
		s.envoyCPU, s.authzCPU, s.upCPU = (e1-e0)*perReq, (a1-a0)*perReq, (u1-u0)*perReq
		s.wrkCPU = float64(cmd.ProcessState.UserTime()+cmd.ProcessState.SystemTime()) / float64(time.Microsecond) / n
	}
	return s, nil
}

var clockTicks, _ = loadtest.ClockTicks()

var (
	reRPS     = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	rePct     = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([0-9.]+)(us|ms|s)\s*$`)
	reNon2xx  = regexp.MustCompile(`Non-2xx or 3xx responses:\s+(\d+)`)
	reSockErr = regexp.MustCompile(`Socket errors:.*`)
)

// parseWrk reads wrk --latency's output; a run with non-2xx answers or
// socket errors is an error (every request must be the allowed one).
func parseWrk(out string) (sample, error) {
	if m := reNon2xx.FindStringSubmatch(out); m != nil {
		return sample{}, fmt.Errorf("%s non-2xx responses:\n%s", m[1], out)
	}
	if m := reSockErr.FindString(out); m != "" {
		return sample{}, fmt.Errorf("%s\n%s", m, out)
	}
	var s sample
	m := reRPS.FindStringSubmatch(out)
	if m == nil {
		return s, fmt.Errorf("no Requests/sec in:\n%s", out)
	}
	s.rps, _ = strconv.ParseFloat(m[1], 64)
	for _, p := range rePct.FindAllStringSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(p[2], 64)
		d := time.Duration(v * float64(map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second}[p[3]]))
		if p[1] == "50" {
			s.p50 = d
		} else {
			s.p99 = d
		}
	}
	if s.p50 == 0 || s.p99 == 0 {
		return s, fmt.Errorf("no latency distribution in:\n%s", out)
	}
	return s, nil
}

// median is the per-field median of the samples.
func median(ss []sample) sample {
	pick := func(f func(sample) float64) float64 {
		v := make([]float64, len(ss))
		for i, s := range ss {
			v[i] = f(s)
		}
		for i := range v { // insertion sort: a handful of rounds
			for j := i; j > 0 && v[j] < v[j-1]; j-- {
				v[j], v[j-1] = v[j-1], v[j]
			}
		}
		return v[len(v)/2]
	}
	return sample{
		envoyCPU: pick(func(s sample) float64 { return s.envoyCPU }),
		authzCPU: pick(func(s sample) float64 { return s.authzCPU }),
		wrkCPU:   pick(func(s sample) float64 { return s.wrkCPU }),
		upCPU:    pick(func(s sample) float64 { return s.upCPU }),
		rps:      pick(func(s sample) float64 { return s.rps }),
		p50:      time.Duration(pick(func(s sample) float64 { return float64(s.p50) })),
		p99:      time.Duration(pick(func(s sample) float64 { return float64(s.p99) })),
	}
}
