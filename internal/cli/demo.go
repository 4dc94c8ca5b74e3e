package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"

	"github.com/extauthz/extauthz/internal/config"
	"github.com/extauthz/extauthz/internal/demo"
)

// runDemo starts the sidecar, real Envoy (running envoy/envoy.yaml)
// and an echo upstream, prints curl commands, and stops on Ctrl-C.
func runDemo(ctx context.Context, args []string, env Env) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	listen := fs.String("listen", demo.DefaultListenAddr, "address of the Envoy listener")
	policyDir := fs.String("policy-dir", "", "policy directory (default: the embedded policy and demo data)")
	if err := config.ParseAll(fs, args); errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(env.Stdout, "Usage: extauthz demo [flags]\nRuns the sidecar, an Envoy-semantics front and an echo upstream, and prints curl examples.\n\nFlags:")
		fs.SetOutput(env.Stdout)
		fs.PrintDefaults()
		return nil
	} else if err != nil {
		fmt.Fprintf(env.Stderr, "extauthz demo:\n%s\n", indent(err))
		return errUsage
	}
	return demo.Run(ctx, env.Stdout, demo.Options{ListenAddr: *listen, PolicyDir: *policyDir})
}
