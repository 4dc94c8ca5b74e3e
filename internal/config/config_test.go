package config

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestPrecedenceFileEnvFlags(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "extauthz.yaml")
	os.WriteFile(file, []byte("grpc_addr: 127.0.0.1:7000\nadmin-addr: 127.0.0.1:7001\neval_timeout: 50ms\ndecision_log: deny\n"), 0o600)
	c, err := Load("t", []string{"--config", file, "--admin-addr", "127.0.0.1:7999"}, env(map[string]string{"EXTAUTHZ_EVAL_TIMEOUT": "80ms", "EXTAUTHZ_XFF_TRUSTED_HOPS": "2"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.GRPCAddr != "127.0.0.1:7000" || c.AdminAddr != "127.0.0.1:7999" || c.EvalTimeout != 80*time.Millisecond || c.XFFTrustedHops != 2 || c.DecisionLog != "deny" {
		t.Errorf("%+v", c)
	}
	if d := Defaults(); d.GRPCAddr != "127.0.0.1:9001" || d.AdminAddr != "127.0.0.1:9002" {
		t.Errorf("defaults %+v", d)
	}
}

func TestEveryProblemReportedAndNamed(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "c.yaml")
	os.WriteFile(file, []byte("grpc_adr: x\neval_timeout: soon\n"), 0o600)
	_, err := Load("t", []string{"--config", file}, env(map[string]string{"EXTAUTHZ_XFF_TRUSTED_HOPS": "many"}))
	for _, want := range []string{"c.yaml: grpc_adr: no such flag", `c.yaml: eval_timeout: invalid value "soon": parse error`, `EXTAUTHZ_XFF_TRUSTED_HOPS: invalid value "many": parse error`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
	_, err = Load("t", []string{"--policy-dir", "/nope", "--bundle-url", "ftp://x", "--tls-cert", "a.pem", "--log-level", "loud", "--decision-log", "some", "--allow-sample-rate", "2", "--reply-metadata", "rich", "--xff-trusted-hops", "-1"}, env(nil))
	for _, want := range []string{"policy-dir: set only one", "policy-dir: \"/nope\"", "bundle-url: \"ftp://x\"", "tls-cert: tls-cert and tls-key go together", "log-level", "decision-log", "allow-sample-rate", "reply-metadata: \"rich\" is not one of minimal, full", "xff-trusted-hops"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
}

func TestUsageListsEveryFlag(t *testing.T) {
	u := Usage("extauthz")
	for _, f := range []string{"grpc-addr", "admin-addr", "policy-dir", "bundle-url", "tls-client-ca", "decision-log", "EXTAUTHZ_GRPC_ADDR"} {
		if !strings.Contains(u, f) {
			t.Errorf("usage lacks %s", f)
		}
	}
}

// Every bad flag is reported, not only the first.
func TestLoadReportsEveryBadFlag(t *testing.T) {
	_, err := Load("t", []string{"--bogus", "1", "--xff-trusted-hops", "x", "--grpc-adr=:1", "--eval-timeout", "soon", "--log-level", "loud"}, env(nil))
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"unknown flag -bogus", `invalid value "x" for flag -xff-trusted-hops`, "unknown flag -grpc-adr", `invalid value "soon" for flag -eval-timeout`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("lacks %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "unexpected arguments") {
		t.Errorf("the unknown flag's value was taken for an argument:\n%v", err)
	}
	if strings.Contains(err.Error(), "outside") {
		t.Errorf("a value that did not parse is also reported as out of range:\n%v", err)
	}
	// The same from the environment, naming the value; and the two
	// budgets in the order they nest.
	_, err = Load("t", nil, env(map[string]string{"EXTAUTHZ_EVAL_TIMEOUT": "abc"}))
	if err == nil || !strings.Contains(err.Error(), `EXTAUTHZ_EVAL_TIMEOUT: invalid value "abc"`) || strings.Contains(err.Error(), "outside") {
		t.Errorf("bad duration in the environment: %v", err)
	}
	if _, err = Load("t", []string{"--check-timeout", "50ms"}, env(nil)); err == nil || !strings.Contains(err.Error(), "eval-timeout: 100ms is not below --check-timeout (50ms)") {
		t.Errorf("eval budget above the check deadline: %v", err)
	}
	if _, err := Load("t", []string{"--log-level", "debug", "stray"}, env(nil)); err == nil || !strings.Contains(err.Error(), `unexpected arguments: ["stray"]`) {
		t.Errorf("stray argument: %v", err)
	}
	if _, err := Load("t", []string{"--bogus", "--help"}, env(nil)); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("help: %v", err)
	}
}

// The candidate policy's settings are checked like the serving policy's.
func TestCandidateSettingsValidated(t *testing.T) {
	c := Defaults()
	c.CandidateDir, c.CandidateBundleURL, c.CandidateSampleRate, c.CandidateQueue = t.TempDir(), "ftp://x", 1.5, 0
	err := c.Validate()
	for _, want := range []string{"candidate-dir: set only one of candidate-dir", "candidate-bundle-url: \"ftp://x\" is not an http(s) URL", "candidate-sample-rate: 1.5 is outside 0..1", "candidate-queue: 0 is outside"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want %q in %v", want, err)
		}
	}
}

// The decision-log service settings: flags, variables and file keys.
func TestDecisionLogServiceSettings(t *testing.T) {
	c, err := Load("t", []string{"--decision-log-service-config", "opa.yaml", "--decision-log-policy", "mask.rego"}, env(nil))
	if err != nil || c.DecisionLogServiceConfig != "opa.yaml" || c.DecisionLogPolicy != "mask.rego" {
		t.Fatalf("%+v %v", c, err)
	}
	c, err = Load("t", nil, env(map[string]string{"EXTAUTHZ_DECISION_LOG_SERVICE_CONFIG": "x.json"}))
	if err != nil || c.DecisionLogServiceConfig != "x.json" {
		t.Fatalf("%+v %v", c, err)
	}
	c = Defaults()
	c.DecisionLogPolicy = "mask.rego"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "decision-log-policy: needs decision-log-service-config") {
		t.Errorf("policy without service: %v", err)
	}
}

