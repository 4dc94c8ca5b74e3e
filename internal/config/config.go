// Package config is the process configuration: defaults, then an optional
// file (JSON or YAML), then EXTAUTHZ_* environment variables, then flags.
// Validate reports every problem at once.
package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/extauthz/extauthz/internal/grpcopts"
	"github.com/extauthz/extauthz/internal/jsonx"
)

// Config is everything the server needs that is not policy.
type Config struct {
	GRPCAddr  string `json:"grpc_addr"`  // host:port or unix:///path
	AdminAddr string `json:"admin_addr"` // /healthz, /readyz, /metrics; "" disables

	PolicyDir      string        `json:"policy_dir"`      // "" = embedded default policy and demo data
	BundleFile     string        `json:"bundle_file"`     // OPA bundle (.tar.gz or directory)
	BundleURL      string        `json:"bundle_url"`      // OPA bundle service URL, polled with ETag
	BundlePoll     time.Duration `json:"bundle_poll"`     // bundle URL poll interval
	BundlePubKey   string        `json:"bundle_pubkey"`   // PEM public key file: require signed bundles
	ReloadInterval time.Duration `json:"reload_interval"` // policy dir / bundle file change check; 0 disables

	XFFTrustedHops int           `json:"xff_trusted_hops"` // must equal Envoy's xff_num_trusted_hops
	EvalTimeout    time.Duration `json:"eval_timeout"`     // budget for the policy evaluation of one check
	CheckTimeout   time.Duration `json:"check_timeout"`    // deadline for the whole check (below Envoy's timeout)
	DrainTimeout   time.Duration `json:"drain_timeout"`    // graceful stop
	PrestopDelay   time.Duration `json:"prestop_delay"`    // on SIGTERM: not ready but still serving, before draining

	MaxRequestBytes int `json:"max_request_bytes"` // larger CheckRequests are denied request_too_large

	TLSCert     string `json:"tls_cert"`      // gRPC server certificate (PEM)
	TLSKey      string `json:"tls_key"`       // and key
	TLSClientCA string `json:"tls_client_ca"` // require client certificates signed by this CA (mTLS)

	Pprof bool `json:"pprof"` // serve /debug/pprof on the admin port

	// A candidate policy evaluated beside the serving one on a sample of
	// live checks (one of the three sources, or none).
	CandidateDir        string  `json:"candidate_dir"`
	CandidateBundleFile string  `json:"candidate_bundle_file"`
	CandidateBundleURL  string  `json:"candidate_bundle_url"`
	CandidateSampleRate float64 `json:"candidate_sample_rate"` // share of checks compared
	CandidateQueue      int     `json:"candidate_queue"`       // samples waiting at most; more are dropped

	LogLevel         string        `json:"log_level"`          // debug, info, warn, error
	FaultLogInterval time.Duration `json:"fault_log_interval"` // a repeated warning or error is logged once per interval, with a count
	DecisionLog      string        `json:"decision_log"`       // all, deny, none
	AllowSampleRate  float64       `json:"allow_sample_rate"`  // fraction of allows logged when decision_log is all
	// DecisionLogFacts adds to each decision record (and uploaded event)
	// the facts it was taken on, so that extauthz check --decision-log can
	// replay it (internal/replay).
	DecisionLogFacts bool `json:"decision_log_facts"`

	// ReplyMetadata is which fields the replies' dynamic metadata carries:
	// minimal (decision_id, reason, shadow_reason) or full (also
	// policy_version, profile, route and the verified identity).
	ReplyMetadata string `json:"reply_metadata"`

	// Decision logs uploaded to an OPA-compatible decision-log service by
	// OPA's decision_logs plugin: an OPA configuration file (services,
	// labels, decision_logs), and Rego for its mask and drop rules.
	DecisionLogServiceConfig string `json:"decision_log_service_config"`
	DecisionLogPolicy        string `json:"decision_log_policy"`
}

