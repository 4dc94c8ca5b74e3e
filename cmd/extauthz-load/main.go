// Command extauthz-load is extauthz's load driver. It builds (or takes) the
// extauthz and extauthz-noop binaries, runs each as a child process on
// loopback, drives both with the same Envoy-like CheckRequest mix over gRPC
// and prints a Markdown report (throughput, latency percentiles, server CPU
// per check, RSS, and the extauthz/no-op ratios) on stdout.
//
// --sweep keys|tenants|routes measures extauthz on generated policies of
// growing size in one dimension (API keys 10 → 1M, tenants with IP
// allowlists 1 → 10k, routes 10 → 1k; --sweep-sizes overrides), the other
// two fixed by --scale. Sweeps use mix scale_allow unless --mix says
// otherwise: allows spread over the generated keys, each with its tenant's
// header, from an address in that tenant's allowlist, on generated routes.
//
//	go run ./cmd/extauthz-load --mix blend --concurrency 16,64 --requests 60000
//	go run ./cmd/extauthz-load --smoke
//	go run ./cmd/extauthz-load --scale keys=1000000,tenants=10000,routes=1000 --mix scale_allow
//	go run ./cmd/extauthz-load --sweep keys
//	go run ./cmd/extauthz-load --sweep tenants --scale keys=10k
//	go run ./cmd/extauthz-load --sweep routes --sweep-sizes 10,1k
//	go run ./cmd/extauthz-load --extauthz-arg=--decision-log=none
//	go run ./cmd/extauthz-load --compare apikey_allow,deny_missing,deny_tenant,deny_scope
//	go run ./cmd/extauthz-load --decode-full --variant-arg=--reply-metadata=full
//
// --opa-envoy-plugin BIN compares extauthz's OPA-Envoy compatibility mode
// with the OPA-Envoy plugin (a binary built outside this repository from
// its public source): the same plugin-style policies (--plugin-policies:
// path, jwt, body, time), the same requests, rounds alternating the two
// processes; it reports server CPU per check and the extauthz/plugin ratio.
// Decisions are checked: a deny extauthz gave with reason internal_error
// after at least its own deadline (the earlier of --eval-timeout and
// --check-timeout, read from --extauthz-arg) is counted as failed closed
// at the deadline, an overloaded machine's answer, not as an unexpected
// decision; answers later than Envoy's ext_authz timeout (0.25s) are
// counted for both servers. Every sampled case prints its status, reason
// and latency.
//
//	go run ./cmd/extauthz-load --opa-envoy-plugin /path/to/opa-envoy-plugin --extauthz-arg=--decision-log=none
//
// --compare drives several mixes against the same two server processes,
// interleaved over --rounds rounds, and reports each mix's cost against the
// first one's: the way to see whether a deny costs more than an allow.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/extauthz/extauthz/internal/loadtest"
)

const defaultJWT = "testdata/demo.jwt"

func main() {
	os.Exit(run())
}

