package loadtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	gojwt "github.com/golang-jwt/jwt/v5"
)

// The OPA-Envoy plugin comparison (VersusPlugin): extauthz in its OPA-Envoy
// compatibility mode and the OPA-Envoy plugin itself (opa-envoy-plugin,
// built from its public source outside this repository), each running the
// same Rego policy, driven with the same Envoy-shaped CheckRequests,
// rounds alternating the two processes.

// PluginPolicy is a policy written for the OPA-Envoy plugin, in the style
// of its documentation, with the requests that exercise it.
type PluginPolicy struct {
	Name, Desc string
	Rego       string
	// cases builds the requests; now is when the run starts (JWTs).
	cases func(now time.Time) ([]Case, []int, error)
}

const pluginPathRego = `package envoy.authz

import input.attributes.request.http as http_request

default allow := false

allow if {
	http_request.method == "GET"
	input.parsed_path[0] == "people"
	http_request.headers["x-api-version"] == "2"
}

allow if {
	http_request.method == "POST"
	input.parsed_path == ["people"]
	startswith(http_request.headers["user-agent"], "orders-client/")
}
`

// The plugin docs' JWT example: the token decoded and verified (HS256) in Rego.
const pluginJWTRego = `package envoy.authz

import input.attributes.request.http as http_request

default allow := false

token := {"valid": valid, "payload": payload} if {
	[_, encoded] := split(http_request.headers.authorization, " ")
	[valid, _, payload] := io.jwt.decode_verify(encoded, {"secret": "secret"})
}

allow if {
	is_token_valid
	action_allowed
}

is_token_valid if {
	token.valid
	now := time.now_ns() / 1000000000
	token.payload.nbf <= now
	now < token.payload.exp
}

action_allowed if {
	http_request.method == "GET"
	token.payload.role == "guest"
	glob.match("/people/*", ["/"], http_request.path)
}

action_allowed if {
	http_request.method == "GET"
	token.payload.role == "admin"
	glob.match("/people*", [], http_request.path)
}
`

const pluginBodyRego = `package envoy.authz

import input.attributes.request.http as http_request

default allow := false

allow if {
	http_request.method == "POST"
	input.parsed_path == ["people"]
	input.parsed_body.firstname == "Charlie"
	count(input.parsed_body.tags) <= 5
	not input.truncated_body
}
`

const pluginTimeRego = `package envoy.authz

import input.attributes.request.http as http_request

default allow := false

business_days := {"Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"}

allow if {
	http_request.method == "GET"
	now := time.now_ns()
	business_days[time.weekday(now)]
	[hour, _, _] := time.clock([now, "Europe/Berlin"])
	hour >= 0
	now < time.parse_rfc3339_ns(http_request.headers["x-valid-until"])
}
`

// PluginPolicies lists the policies VersusPlugin knows, by name.
func PluginPolicies() []string { return []string{"path", "jwt", "body", "time"} }