// Defaults.
func Defaults() Config {
	return Config{
		GRPCAddr:            "127.0.0.1:9001",
		AdminAddr:           "127.0.0.1:9002",
		BundlePoll:          30 * time.Second,
		ReloadInterval:      2 * time.Second,
		EvalTimeout:         100 * time.Millisecond,
		CheckTimeout:        200 * time.Millisecond,
		CandidateSampleRate: 0.01,
		CandidateQueue:      1024,
		DrainTimeout:        10 * time.Second,
		MaxRequestBytes:     grpcopts.DefaultMaxRequestBytes,
		LogLevel:            "info",
		FaultLogInterval:    10 * time.Second,
		DecisionLog:         "all",
		AllowSampleRate:     1,
		ReplyMetadata:       "minimal",
	}
}

// Load builds the configuration from args (without the program name) and
// the environment: defaults, then the --config file, then EXTAUTHZ_* variables,
// then flags. File keys and variables are the flag names (grpc_addr or
// grpc-addr; EXTAUTHZ_GRPC_ADDR) and go through the same parsers as flags.
func Load(name string, args []string, getenv func(string) string) (Config, error) {
	c := Defaults()
	fs := flagSet(name, &c)
	file := getenv("EXTAUTHZ_CONFIG")
	for i, a := range args {
		for _, p := range []string{"--config=", "-config="} {
			if v, ok := strings.CutPrefix(a, p); ok {
				file = v
			}
		}
		if (a == "--config" || a == "-config") && i+1 < len(args) {
			file = args[i+1]
		}
	}
	var errs []error
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return c, fmt.Errorf("config: %w", err)
		}
		// Strict: a key given twice (YAML or JSON) is an error, not the
		// last one silently.
		js, err := yaml.YAMLToJSONStrict(b)
		if err == nil {
			err = jsonx.Duplicates(js)
		}
		var m map[string]any
		if err == nil {
			dec := json.NewDecoder(bytes.NewReader(js))
			dec.UseNumber() // 1048576, not 1.048576e+06, reaches the flag
			err = dec.Decode(&m)
		}
		if err != nil {
			return c, fmt.Errorf("config file %s: %w", file, err)
		}
		for _, k := range slices.Sorted(maps.Keys(m)) {
			if err := set(fs, strings.ReplaceAll(k, "_", "-"), fmt.Sprint(m[k])); err != nil {
				errs = append(errs, fmt.Errorf("config file %s: %s: %w", file, k, err))
			}
		}
	}
	fs.VisitAll(func(f *flag.Flag) {
		env := "EXTAUTHZ_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v := getenv(env); v != "" && f.Name != "config" {
			if err := set(fs, f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", env, err))
			}
		}
	})
	if err := ParseAll(fs, args); errors.Is(err, flag.ErrHelp) {
		return c, flag.ErrHelp
	} else if err != nil {
		errs = append(errs, err)
	}
	// Every problem at once: a value that did not parse and one out of
	// range are reported together (the one that did not parse keeps its
	// default, so Validate says nothing false about it).
	return c, errors.Join(append(errs, c.Validate())...)
}

// set is fs.Set that names the value it refused and keeps the flag's
// previous value (a duration flag is otherwise left at 0, which Validate
// would report as a second, false, problem).
func set(fs *flag.FlagSet, name, value string) error {
	f := fs.Lookup(name)
	if f == nil {
		return fs.Set(name, value) // "no such flag"
	}
	prev := f.Value.String()
	if err := fs.Set(name, value); err != nil {
		_ = f.Value.Set(prev)
		return fmt.Errorf("invalid value %q: %w", value, err)
	}
	return nil
}

