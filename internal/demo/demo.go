// Package demo runs the whole request path on one machine without Envoy or
// Docker: the extauthz sidecar (in-process gRPC server), an echo upstream
// and the envoysim harness configured from envoy/envoy.yaml, listening on a
// loopback address. It prints ready-to-paste curl commands, one allowed and
// one denied request per deny-profile host.
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
	"github.com/extauthz/extauthz/internal/envoysim"
	"github.com/extauthz/extauthz/internal/server"
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

// DefaultListenAddr is where the emulated Envoy listens by default.
const DefaultListenAddr = "127.0.0.1:8000"

// Options configure Run.
type Options struct {
	ListenAddr string // emulated Envoy listener; default DefaultListenAddr
	PolicyDir  string // "" = the embedded policy and demo data

	// slack, when set, replaces both the sidecar's evaluation budget and
	// the harness's Check deadline (tests under -race on a loaded machine).
	slack time.Duration
}

// Run starts the sidecar, the echo upstream and the emulated Envoy, prints
// curl commands to out and serves until ctx is cancelled. It then shuts
// everything down and returns nil; it returns an error only when something
// could not start or the listener failed.
func Run(ctx context.Context, out io.Writer, opts Options) error {
	if opts.ListenAddr == "" {
		opts.ListenAddr = DefaultListenAddr
	}
	eng, err := server.BuildEngine(ctx, opts.PolicyDir)
	if err != nil {
		return fmt.Errorf("load policy: %w", err)
	}
	defer eng.Close()

	cfg, cfgSource, err := harnessConfig()
	if err != nil {
		return err
	}
	if opts.slack > 0 {
		cfg.Timeout = opts.slack
	}
	sidecar, err := e2e.StartSidecar(eng, e2e.SidecarOptions{XFFTrustedHops: cfg.XFFNumTrustedHops, Timeout: opts.slack})
	if err != nil {
		return err
	}
	defer sidecar.Close()

	cfg.Target = sidecar.Addr
	cfg.Upstream = &e2e.Echo{}
	front, err := envoysim.New(cfg)
	if err != nil {
		return fmt.Errorf("harness: %w", err)
	}
	defer front.Close()

	lis, err := net.Listen("tcp", opts.ListenAddr)
	if err != nil {
		return fmt.Errorf("listen-addr: %w", err)
	}
	srv := &http.Server{
		Handler:                      front,
		ReadHeaderTimeout:            10 * time.Second,
		DisableGeneralOptionsHandler: true, // Envoy routes "OPTIONS *" like any request
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()

	base := "http://" + lis.Addr().String()
	fmt.Fprintf(out, "extauthz demo\n")
	fmt.Fprintf(out, "  policy:   %s (version %s)\n", eng.Origin, eng.Version)
	fmt.Fprintf(out, "  sidecar:  gRPC on %s (in-process)\n", sidecar.Addr)
	fmt.Fprintf(out, "  envoy:    %s, emulated (envoysim) from %s\n", base, cfgSource)
	fmt.Fprintf(out, "  upstream: in-process echo (answers with the identity headers it received)\n\n")
	printCommands(out, base)
	fmt.Fprintf(out, "\nPress Ctrl-C to stop.\n")

	select {
	case <-ctx.Done():
	case err := <-served:
		return fmt.Errorf("listener: %w", err)
	}
	sctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	<-served
	fmt.Fprintf(out, "demo stopped\n")
	return nil
}

// harnessConfig translates envoy/envoy.yaml when the working directory has
// one, else the embedded copy.
func harnessConfig() (envoysim.Config, string, error) {
	if _, err := os.Stat(envoyConfigPath); err == nil {
		cfg, err := e2e.HarnessConfig(envoyConfigPath)
		if err != nil {
			return cfg, "", err
		}
		abs, _ := filepath.Abs(envoyConfigPath)
		return cfg, abs, nil
	}
	cfg, err := e2e.TranslateYAML(envoyYAML)
	if err != nil {
		return cfg, "", fmt.Errorf("built-in envoy.yaml: %w", err)
	}
	return cfg, "the built-in copy of envoy/envoy.yaml", nil
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