func pluginPolicy(name string) (*PluginPolicy, error) {
	one := func(cs ...Case) func(time.Time) ([]Case, []int, error) {
		return func(time.Time) ([]Case, []int, error) {
			w := make([]int, len(cs))
			for i := range w {
				w[i] = 1
			}
			w[0] = 9 // the allow: 9 in 10
			return cs, w, nil
		}
	}
	switch name {
	case "path":
		return &PluginPolicy{Name: name, Desc: "method and path rules on input.attributes.request.http and parsed_path", Rego: pluginPathRego,
			cases: one(
				Case{Name: "path_allow", Method: "GET", Path: "/people/17?fields=name", Headers: map[string]string{"x-api-version": "2"}, Want: 200},
				Case{Name: "path_deny", Method: "DELETE", Path: "/people/17", Headers: map[string]string{"x-api-version": "2"}, Want: 403},
			)}, nil
	case "jwt":
		return &PluginPolicy{Name: name, Desc: "the docs' JWT example: HS256 verified in Rego, claims, glob on the path", Rego: pluginJWTRego,
			cases: func(now time.Time) ([]Case, []int, error) {
				tok := func(role string, key string) (string, error) {
					return gojwt.NewWithClaims(gojwt.SigningMethodHS256, gojwt.MapClaims{
						"role": role, "sub": "alice", "nbf": now.Unix() - 60, "exp": now.Add(24 * time.Hour).Unix(),
					}).SignedString([]byte(key))
				}
				guest, err := tok("guest", "secret")
				if err != nil {
					return nil, nil, err
				}
				admin, _ := tok("admin", "secret")
				forged, _ := tok("admin", "not-the-secret")
				return []Case{
					{Name: "jwt_guest", Method: "GET", Path: "/people/17", Headers: map[string]string{"authorization": "Bearer " + guest}, Want: 200},
					{Name: "jwt_admin", Method: "GET", Path: "/people", Headers: map[string]string{"authorization": "Bearer " + admin}, Want: 200},
					{Name: "jwt_forged", Method: "GET", Path: "/people", Headers: map[string]string{"authorization": "Bearer " + forged}, Want: 403},
				}, []int{5, 4, 1}, nil
			}}, nil
	case "body":
		return &PluginPolicy{Name: name, Desc: "input.parsed_body of a JSON POST", Rego: pluginBodyRego,
			cases: one(
				Case{Name: "body_allow", Method: "POST", Path: "/people", Headers: map[string]string{"content-type": "application/json"},
					Body: `{"firstname": "Charlie", "lastname": "Brown", "age": 8, "tags": ["a", "b"], "address": {"city": "Minneapolis", "zip": "55401"}}`, Want: 200},
				Case{Name: "body_deny", Method: "POST", Path: "/people", Headers: map[string]string{"content-type": "application/json"},
					Body: `{"firstname": "Lucy", "lastname": "van Pelt", "age": 9, "tags": [], "address": {"city": "Minneapolis", "zip": "55401"}}`, Want: 403},
			)}, nil
	case "time":
		return &PluginPolicy{Name: name, Desc: "time builtins: time.now_ns, time.weekday, time.clock with a zone, time.parse_rfc3339_ns of a header", Rego: pluginTimeRego,
			cases: one(
				Case{Name: "time_allow", Method: "GET", Path: "/reports/daily", Headers: map[string]string{"x-valid-until": "2099-12-31T23:59:59Z"}, Want: 200},
				Case{Name: "time_expired", Method: "GET", Path: "/reports/daily", Headers: map[string]string{"x-valid-until": "2020-01-01T00:00:00Z"}, Want: 403},
			)}, nil
	}
	return nil, fmt.Errorf("plugin policy %q: unknown (known: %s)", name, strings.Join(PluginPolicies(), ", "))
}

// pluginMix is the mix of a plugin policy: its cases in a shuffled
// schedule with exact proportions.
func pluginMix(p *PluginPolicy, now time.Time) (*Mix, error) {
	cs, w, err := p.cases(now)
	if err != nil {
		return nil, err
	}
	return newMix("opa_envoy_"+p.Name, cs, w), nil
}

// StartPlugin starts the OPA-Envoy plugin binary on policyFile, its
// ext_authz gRPC server on a free loopback port with the plugin's default
// decision path (envoy/authz/allow) and no decision logs, and waits until
// its health endpoint says the plugin is up. extra are appended to its
// run command.
func StartPlugin(ctx context.Context, bin, policyFile string, timeout time.Duration, extra ...string) (*Child, error) {
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	grpcAddr := fmt.Sprintf("127.0.0.1:%d", ports[0])
	httpAddr := fmt.Sprintf("127.0.0.1:%d", ports[1])
	args := []string{"run", "--server", "--addr", httpAddr, "--log-level", "error",
		"--set", "plugins.envoy_ext_authz_grpc.addr=" + grpcAddr,
		"--set", "plugins.envoy_ext_authz_grpc.path=envoy/authz/allow",
		"--set", "decision_logs.console=false"}
	args = append(append(args, extra...), policyFile)
	t0 := time.Now()
	c, err := start(ctx, "opa-envoy-plugin", bin, args, io.Discard)
	if err != nil {
		return nil, err
	}
	c.GRPCAddr = grpcAddr
	if err := waitReady(ctx, c, "http://"+httpAddr+"/health?plugins", timeout); err != nil {
		c.Stop()
		return nil, err
	}
	c.Ready = time.Since(t0)
	return c, nil
}

// PluginConfig is a VersusPlugin run: Config's servers, levels, requests,
// rounds and warm-up, plus the plugin.
type PluginConfig struct {
	Config
	PluginBin  string   // the opa-envoy-plugin binary
	PluginArgs []string // extra flags for its run command
	Policies   []string // PluginPolicies names; default all
	// JWTVerifyCache is extauthz's settings.jwt_verify_cache in the
	// policies' data (0: off, the default). The plugin has no such cache:
	// it gives OPA no inter-query value cache.
	JWTVerifyCache int
}

// PluginRow is one policy at one level: Servers[0] extauthz, Servers[1]
// the plugin, their rounds merged.
type PluginRow struct {
	Policy, Desc, MixDesc string
	Concurrency           int
	Servers               [2]Level
}