// A key given twice in the config file is refused (JSON or YAML), not
// the last one taken; large numbers reach their flag as written.
func TestConfigFileStrict(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"dup.yaml": "grpc_addr: 127.0.0.1:7000\ngrpc_addr: 0.0.0.0:7000\n",
		"dup.json": `{"grpc_addr": "127.0.0.1:7000", "grpc_addr": "0.0.0.0:7000"}`,
	} {
		file := filepath.Join(dir, name)
		os.WriteFile(file, []byte(body), 0o600)
		if c, err := Load("t", []string{"--config", file}, env(nil)); err == nil || !strings.Contains(err.Error(), file) {
			t.Errorf("%s: %+v, %v; want an error naming the file", name, c.GRPCAddr, err)
		}
	}
	file := filepath.Join(dir, "big.yaml")
	os.WriteFile(file, []byte("max_request_bytes: 2097152\n"), 0o600)
	c, err := Load("t", []string{"--config", file}, env(nil))
	if err != nil || c.MaxRequestBytes != 2097152 {
		t.Errorf("max_request_bytes: %v, %v", c.MaxRequestBytes, err)
	}
}

// Listen addresses are checked, and a flag that does not parse is reported
// together with one out of range.
func TestAddressesAndMixedProblems(t *testing.T) {
	_, err := Load("t", []string{"--grpc-addr", "nope", "--admin-addr", "foo", "--check-timeout", "abc", "--allow-sample-rate", "2"}, env(nil))
	for _, want := range []string{`grpc-addr: "nope" is not host:port`, `admin-addr: "foo" is not host:port`, "check-timeout", "allow-sample-rate"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
	for _, ok := range [][]string{{"--grpc-addr", "127.0.0.1:0"}, {"--grpc-addr", ":9001"}, {"--grpc-addr", "unix:///tmp/x.sock"}, {"--grpc-addr", "[::1]:9001", "--admin-addr", ""}} {
		if _, err := Load("t", ok, env(nil)); err != nil {
			t.Errorf("%v: %v", ok, err)
		}
	}
}
