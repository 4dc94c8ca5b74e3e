// Package cli is the extauthz command line: serve (the default), check (why
// was this request allowed or denied?), key (create and hash API keys),
// validate (config, policy, data and Envoy files without serving).
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/extauthz/extauthz/internal/config"
	"github.com/extauthz/extauthz/internal/decisionlog"
	"github.com/extauthz/extauthz/internal/logbuf"
	"github.com/extauthz/extauthz/internal/server"
)

// Env is what a command may touch.
type Env struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	Getenv         func(string) string
}

const usage = `extauthz — Envoy ext_authz sidecar: API keys, JWTs, scopes, tenants and IP allowlists
as OPA Rego rules, with denials in each API's own error contract.

Usage:
  extauthz [serve] [flags]     serve Check over gRPC (no flags: embedded policy and demo data)
  extauthz check [flags]       evaluate one request offline and show the decision and response
  extauthz key create|hash|import|revoke|suspend|activate|delete
                               make an API key record for policy data, hash a key,
                               or manage keys in a Redis key store
  extauthz validate [flags]    check config, policy, data and Envoy files without serving
  extauthz routes import SPEC  print the route table for an OpenAPI 3.0/3.1 document
  extauthz local-replies --envoy FILE  Envoy's own replies in the profiles' envelopes
  extauthz help [command]

Serve flags:
`

// Main runs the command line and returns the exit code.
func Main(ctx context.Context, args []string, env Env) int {
	cmd, rest := "serve", args
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, rest = args[0], args[1:]
	}
	var err error
	switch cmd {
	case "serve":
		err = serve(ctx, rest, env)
	case "check":
		err = runCheck(ctx, rest, env)
	case "key":
		err = runKey(rest, env)
	case "validate":
		err = runValidate(ctx, rest, env)
	case "routes":
		err = runRoutes(rest, env)
	case "local-replies":
		err = runLocalReplies(ctx, rest, env)
	case "demo":
		// A developer tool since it left the product binary.
		fmt.Fprintln(env.Stderr, "extauthz: the demo is a developer command now: `make demo` or `go run ./cmd/extauthz-demo` in the repository")
		return 2
	case "help", "-h", "--help":
		if cmd == "help" && len(rest) > 0 {
			return help(ctx, rest[0], env)
		}
		fmt.Fprint(env.Stdout, usage+config.Usage("extauthz"))
		return 0
	default:
		fmt.Fprintf(env.Stderr, "extauthz: unknown command %q\n\n%s", cmd, usage)
		return 2
	}
	if err != nil {
		if err == errUsage {
			return 2
		}
		if ex, ok := err.(exitError); ok {
			return int(ex)
		}
		fmt.Fprintf(env.Stderr, "extauthz %s: %v\n", cmd, err)
		return 1
	}
	return 0
}

// help prints one command's help.
func help(ctx context.Context, cmd string, env Env) int {
	switch cmd {
	case "serve":
		fmt.Fprint(env.Stdout, usage+config.Usage("extauthz"))
		return 0
	case "check", "validate", "local-replies":
		return Main(ctx, []string{cmd, "--help"}, env)
	case "key":
		fmt.Fprint(env.Stdout, keyUsage)
		return 0
	case "routes":
		fmt.Fprint(env.Stdout, routesUsage)
		return 0
	}
	fmt.Fprintf(env.Stderr, "extauthz help: unknown command %q\n\n%s", cmd, usage)
	return 2
}

type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit %d", int(e)) }

var errUsage = fmt.Errorf("usage")

func serve(ctx context.Context, args []string, env Env) error {
	cfg, err := config.Load("extauthz", args, env.Getenv)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(env.Stdout, usage+config.Usage("extauthz"))
			return nil
		}
		return err
	}
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(cfg.LogLevel))
	// Logs (decision logs above all) are batched: one write per 250ms or
	// 64 KiB instead of one per check; flushed on shutdown. Decision
	// records are encoded without slog's generic machinery (the same JSON;
	// decisionlog.JSONHandler).
	out := logbuf.New(env.Stderr, 64<<10, 250*time.Millisecond)
	defer out.Close()
	log := slog.New(decisionlog.NewJSONHandler(out, &slog.HandlerOptions{Level: lv}))
	slog.SetDefault(log)
	return server.Run(ctx, cfg, log)
}

// OS is the process environment.
func OS() Env {
	return Env{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv}
}