// PluginReport is one VersusPlugin run.
type PluginReport struct {
	Requests, Rounds, Conns int
	ExtauthzArgs            []string
	PluginBin, PluginVer    string
	JWTVerifyCache          int // extauthz's settings.jwt_verify_cache
	Machine                 Machine
	ClockTicks              int
	ClockTicksAssumed       bool
	// Deadline is extauthz's own deadline for a check (Child.FailClosedAfter).
	Deadline time.Duration
	Rows     []PluginRow
}

// VersusPlugin runs, for each policy in turn, extauthz (OPA-Envoy mode,
// settings.opa_envoy_path) and the plugin on the same Rego, warms both up,
// then at each concurrency level alternates them over cfg.Rounds rounds
// with the same requests. Both servers' decisions are checked against the
// cases' (the plugin answers false with 403, as extauthz does).
func VersusPlugin(ctx context.Context, cfg PluginConfig) (*PluginReport, error) {
	cfg.defaults()
	if cfg.ExtauthzBin == "" || cfg.PluginBin == "" {
		return nil, errors.New("loadtest: ExtauthzBin and PluginBin are required")
	}
	if len(cfg.Policies) == 0 {
		cfg.Policies = PluginPolicies()
	}
	var pols []*PluginPolicy
	for _, n := range cfg.Policies {
		p, err := pluginPolicy(n)
		if err != nil {
			return nil, err
		}
		pols = append(pols, p)
	}
	hz, assumed := ClockTicks()
	r := &PluginReport{Requests: cfg.Requests, Rounds: cfg.Rounds, Conns: cfg.Conns, ExtauthzArgs: cfg.ExtauthzArgs, JWTVerifyCache: cfg.JWTVerifyCache,
		PluginBin: cfg.PluginBin, PluginVer: pluginVersion(ctx, cfg.PluginBin), Machine: ReadMachine(), ClockTicks: hz, ClockTicksAssumed: assumed}
	tmp, err := os.MkdirTemp("", "extauthz-vs-plugin-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	var seq uint64
	for _, p := range pols {
		rows, err := versusOne(ctx, &cfg, p, tmp, hz, &seq)
		if err != nil {
			return r, fmt.Errorf("policy %s: %w", p.Name, err)
		}
		r.Rows = append(r.Rows, rows...)
	}
	r.Deadline = extauthzDeadline(cfg.ExtauthzArgs)
	return r, nil
}

func versusOne(ctx context.Context, cfg *PluginConfig, p *PluginPolicy, tmp string, hz int, seq *uint64) ([]PluginRow, error) {
	mix, err := pluginMix(p, time.Now())
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(tmp, p.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	rego := filepath.Join(dir, "policy.rego")
	if err := os.WriteFile(rego, []byte(p.Rego), 0o644); err != nil {
		return nil, err
	}
	data := `{"extauthz": {"settings": {"opa_envoy_path": "envoy/authz/allow"}}}`
	if cfg.JWTVerifyCache > 0 { // only then: an older extauthz does not know the setting
		data = fmt.Sprintf(`{"extauthz": {"settings": {"opa_envoy_path": "envoy/authz/allow", "jwt_verify_cache": %d}}}`, cfg.JWTVerifyCache)
	}
	if err := os.WriteFile(filepath.Join(dir, "data.json"), []byte(data), 0o644); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c, err := StartExtauthz(ctx, cfg.ExtauthzBin, dir, cfg.ReadyTimeout, cfg.ExtauthzArgs...)
	if err != nil {
		return nil, err
	}
	exT, err := newTarget(c, cfg.Conns, true)
	if err != nil {
		return nil, err
	}
	defer exT.close()
	pc, err := StartPlugin(ctx, cfg.PluginBin, rego, cfg.ReadyTimeout, cfg.PluginArgs...)
	if err != nil {
		return nil, err
	}
	plT, err := newTarget(pc, cfg.Conns, true)
	if err != nil {
		return nil, err
	}
	defer plT.close()
	fmt.Fprintf(cfg.Log, "policy %s: %s\n", p.Name, mix.Describe())
	jobs := []job{{exT, mix}, {plT, mix}}
	for _, j := range jobs {
		if err := warm(ctx, &cfg.Config, mix, j.t, seq); err != nil {
			return nil, err
		}
	}
	var rows []PluginRow
	for _, conc := range cfg.Concurrency {
		levels, err := runRounds(ctx, &cfg.Config, jobs, conc, cfg.Rounds, hz, seq)
		if err != nil {
			return nil, err
		}
		rows = append(rows, PluginRow{Policy: p.Name, Desc: p.Desc, MixDesc: mix.Describe(), Concurrency: conc, Servers: [2]Level{levels[0], levels[1]}})
	}
	return rows, nil
}

// pluginVersion is the first line of the plugin's version command.
func pluginVersion(ctx context.Context, bin string) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "version").Output()
	if err != nil {
		return "unknown"
	}
	first, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(first)
}