// ParseAll parses args into fs like fs.Parse, but goes on after a bad flag
// and reports every problem (unknown flags, bad values, stray arguments),
// joined. It returns flag.ErrHelp alone when -h, -help or --help is given.
// fs must be ContinueOnError; its output is not written to.
func ParseAll(fs *flag.FlagSet, args []string) error {
	for _, a := range args {
		if a == "--" {
			break
		}
		if a == "-h" || a == "-help" || a == "--help" || a == "--h" {
			return flag.ErrHelp
		}
	}
	out := fs.Output()
	fs.SetOutput(io.Discard)
	defer fs.SetOutput(out)
	// A value that does not parse leaves the flag as it was (the flag
	// package would leave a duration at 0, a second and false problem).
	was := map[string]string{}
	fs.VisitAll(func(f *flag.Flag) { was[f.Name] = f.Value.String() })
	var errs []error
	for rest := args; ; {
		err := fs.Parse(rest)
		if err == nil {
			if fs.NArg() > 0 {
				errs = append(errs, fmt.Errorf("unexpected arguments: %q", fs.Args()))
			}
			break
		}
		msg, _ := strings.CutPrefix(err.Error(), "flag provided but not defined: ")
		if msg != err.Error() {
			err = fmt.Errorf("unknown flag %s", msg)
		}
		if _, after, ok := strings.Cut(err.Error(), " for flag -"); ok && strings.HasPrefix(err.Error(), "invalid value ") {
			if name, _, _ := strings.Cut(after, ":"); fs.Lookup(name) != nil {
				_ = fs.Lookup(name).Value.Set(was[name])
			}
		}
		errs = append(errs, err)
		prev := rest
		rest = fs.Args()
		// An unknown -name without =value: its value, if it has one, is next.
		if bad := prev[len(prev)-len(rest)-1]; strings.HasPrefix(err.Error(), "unknown flag ") &&
			!strings.Contains(bad, "=") && len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
			rest = rest[1:]
		}
	}
	return errors.Join(errs...)
}

// Usage prints the flags.
func Usage(name string) string {
	c := Defaults()
	fs := flagSet(name, &c)
	var b strings.Builder
	fs.SetOutput(&b)
	fs.PrintDefaults()
	return b.String()
}

func flagSet(name string, c *Config) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.String("config", "", "optional config file (JSON or YAML) whose keys are these flag names [EXTAUTHZ_CONFIG]")
	bind(fs, c)
	return fs
}

