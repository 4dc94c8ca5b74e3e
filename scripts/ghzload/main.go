// Command ghzload measures extauthz against the in-tree no-op server with
// an external load generator, ghz (github.com/bojand/ghz), which
// scripts/ghz-load.sh installs outside the module. It is a benchmark
// script, not part of the product: nothing under cmd/ imports it.
//
// It writes the Authorization service's descriptors as a protoset (from
// the Go registry of go-control-plane, so ghz needs no .proto files and the
// product no gRPC reflection) and each mix's Envoy-shaped CheckRequests
// (internal/loadtest's cases, a fresh x-request-id per call through ghz's
// templates) as JSON; starts extauthz (and optionally a variant with extra
// flags) and the no-op server; and runs ghz against each in turn, rounds
// interleaved, reading the server's CPU from /proc/<pid>/stat and ghz's own
// from its rusage. The report is Markdown on stdout.
//
//	scripts/ghz-load.sh --mixes apikey_allow,deny_missing,deny_tenant,blend --concurrency 16,64 --rounds 3
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/extauthz/extauthz/internal/loadtest"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "ghzload:", err)
		os.Exit(1)
	}
}

type server struct {
	name  string
	child *loadtest.Child
	addr  string
}

// cell is one server, mix and level summed over the rounds.
type cell struct {
	checks, errors    int
	serverTicks       uint64
	ghzCPU            time.Duration
	elapsed           time.Duration
	p50s, p99s, rates []float64
}

