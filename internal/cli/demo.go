package cli

import (
	"context"
	"flag"

	"github.com/extauthz/extauthz/internal/demo"
)

// runDemo starts the sidecar, real Envoy (running envoy/envoy.yaml)
// and an echo upstream, prints curl commands, and stops on Ctrl-C.
func runDemo(ctx context.Context, args []string, env Env) error {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	listen := fs.String("listen", demo.DefaultListenAddr, "address of the Envoy listener")
	policyDir := fs.String("policy-dir", "", "policy directory (default: the embedded policy and demo data)")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	return demo.Run(ctx, env.Stdout, demo.Options{ListenAddr: *listen, PolicyDir: *policyDir})
}