func bind(fs *flag.FlagSet, c *Config) {
	fs.StringVar(&c.GRPCAddr, "grpc-addr", c.GRPCAddr, "gRPC listen address: host:port or unix:///path [EXTAUTHZ_GRPC_ADDR]")
	fs.StringVar(&c.AdminAddr, "admin-addr", c.AdminAddr, "admin HTTP address for /healthz, /readyz, /metrics; empty disables [EXTAUTHZ_ADMIN_ADDR]")
	fs.StringVar(&c.PolicyDir, "policy-dir", c.PolicyDir, "directory with *.rego and data.json; empty = embedded default policy and demo data [EXTAUTHZ_POLICY_DIR]")
	fs.StringVar(&c.BundleFile, "bundle-file", c.BundleFile, "OPA bundle file (.tar.gz) to serve instead of a policy dir [EXTAUTHZ_BUNDLE_FILE]")
	fs.StringVar(&c.BundleURL, "bundle-url", c.BundleURL, "OPA bundle service URL, polled with ETag [EXTAUTHZ_BUNDLE_URL]")
	fs.StringVar(&c.CandidateDir, "candidate-dir", c.CandidateDir, "a candidate policy directory, compared with the serving policy on a sample of live checks [EXTAUTHZ_CANDIDATE_DIR]")
	fs.StringVar(&c.CandidateBundleFile, "candidate-bundle-file", c.CandidateBundleFile, "a candidate policy as an OPA bundle file [EXTAUTHZ_CANDIDATE_BUNDLE_FILE]")
	fs.StringVar(&c.CandidateBundleURL, "candidate-bundle-url", c.CandidateBundleURL, "a candidate policy from an OPA bundle service [EXTAUTHZ_CANDIDATE_BUNDLE_URL]")
	fs.Float64Var(&c.CandidateSampleRate, "candidate-sample-rate", c.CandidateSampleRate, "share of live checks the candidate policy is compared on (0..1) [EXTAUTHZ_CANDIDATE_SAMPLE_RATE]")
	fs.IntVar(&c.CandidateQueue, "candidate-queue", c.CandidateQueue, "samples waiting for the candidate at most; more are dropped and counted [EXTAUTHZ_CANDIDATE_QUEUE]")
	fs.DurationVar(&c.BundlePoll, "bundle-poll", c.BundlePoll, "bundle URL poll interval [EXTAUTHZ_BUNDLE_POLL]")
	fs.StringVar(&c.BundlePubKey, "bundle-pubkey", c.BundlePubKey, "PEM public key: only bundles signed with its private key are accepted [EXTAUTHZ_BUNDLE_PUBKEY]")
	fs.DurationVar(&c.ReloadInterval, "reload-interval", c.ReloadInterval, "how often the policy dir or bundle file is checked for changes; 0 disables (SIGHUP still reloads) [EXTAUTHZ_RELOAD_INTERVAL]")
	fs.IntVar(&c.XFFTrustedHops, "xff-trusted-hops", c.XFFTrustedHops, "trusted proxies in front of Envoy; must equal Envoy's xff_num_trusted_hops [EXTAUTHZ_XFF_TRUSTED_HOPS]")
	fs.DurationVar(&c.EvalTimeout, "eval-timeout", c.EvalTimeout, "budget for the policy evaluation of one check [EXTAUTHZ_EVAL_TIMEOUT]")
	fs.DurationVar(&c.CheckTimeout, "check-timeout", c.CheckTimeout, "deadline for a whole check (evaluation, rate-limit backend, response); past it the check is denied internal_error. Keep it below Envoy's ext_authz timeout (0.25s in the shipped envoy.yaml) [EXTAUTHZ_CHECK_TIMEOUT]")
	fs.IntVar(&c.MaxRequestBytes, "max-request-bytes", c.MaxRequestBytes, "CheckRequests (headers and buffered body) larger than this are denied request_too_large (413); set above Envoy's max_request_headers_kb plus with_request_body.max_request_bytes [EXTAUTHZ_MAX_REQUEST_BYTES]")
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", c.DrainTimeout, "how long in-flight checks may finish on SIGTERM [EXTAUTHZ_DRAIN_TIMEOUT]")
	fs.DurationVar(&c.PrestopDelay, "prestop-delay", c.PrestopDelay, "on SIGTERM, report not ready (/readyz 503, gRPC health NOT_SERVING) and keep serving this long before draining, so load balancers stop sending first; 0 drains at once [EXTAUTHZ_PRESTOP_DELAY]")
	fs.StringVar(&c.TLSCert, "tls-cert", c.TLSCert, "gRPC TLS certificate (PEM) [EXTAUTHZ_TLS_CERT]")
	fs.StringVar(&c.TLSKey, "tls-key", c.TLSKey, "gRPC TLS private key (PEM) [EXTAUTHZ_TLS_KEY]")
	fs.StringVar(&c.TLSClientCA, "tls-client-ca", c.TLSClientCA, "CA bundle (PEM): require and verify client certificates (mTLS) [EXTAUTHZ_TLS_CLIENT_CA]")
	fs.BoolVar(&c.Pprof, "pprof", c.Pprof, "serve /debug/pprof/ on the admin address (profiling; keep the admin port private) [EXTAUTHZ_PPROF]")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug, info, warn or error [EXTAUTHZ_LOG_LEVEL]")
	fs.DurationVar(&c.FaultLogInterval, "fault-log-interval", c.FaultLogInterval, "a repeated warning or error (Redis down, failing checks, rejected TLS clients) is logged once, then at most once per interval with the count suppressed [EXTAUTHZ_FAULT_LOG_INTERVAL]")
	fs.StringVar(&c.DecisionLog, "decision-log", c.DecisionLog, "which decisions to log: all, deny or none [EXTAUTHZ_DECISION_LOG]")
	fs.Float64Var(&c.AllowSampleRate, "allow-sample-rate", c.AllowSampleRate, "fraction of allows logged (0..1) [EXTAUTHZ_ALLOW_SAMPLE_RATE]")
	fs.BoolVar(&c.DecisionLogFacts, "decision-log-facts", c.DecisionLogFacts, "add to each decision record the facts it was decided on (method, canonical path, route context, credential kind, status and key id or JWT claims, tenant header values, client address; bounded, never a credential), so that extauthz check --decision-log can replay it [EXTAUTHZ_DECISION_LOG_FACTS]")
	fs.StringVar(&c.ReplyMetadata, "reply-metadata", c.ReplyMetadata, "Envoy dynamic metadata in each reply: minimal (decision_id, reason, shadow_reason) or full (also policy_version, profile, route, subject, key_id, tenant, plan) for access logs and rate-limit descriptors that read them [EXTAUTHZ_REPLY_METADATA]")
	fs.StringVar(&c.DecisionLogServiceConfig, "decision-log-service-config", c.DecisionLogServiceConfig, "OPA configuration file (JSON or YAML; services, labels, decision_logs): upload every decision to that decision-log service with OPA's decision_logs plugin (batched, gzip'd, retried; never holding up a check) [EXTAUTHZ_DECISION_LOG_SERVICE_CONFIG]")
	fs.StringVar(&c.DecisionLogPolicy, "decision-log-policy", c.DecisionLogPolicy, "Rego file or directory with the uploaded decision logs' mask and drop rules (data.system.log.mask, data.system.log.drop unless decision_logs names others) [EXTAUTHZ_DECISION_LOG_POLICY]")
}

