// Command extauthz is an Envoy ext_authz sidecar: API keys, bearer JWTs,
// scopes, tenant headers and IP allowlists as OPA Rego rules, with denials in
// each API's own documented error contract. Run `extauthz help`.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/extauthz/extauthz/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := cli.Main(ctx, os.Args[1:], cli.OS())
	stop()
	os.Exit(code)
}