func run() error {
	var (
		ghz      = flag.String("ghz", "ghz", "the ghz binary")
		exBin    = flag.String("extauthz-bin", "", "extauthz binary (required)")
		noopBin  = flag.String("noop-bin", "", "extauthz-noop binary (required)")
		mixes    = flag.String("mixes", "apikey_allow,deny_missing,deny_tenant,blend", "comma-separated mixes (internal/loadtest's names)")
		levels   = flag.String("concurrency", "16,64", "comma-separated ghz concurrency levels")
		rounds   = flag.Int("rounds", 3, "rounds; every server once per round and level, in turn")
		requests = flag.Int("requests", 20000, "checks per server, mix, level and round")
		conns    = flag.Int("conns", 4, "ghz connections (as the in-tree driver's default)")
		jwtPath  = flag.String("jwt", "testdata/demo.jwt", "the demo JWT (for jwt_allow and blend)")
		variant  = flag.String("variant-args", "", "space-separated extra extauthz flags for a second extauthz driven in the same rounds, e.g. --reply-metadata=full")
		varBin   = flag.String("variant-bin", "", "another extauthz binary (e.g. main's build) driven in the same rounds, named \"variant\"")
		workDir  = flag.String("work-dir", "", "where to write the protoset and data (default: a temporary directory)")
	)
	flag.Parse()
	if *exBin == "" || *noopBin == "" {
		return fmt.Errorf("--extauthz-bin and --noop-bin are required")
	}
	dir := *workDir
	if dir == "" {
		d, err := os.MkdirTemp("", "ghzload-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		dir = d
	}
	protoset := filepath.Join(dir, "auth.protoset")
	if err := writeProtoset(protoset); err != nil {
		return err
	}
	jwt, _ := loadtest.ReadJWT(*jwtPath)
	mixNames := strings.Split(*mixes, ",")
	data := map[string]string{}
	for _, name := range mixNames {
		m, err := loadtest.NewMix(name, jwt)
		if err != nil {
			return err
		}
		path := filepath.Join(dir, name+".json")
		if err := writeData(path, m); err != nil {
			return err
		}
		data[name] = path
	}
	var concs []int
	for _, s := range strings.Split(*levels, ",") {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			return fmt.Errorf("concurrency %q", s)
		}
		concs = append(concs, n)
	}

	ctx := context.Background()
	var servers []*server
	defer func() {
		for _, s := range servers {
			s.child.Stop()
		}
	}()
	start := func(name string, args ...string) error {
		bin := *exBin
		if name == "variant" {
			bin = *varBin
		}
		c, err := loadtest.StartExtauthz(ctx, bin, "", time.Minute, args...)
		if err != nil {
			return err
		}
		servers = append(servers, &server{name: name, child: c, addr: c.GRPCAddr})
		return nil
	}
	if err := start("extauthz"); err != nil {
		return err
	}
	if *variant != "" {
		if err := start("extauthz "+*variant, strings.Fields(*variant)...); err != nil {
			return err
		}
	}
	if *varBin != "" {
		if err := start("variant"); err != nil {
			return err
		}
	}
	n, err := loadtest.StartNoop(ctx, *noopBin, time.Minute)
	if err != nil {
		return err
	}
	servers = append(servers, &server{name: "no-op", child: n, addr: n.GRPCAddr})
	hz, _ := loadtest.ClockTicks()

	call := func(s *server, mix string, c, total int) (ghzResult, time.Duration, uint64, error) {
		s0, err := loadtest.ReadProcCPU(s.child.Pid())
		if err != nil {
			return ghzResult{}, 0, 0, err
		}
		cmd := exec.CommandContext(ctx, *ghz, "--insecure", "--protoset", protoset, "--call", "envoy.service.auth.v3.Authorization/Check",
			"--data-file", data[mix], "-c", strconv.Itoa(c), "-n", strconv.Itoa(total), "--connections", strconv.Itoa(min(*conns, c)),
			"--format", "json", s.addr)
		out, err := cmd.Output()
		if err != nil {
			return ghzResult{}, 0, 0, fmt.Errorf("ghz against %s: %w", s.name, err)
		}
		s1, err := loadtest.ReadProcCPU(s.child.Pid())
		if err != nil {
			return ghzResult{}, 0, 0, err
		}
		var res ghzResult
		if err := json.Unmarshal(out, &res); err != nil {
			return ghzResult{}, 0, 0, fmt.Errorf("ghz output: %w", err)
		}
		cpu := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
		return res, cpu, s1.Ticks() - s0.Ticks(), nil
	}

	// Warm up: every server and mix once.
	for _, s := range servers {
		for _, m := range mixNames {
			if _, _, _, err := call(s, m, slices.Max(concs), 2000); err != nil {
				return err
			}
		}
	}
	cells := map[string]*cell{}
	key := func(s *server, mix string, c int) string { return fmt.Sprintf("%s|%s|%d", s.name, mix, c) }
	for _, mix := range mixNames {
		for _, c := range concs {
			for r := range *rounds {
				for _, s := range servers {
					res, cpu, ticks, err := call(s, mix, c, *requests)
					if err != nil {
						return err
					}
					k := key(s, mix, c)
					if cells[k] == nil {
						cells[k] = &cell{}
					}
					cl := cells[k]
					cl.checks += res.Count
					cl.errors += res.errors()
					cl.serverTicks += ticks
					cl.ghzCPU += cpu
					cl.elapsed += time.Duration(res.Total)
					cl.p50s = append(cl.p50s, res.percentile(50))
					cl.p99s = append(cl.p99s, res.percentile(99))
					cl.rates = append(cl.rates, res.RPS)
					fmt.Fprintf(os.Stderr, "%s %s c=%d round %d: %d checks, %.0f/s, p99 %.2f ms, server %d ticks, ghz %s\n",
						s.name, mix, c, r+1, res.Count, res.RPS, res.percentile(99)/1e6, ticks, cpu.Round(time.Millisecond))
				}
			}
		}
	}

	tick := float64(time.Second) / float64(hz)
	perCheck := func(cl *cell) (server, client float64) {
		if cl.checks == 0 {
			return 0, 0
		}
		return float64(cl.serverTicks) * tick / float64(cl.checks) / 1e3, float64(cl.ghzCPU) / float64(cl.checks) / 1e3
	}
	m := loadtest.ReadMachine()
	fmt.Printf("ghz %d checks per server, mix, level and round, %d rounds interleaved, %d connections; %d CPUs, %s, %s.\n\n",
		*requests, *rounds, *conns, m.NumCPU, m.CPUModel, m.GoVersion)
	fmt.Println("| mix | c | server | checks/s | p50 | p99 | server CPU/check | vs no-op | ghz CPU/check | errors |")
	fmt.Println("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
	floor := servers[len(servers)-1]
	for _, mix := range mixNames {
		for _, c := range concs {
			fs, _ := perCheck(cells[key(floor, mix, c)])
			for _, s := range servers {
				cl := cells[key(s, mix, c)]
				sc, gc := perCheck(cl)
				fmt.Printf("| %s | %d | %s | %.1fk | %.2f ms | %.2f ms | %.1f µs | %.2f× | %.1f µs | %d |\n", mix, c, s.name,
					float64(cl.checks)/cl.elapsed.Seconds()/1e3, median(cl.p50s)/1e6, median(cl.p99s)/1e6, sc, sc/fs, gc, cl.errors)
			}
		}
	}
	fmt.Println("\nServer CPU/check: the server process's utime+stime (/proc/<pid>/stat) over its rounds / checks; ghz CPU/check: ghz's own user+system time (rusage) / checks; p50 and p99: the median round's.")
	return nil
}

type ghzResult struct {
	Count   int     `json:"count"`
	Total   int64   `json:"total"` // ns
	RPS     float64 `json:"rps"`
	Latency []struct {
		Percentage int   `json:"percentage"`
		Latency    int64 `json:"latency"` // ns
	} `json:"latencyDistribution"`
	Status map[string]int `json:"statusCodeDistribution"`
}

func (r ghzResult) percentile(p int) float64 {
	for _, l := range r.Latency {
		if l.Percentage == p {
			return float64(l.Latency)
		}
	}
	return 0
}

func (r ghzResult) errors() int {
	n := 0
	for code, c := range r.Status {
		if code != "OK" {
			n += c
		}
	}
	return n
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	return s[len(s)/2]
}

// writeProtoset writes envoy.service.auth.v3's file and every file it
// imports, dependencies first, as a FileDescriptorSet.
func writeProtoset(path string) error {
	var set descriptorpb.FileDescriptorSet
	seen := map[string]bool{}
	var add func(fd protoreflect.FileDescriptor)
	add = func(fd protoreflect.FileDescriptor) {
		if seen[fd.Path()] {
			return
		}
		seen[fd.Path()] = true
		imports := fd.Imports()
		for i := range imports.Len() {
			add(imports.Get(i).FileDescriptor)
		}
		set.File = append(set.File, protodesc.ToFileDescriptorProto(fd))
	}
	add(authv3.File_envoy_service_auth_v3_external_auth_proto)
	b, err := proto.Marshal(&set)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// writeData writes m's requests in schedule order as a JSON array (ghz sends
// them round robin), each with a fresh x-request-id from ghz's template.
func writeData(path string, m *loadtest.Mix) error {
	var msgs []json.RawMessage
	for _, ci := range m.Schedule {
		r := m.Cases[ci].Request()
		id := "ghz-{{.RequestNumber}}"
		r.Attributes.Request.Http.Headers["x-request-id"] = id
		r.Attributes.Request.Http.Id = id
		b, err := protojson.Marshal(r)
		if err != nil {
			return err
		}
		msgs = append(msgs, b)
	}
	b, err := json.Marshal(msgs)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}
