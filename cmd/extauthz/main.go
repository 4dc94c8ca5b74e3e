// Command extauthz is an Envoy ext_authz sidecar: API keys, bearer JWTs,
// scopes, tenant headers and IP allowlists as OPA Rego rules, with denials in
// each API's own documented error contract.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/extauthz/extauthz/internal/server"
)

func main() {
	cfg := server.Config{}
	fs := flag.NewFlagSet("extauthz", flag.ExitOnError)
	fs.StringVar(&cfg.GRPCAddr, "grpc-addr", env("GRPC_ADDR", server.DefaultGRPCAddr), "gRPC listen address (host:port or unix:///path) [EXTAUTHZ_GRPC_ADDR]")
	fs.StringVar(&cfg.AdminAddr, "admin-addr", env("ADMIN_ADDR", server.DefaultAdminAddr), "admin HTTP address for /healthz and /readyz; empty disables [EXTAUTHZ_ADMIN_ADDR]")
	fs.StringVar(&cfg.PolicyDir, "policy-dir", env("POLICY_DIR", ""), "directory with *.rego and data.json; empty uses the embedded default policy and demo data [EXTAUTHZ_POLICY_DIR]")
	hops, _ := strconv.Atoi(env("XFF_TRUSTED_HOPS", "0"))
	fs.IntVar(&cfg.XFFTrustedHops, "xff-trusted-hops", hops, "trusted proxies in front of Envoy; must equal Envoy's xff_num_trusted_hops [EXTAUTHZ_XFF_TRUSTED_HOPS]")
	level := fs.String("log-level", env("LOG_LEVEL", "info"), "debug, info, warn or error [EXTAUTHZ_LOG_LEVEL]")
	_ = fs.Parse(os.Args[1:])

	var lv slog.Level
	if err := lv.UnmarshalText([]byte(*level)); err != nil {
		fmt.Fprintln(os.Stderr, "extauthz: log-level:", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: lv}))
	slog.SetDefault(log)

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := server.Run(ctx, cfg, log); err != nil {
		log.Error("extauthz stopped", "error", err.Error())
		os.Exit(1)
	}
}

func env(name, def string) string {
	if v, ok := os.LookupEnv("EXTAUTHZ_" + strings.ToUpper(name)); ok {
		return v
	}
	return def
}