// applyEnv reads EXTAUTHZ_<FLAG_NAME> for every field.
// Validate reports every problem, each naming the setting.
// checkAddr says why addr is not a listen address: host:port (the host may
// be empty, the port 0), or, where unix is true, unix:///path.
func checkAddr(addr string, unix bool) error {
	if p, ok := strings.CutPrefix(addr, "unix://"); ok && unix {
		if p == "" {
			return fmt.Errorf("%q: unix:// needs a socket path", addr)
		}
		return nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q: port %q is not a number in 0..65535", addr, port)
	}
	if strings.ContainsAny(host, " /") {
		return fmt.Errorf("%q: %q is not a host", addr, host)
	}
	return nil
}

func (c Config) Validate() error {
	var errs []error
	bad := func(field, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, a...)))
	}
	if c.GRPCAddr == "" {
		bad("grpc-addr", "required")
	} else if err := checkAddr(c.GRPCAddr, true); err != nil {
		bad("grpc-addr", "%v", err)
	}
	if c.AdminAddr != "" {
		if err := checkAddr(c.AdminAddr, false); err != nil {
			bad("admin-addr", "%v", err)
		}
	}
	// The serving policy's source, and the candidate's: each at most one of
	// a directory, a bundle file and a bundle service.
	for _, src := range []struct{ prefix, dir, file, url string }{
		{"", c.PolicyDir, c.BundleFile, c.BundleURL},
		{"candidate-", c.CandidateDir, c.CandidateBundleFile, c.CandidateBundleURL},
	} {
		dirFlag := src.prefix + "dir"
		if src.prefix == "" {
			dirFlag = "policy-dir"
		}
		if countSet(src.dir, src.file, src.url) > 1 {
			bad(dirFlag, "set only one of %s, %sbundle-file and %sbundle-url", dirFlag, src.prefix, src.prefix)
		}
		if src.dir != "" {
			if st, err := os.Stat(src.dir); err != nil || !st.IsDir() {
				bad(dirFlag, "%q is not a readable directory", src.dir)
			}
		}
		if src.file != "" {
			if _, err := os.Stat(src.file); err != nil {
				bad(src.prefix+"bundle-file", "%q is not readable", src.file)
			}
		}
		if src.url != "" && !strings.HasPrefix(src.url, "http://") && !strings.HasPrefix(src.url, "https://") {
			bad(src.prefix+"bundle-url", "%q is not an http(s) URL", src.url)
		}
	}
	if c.CandidateSampleRate < 0 || c.CandidateSampleRate > 1 {
		bad("candidate-sample-rate", "%v is outside 0..1", c.CandidateSampleRate)
	}
	if c.CandidateQueue < 1 || c.CandidateQueue > 1<<20 {
		bad("candidate-queue", "%d is outside 1..1048576", c.CandidateQueue)
	}
	if c.BundlePoll < time.Second {
		bad("bundle-poll", "%v is below 1s", c.BundlePoll)
	}
	if c.BundlePubKey != "" {
		if _, err := os.Stat(c.BundlePubKey); err != nil {
			bad("bundle-pubkey", "%q is not readable", c.BundlePubKey)
		}
	}
	if c.ReloadInterval < 0 {
		bad("reload-interval", "must not be negative")
	}
	if c.MaxRequestBytes < 64<<10 || c.MaxRequestBytes > 256<<20 {
		bad("max-request-bytes", "%d is outside 64 KiB..256 MiB", c.MaxRequestBytes)
	}
	if c.XFFTrustedHops < 0 || c.XFFTrustedHops > 16 {
		bad("xff-trusted-hops", "%d is outside 0..16", c.XFFTrustedHops)
	}
	if c.EvalTimeout <= 0 || c.EvalTimeout > 10*time.Second {
		bad("eval-timeout", "%v is outside (0, 10s]", c.EvalTimeout)
	}
	if c.CheckTimeout <= 0 || c.CheckTimeout > 10*time.Second {
		bad("check-timeout", "%v is outside (0, 10s]", c.CheckTimeout)
	} else if c.EvalTimeout > 0 && c.EvalTimeout >= c.CheckTimeout {
		bad("eval-timeout", "%v is not below --check-timeout (%v): the evaluation budget must leave the check time for the rate-limit backend and the response", c.EvalTimeout, c.CheckTimeout)
	}
	if c.DrainTimeout <= 0 {
		bad("drain-timeout", "must be positive")
	}
	if c.PrestopDelay < 0 || c.PrestopDelay > 5*time.Minute {
		bad("prestop-delay", "%v is outside [0, 5m]", c.PrestopDelay)
	}
	if c.FaultLogInterval < time.Millisecond || c.FaultLogInterval > 24*time.Hour {
		bad("fault-log-interval", "%v is outside [1ms, 24h]", c.FaultLogInterval)
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		bad("tls-cert", "tls-cert and tls-key go together")
	}
	if c.TLSClientCA != "" && c.TLSCert == "" {
		bad("tls-client-ca", "mTLS needs tls-cert and tls-key")
	}
	for field, p := range map[string]string{"tls-cert": c.TLSCert, "tls-key": c.TLSKey, "tls-client-ca": c.TLSClientCA} {
		if p != "" {
			if _, err := os.Stat(p); err != nil {
				bad(field, "%q is not readable", p)
			}
		}
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("log-level", "%q is not one of debug, info, warn, error", c.LogLevel)
	}
	switch c.DecisionLog {
	case "all", "deny", "none":
	default:
		bad("decision-log", "%q is not one of all, deny, none", c.DecisionLog)
	}
	switch c.ReplyMetadata {
	case "minimal", "full":
	default:
		bad("reply-metadata", "%q is not one of minimal, full", c.ReplyMetadata)
	}
	if c.DecisionLogPolicy != "" && c.DecisionLogServiceConfig == "" {
		bad("decision-log-policy", "needs decision-log-service-config")
	}
	if c.AllowSampleRate < 0 || c.AllowSampleRate > 1 {
		bad("allow-sample-rate", "%v is outside 0..1", c.AllowSampleRate)
	}
	return errors.Join(errs...)
}

// countSet counts the non-empty strings.
func countSet(ss ...string) int {
	n := 0
	for _, s := range ss {
		if s != "" {
			n++
		}
	}
	return n
}