func run() int {
	var (
		cfg        loadtest.Config
		conc       = flag.String("concurrency", "16,64", "comma-separated worker counts, one level each")
		jwtPath    = flag.String("jwt", defaultJWT, "file with the demo JWT (for mixes jwt_allow and blend)")
		scaleSpec  = flag.String("scale", "", "generate a scaled policy: keys=N,tenants=N,routes=N (k and M suffixes allowed)")
		sweep      = flag.String("sweep", "", "sweep one dimension of a generated policy: keys, tenants or routes (the others from --scale; tenants and routes sweeps default to keys=10000)")
		sweepSizes = flag.String("sweep-sizes", "", "sizes for --sweep (default: keys 10,1k,100k,1M; tenants 1,100,10k; routes 10,100,1k)")
		memory     = flag.Bool("memory", false, "memory of extauthz on the --scale policy: RSS at start, idle, and through a reload with the same keys and one with a changed key set, a fresh process per --rounds")
		smoke      = flag.Bool("smoke", false, "correctness smoke: a few hundred checks per server at concurrency 4; fails on any error or unexpected decision")
		quiet      = flag.Bool("quiet", false, "no progress lines on stderr")
		keepBins   = flag.String("bin-dir", "", "build the binaries here (default: a temporary directory)")
		compare    = flag.String("compare", "", "comma-separated mixes to compare against the same server processes, the first as baseline (e.g. apikey_allow,deny_tenant)")
		pluginBin  = flag.String("opa-envoy-plugin", "", "compare with the OPA-Envoy plugin: its binary (built outside the repository)")
		pluginPols = flag.String("plugin-policies", strings.Join(loadtest.PluginPolicies(), ","), "policies for --opa-envoy-plugin")
		pluginJWT  = flag.Int("plugin-jwt-verify-cache", 0, "with --opa-envoy-plugin: extauthz's settings.jwt_verify_cache (0: off, as the plugin)")
		pluginArgs []string
		rounds     = flag.Int("rounds", 3, "rounds for --compare and --sweep (and for a plain run when given): every mix, size or server once per round, interleaved; --requests is per round")
	)
	flag.StringVar(&cfg.Mix, "mix", "blend", "request mix: "+strings.Join(loadtest.MixNames(), ", ")+
		"; scale_allow (the default for --sweep) sends allows spread over a --scale policy's generated keys, tenant allowlists and routes")
	flag.IntVar(&cfg.Requests, "requests", 0, "checks per server and level (default 60000; 20000 per round and size for --sweep or mix for --compare; 300 for --smoke)")
	flag.IntVar(&cfg.Warmup, "warmup", 0, "warm-up checks per server (default min(requests/10, 3000))")
	flag.DurationVar(&cfg.MaxDuration, "max-duration", 0, "safety bound per level (default 90s; 30s for --smoke)")
	flag.IntVar(&cfg.Conns, "conns", 4, "client connections per server, shared by the workers")
	flag.StringVar(&cfg.ExtauthzBin, "extauthz-bin", "", "extauthz binary (default: go build ./cmd/extauthz)")
	flag.StringVar(&cfg.NoopBin, "noop-bin", "", "no-op server binary (default: go build ./cmd/extauthz-noop)")
	flag.StringVar(&cfg.PolicyDir, "policy-dir", "", "policy directory passed to extauthz (default: its embedded demo policy)")
	flag.Func("extauthz-arg", "extra extauthz flag, repeatable (e.g. --extauthz-arg=--decision-log=none)", func(v string) error {
		cfg.ExtauthzArgs = append(cfg.ExtauthzArgs, v)
		return nil
	})
	flag.Func("plugin-arg", "extra flag for the plugin's run command, repeatable", func(v string) error {
		pluginArgs = append(pluginArgs, v)
		return nil
	})
	flag.Func("variant-arg", "start a second extauthz with this extra flag too (repeatable), driven in the same rounds: e.g. --variant-arg=--reply-metadata=full", func(v string) error {
		cfg.VariantArgs = append(cfg.VariantArgs, v)
		return nil
	})
	flag.StringVar(&cfg.VariantBin, "variant-bin", "", "start a second extauthz from this binary (another build, e.g. main's), driven in the same rounds; with --variant-arg, with those flags")
	flag.BoolVar(&cfg.DecodeFull, "decode-full", false, "decode every reply whole, as Envoy does, instead of reading only the decision (driver CPU/check then shows what the reply's size costs a client)")
	flag.DurationVar(&cfg.ReadyTimeout, "ready-timeout", 0, "bound on server startup (default 60s; 5m for --sweep)")
	flag.Parse()
	if flag.NArg() > 0 {
		return usage("unexpected arguments: %s", strings.Join(flag.Args(), " "))
	}

	cfg.Log = os.Stderr
	if *quiet {
		cfg.Log = io.Discard
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	if !*smoke || flagSet("concurrency") {
		levels, err := parseList(*conc)
		if err != nil {
			return usage("concurrency: %v", err)
		}
		cfg.Concurrency = levels
	}
	var scale loadtest.Scale
	if *scaleSpec != "" {
		if err := loadtest.ParseScale(*scaleSpec, &scale); err != nil {
			return usage("%v", err)
		}
		if cfg.PolicyDir != "" {
			return usage("--scale generates a policy; it cannot be combined with --policy-dir")
		}
	}
	var dim loadtest.Dim
	var sizes []int
	if *sweep != "" {
		d, err := loadtest.ParseDim(*sweep)
		if err != nil {
			return usage("sweep: %v", err)
		}
		dim = d
		if *smoke {
			return usage("--sweep and --smoke are exclusive")
		}
		if cfg.PolicyDir != "" {
			return usage("--sweep generates its policies; it cannot be combined with --policy-dir")
		}
		if *sweepSizes != "" {
			if sizes, err = parseList(*sweepSizes); err != nil {
				return usage("sweep-sizes: %v", err)
			}
		}
		if !flagSet("mix") {
			cfg.Mix = loadtest.ScaleMix
		}
	} else if *sweepSizes != "" {
		return usage("--sweep-sizes needs --sweep")
	}
	cfg.Scale = scale
	var compared []string
	if *compare != "" {
		if *smoke || dim != "" {
			return usage("--compare cannot be combined with --smoke or --sweep")
		}
		compared = strings.Split(*compare, ",")
		if cfg.Requests == 0 {
			cfg.Requests = 20000
		}
		if slices.ContainsFunc(compared, loadtest.NeedsJWT) {
			cfg.Mix = "jwt_allow" // read the token below
		}
	}

	if *memory && (scale.Keys == 0 || *smoke || dim != "" || *compare != "" || cfg.PolicyDir != "") {
		return usage("--memory needs --scale (e.g. keys=1M) and no --smoke, --sweep, --compare or --policy-dir")
	}

	if (len(cfg.VariantArgs) > 0 || cfg.VariantBin != "") && (dim != "" || *compare != "") {
		return usage("--variant-arg and --variant-bin apply to a plain run, not to --compare or --sweep")
	}

	if loadtest.NeedsJWT(cfg.Mix) {
		tok, err := readJWT(*jwtPath)
		if err != nil {
			return fail(err)
		}
		cfg.JWT = tok
	}

	tmp, err := os.MkdirTemp("", "extauthz-load-")
	if err != nil {
		return fail(err)
	}
	defer os.RemoveAll(tmp)
	if cfg.ExtauthzBin == "" || cfg.NoopBin == "" {
		root, err := loadtest.ModuleRoot()
		if err != nil {
			return fail(fmt.Errorf("finding the module to build: %w (or pass --extauthz-bin and --noop-bin)", err))
		}
		out := *keepBins
		if out == "" {
			out = tmp
		}
		fmt.Fprintf(cfg.Log, "building ./cmd/extauthz and ./cmd/extauthz-noop into %s\n", out)
		t0 := time.Now()
		ex, noop, err := loadtest.Build(ctx, root, out)
		if err != nil {
			return fail(err)
		}
		fmt.Fprintf(cfg.Log, "built in %s\n", time.Since(t0).Round(time.Millisecond))
		if cfg.ExtauthzBin == "" {
			cfg.ExtauthzBin = ex
		}
		if cfg.NoopBin == "" {
			cfg.NoopBin = noop
		}
	}

	if *memory {
		if cfg.ReadyTimeout == 0 {
			cfg.ReadyTimeout = 5 * time.Minute
		}
		r, err := loadtest.Memory(ctx, cfg, scale, tmp, *rounds)
		if r != nil {
			r.Markdown(os.Stdout)
		}
		if err != nil {
			return fail(err)
		}
		return 0
	}

	if dim != "" {
		r, err := loadtest.Sweep(ctx, cfg, dim, sizes, scale, tmp, *rounds)
		if r != nil {
			r.Markdown(os.Stdout)
		}
		if err != nil {
			return fail(err)
		}
		return exitFor(r.Problems())
	}

	if !scale.Zero() {
		dir := filepath.Join(tmp, "policy")
		fmt.Fprintf(cfg.Log, "writing a scaled policy (keys=%d tenants=%d routes=%d) to %s\n", scale.Keys, scale.Tenants, scale.Routes, dir)
		if err := loadtest.WriteScaledPolicy(dir, scale.Keys, scale.Tenants, scale.Routes); err != nil {
			return fail(err)
		}
		cfg.PolicyDir = dir
		if cfg.ReadyTimeout == 0 {
			cfg.ReadyTimeout = 5 * time.Minute
		}
	}

	if *pluginBin != "" {
		if compared != nil || *smoke || dim != "" || !scale.Zero() {
			return usage("--opa-envoy-plugin cannot be combined with --compare, --smoke, --sweep or --scale")
		}
		pc := loadtest.PluginConfig{Config: cfg, PluginBin: *pluginBin, PluginArgs: pluginArgs, Policies: strings.Split(*pluginPols, ","), JWTVerifyCache: *pluginJWT}
		if pc.Requests == 0 {
			pc.Requests = 10000
		}
		pc.Rounds = *rounds
		r, err := loadtest.VersusPlugin(ctx, pc)
		if r != nil {
			r.Markdown(os.Stdout)
		}
		if err != nil {
			return fail(err)
		}
		for _, p := range r.Problems() {
			fmt.Fprintln(os.Stderr, "extauthz-load:", p)
		}
		for _, n := range r.Notes() {
			fmt.Fprintln(os.Stderr, "extauthz-load: note:", n)
		}
		return exitFor(r.Problems())
	}

	if compared != nil {
		r, err := loadtest.Compare(ctx, cfg, compared, *rounds)
		if err != nil {
			return fail(err)
		}
		r.Markdown(os.Stdout)
		return exitFor(r.Problems())
	}

	if *smoke {
		r, err := loadtest.Smoke(ctx, cfg)
		if r != nil {
			r.Markdown(os.Stdout)
		}
		if err != nil {
			return fail(fmt.Errorf("smoke failed: %w", err))
		}
		fmt.Fprintln(os.Stderr, "smoke: ok (no gRPC errors, no unexpected decisions)")
		return 0
	}
	if flagSet("rounds") {
		cfg.Rounds = *rounds
	}
	r, err := loadtest.Run(ctx, cfg)
	if err != nil {
		return fail(err)
	}
	r.Markdown(os.Stdout)
	return exitFor(r.Problems())
}

// exitFor fails the run when a server gave errors or wrong decisions; a level
// stopped by its time bound, or checks extauthz failed closed at its own
// deadline (an overloaded machine), are reported but are not a failure.
func exitFor(problems []string) int {
	for _, p := range problems {
		if !strings.Contains(p, "max duration") && !strings.Contains(p, loadtest.FailedAtDeadline) {
			return 1
		}
	}
	return 0
}

func readJWT(p string) (string, error) {
	tok, err := loadtest.ReadJWT(p)
	if err == nil || p != defaultJWT || !errors.Is(err, os.ErrNotExist) {
		return tok, err
	}
	root, rerr := loadtest.ModuleRoot()
	if rerr != nil {
		return "", err
	}
	return loadtest.ReadJWT(filepath.Join(root, defaultJWT))
}

func parseList(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := loadtest.ParseCount(f)
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			return nil, fmt.Errorf("%d: must be positive", n)
		}
		out = append(out, n)
	}
	return out, nil
}

func flagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func usage(format string, a ...any) int {
	fmt.Fprintf(os.Stderr, "extauthz-load: "+format+"\n", a...)
	return 2
}

func fail(err error) int {
	fmt.Fprintln(os.Stderr, "extauthz-load:", err)
	return 1
}