// Problems lists both servers' errors and unexpected decisions. Checks
// extauthz failed closed at its deadline (Outcome.Deadline) are not
// problems: an overloaded machine's answer, reported in the table.
func (r *PluginReport) Problems() []string {
	var out []string
	for _, row := range r.Rows {
		for i, l := range row.Servers {
			if l.Errors > 0 || l.Unexpected > 0 {
				out = append(out, fmt.Sprintf("%s %s c=%d: %d gRPC errors, %d unexpected decisions, e.g. %v %v",
					[]string{"extauthz", "plugin"}[i], row.Policy, row.Concurrency, l.Errors, l.Unexpected, l.ErrorSamples, l.UnexpectedSamples))
			}
		}
	}
	return out
}

// Notes describes what is not a problem but explains the table: the
// checks extauthz failed closed at its deadline, with examples.
func (r *PluginReport) Notes() []string {
	var out []string
	for _, row := range r.Rows {
		if l := row.Servers[0]; l.Deadline > 0 {
			out = append(out, fmt.Sprintf("extauthz %s c=%d: %d checks failed closed at the deadline (%s), e.g. %v",
				row.Policy, row.Concurrency, l.Deadline, fmtDur(r.Deadline), l.DeadlineSamples))
		}
	}
	return out
}

// Markdown writes the comparison: per policy and level, each server's CPU
// per check and their ratio, throughput and latency.
func (r *PluginReport) Markdown(w io.Writer) {
	fmt.Fprintf(w, "### extauthz (OPA-Envoy mode) vs the OPA-Envoy plugin: %d checks per policy, server, level and round; %d rounds, alternating; %d client connections\n\n",
		r.Requests, r.Rounds, r.Conns)
	fmt.Fprintf(w, "Plugin: `%s` (%s), no decision logs.", r.PluginBin, r.PluginVer)
	if len(r.ExtauthzArgs) > 0 {
		fmt.Fprintf(w, " %s", extauthzFlags(r.ExtauthzArgs))
	}
	if r.JWTVerifyCache > 0 {
		fmt.Fprintf(w, " extauthz's settings.jwt_verify_cache: %d (OPA's io_jwt cache; the plugin gives OPA none).", r.JWTVerifyCache)
	}
	fmt.Fprintln(w)
	r.Machine.markdown(w, r.ClockTicks, r.ClockTicksAssumed)
	fmt.Fprintln(w)
	var pols []string
	for _, row := range r.Rows {
		if !slices.Contains(pols, row.Policy) {
			pols = append(pols, row.Policy)
			fmt.Fprintf(w, "- `%s`: %s; %s\n", row.Policy, row.Desc, row.MixDesc)
		}
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "| policy | c | extauthz CPU/check | plugin CPU/check | extauthz/plugin | extauthz checks/s | plugin checks/s | extauthz p50 / p99 | plugin p50 / p99 | errors | unexpected | extauthz failed closed at its deadline | later than Envoy's timeout |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, row := range r.Rows {
		ex, pl := row.Servers[0], row.Servers[1]
		fmt.Fprintf(w, "| %s | %d | %s | %s | **%s** | %s | %s | %s / %s | %s / %s | %d / %d | %d / %d | %d | %d / %d |\n", row.Policy, row.Concurrency,
			fmtCPU(ex.CPUPerCheck), fmtCPU(pl.CPUPerCheck), ratio(float64(ex.CPUPerCheck), float64(pl.CPUPerCheck)),
			fmtRate(ex.Throughput()), fmtRate(pl.Throughput()),
			fmtDur(ex.Latency.P50), fmtDur(ex.Latency.P99), fmtDur(pl.Latency.P50), fmtDur(pl.Latency.P99),
			ex.Errors, pl.Errors, ex.Unexpected, pl.Unexpected, ex.Deadline, ex.Late, pl.Late)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "CPU/check is the server's utime+stime (/proc/<pid>/stat) over all rounds / checks completed; errors and unexpected are extauthz / plugin; p50 and p99 are the median over rounds of each round's client-side percentile.")
	fmt.Fprintf(w, "\nUnexpected: a decision other than the case's (an allow where a deny was expected, a deny of another status or reason). Failed closed at its deadline: extauthz denied internal_error after at least %s, its own deadline (the earlier of --eval-timeout and --check-timeout); the plugin has no deadline and answers however late. Later than Envoy's timeout: answers that took over %s (client side), which Envoy (ext_authz timeout 0.25s in envoy/envoy.yaml) would have denied itself, extauthz / plugin.\n",
		fmtDur(r.Deadline), fmtDur(EnvoyTimeout))
}
