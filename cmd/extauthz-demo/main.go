// Command extauthz-demo is a developer tool, not part of the product: it
// runs the extauthz sidecar (in-process), real Envoy on envoy/envoy.yaml
// (ENVOY_BIN, the project-local copy from `make envoy`, or envoy on PATH)
// and an echo upstream on loopback, prints ready-to-paste curl commands and
// stops on Ctrl-C.
//
//	make demo
//	go run ./cmd/extauthz-demo --listen 127.0.0.1:8080
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/extauthz/extauthz/internal/config"
	"github.com/extauthz/extauthz/internal/demo"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("extauthz-demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", demo.DefaultListenAddr, "address of the Envoy listener")
	policyDir := fs.String("policy-dir", "", "policy directory (default: the embedded policy and demo data)")
	if err := config.ParseAll(fs, args); errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(stdout, "Usage: extauthz-demo [flags]\nRuns the sidecar, real Envoy and an echo upstream on loopback, and prints curl examples.\n\nFlags:")
		fs.SetOutput(stdout)
		fs.PrintDefaults()
		return 0
	} else if err != nil {
		fmt.Fprintf(stderr, "extauthz-demo: %v\n", err)
		return 2
	}
	if err := demo.Run(ctx, stdout, demo.Options{ListenAddr: *listen, PolicyDir: *policyDir}); err != nil {
		fmt.Fprintf(stderr, "extauthz-demo: %v\n", err)
		return 1
	}
	return 0
}
