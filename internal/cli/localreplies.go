package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/extauthz/extauthz/internal/decision"
	"github.com/extauthz/extauthz/internal/engine"
	"github.com/extauthz/extauthz/internal/envoyconfig"
)

const localRepliesUsage = `Usage: extauthz local-replies --envoy FILE [--write] [--policy-dir DIR | --bundle-file FILE]
Prints the local_reply_config an Envoy config needs so that the replies Envoy
makes itself reach clients in each API's envelope: the sidecar unreachable or
too slow (status_on_error: the profile's auth_unavailable), a request Envoy
rejects (400: request_invalid) and one over Envoy's limits (413, 431:
request_too_large). Each virtual host gets its context_extensions profile (or
the policy's default profile). With --write, FILE is rewritten with it in
place of each connection manager's local_reply_config (keeping mappers of
its own after the generated ones, and its body_format), or after its
http_filters. 'extauthz
validate --envoy FILE' reports a config whose mappers are missing or stale.

Flags:
`

// runLocalReplies prints (or writes) the local_reply_config of an Envoy file.
func runLocalReplies(ctx context.Context, args []string, env Env) error {
	fs := flag.NewFlagSet("extauthz local-replies", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	fs.Usage = func() { fmt.Fprint(env.Stdout, localRepliesUsage); fs.SetOutput(env.Stdout); fs.PrintDefaults() }
	file := fs.String("envoy", "", "the Envoy bootstrap (YAML or JSON)")
	write := fs.Bool("write", false, "rewrite the file instead of printing")
	policyDir := fs.String("policy-dir", "", "policy directory (default: the embedded policy)")
	bundleFile := fs.String("bundle-file", "", "OPA bundle file instead of a policy dir")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return errUsage
	}
	if *file == "" || fs.NArg() > 0 {
		fmt.Fprint(env.Stderr, localRepliesUsage)
		return errUsage
	}
	eng, err := loadEngine(ctx, *policyDir, *bundleFile)
	if err != nil {
		return err
	}
	defer eng.Close()
	src, err := os.ReadFile(*file)
	if err != nil {
		return err
	}
	lrs, err := envoyconfig.LocalRepliesOf(src, eng.Settings.DefaultProfile)
	if err != nil {
		return fmt.Errorf("%s: %w", *file, err)
	}
	if len(lrs) == 0 {
		return fmt.Errorf("%s: no HTTP connection manager with an ext_authz filter and inline routes", *file)
	}
	render := envelopes(eng)
	if !*write {
		for _, lr := range lrs {
			block, err := lr.YAML(render, 0)
			if err != nil {
				return err
			}
			fmt.Fprintf(env.Stdout, "# %s\n%s", lr.Path, block)
		}
		return nil
	}
	out := src
	hosts := 0
	for i, lr := range lrs {
		// Each write moves the lines after it: locate the next manager in
		// the new text.
		fresh, err := envoyconfig.LocalRepliesOf(out, eng.Settings.DefaultProfile)
		if err == nil {
			out, err = fresh[i].Write(out, render)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", *file, err)
		}
		hosts += len(lr.Hosts)
	}
	if err := os.WriteFile(*file, out, 0o644); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "%s: local_reply_config written (%d hosts)\n", *file, hosts)
	return nil
}

// envelopes renders a profile's denial as the sidecar would, with the
// request id and time marked for Envoy to fill in.
func envelopes(eng *engine.Engine) envoyconfig.RenderFunc {
	return func(name, reason string, withID bool) (envoyconfig.Envelope, error) {
		p, ok := eng.Profiles.Get(name)
		if !ok {
			return envoyconfig.Envelope{}, fmt.Errorf("unknown profile (policy profiles: %s)", strings.Join(eng.Profiles.Names(), ", "))
		}
		d := &decision.Decision{Reason: decision.Reason(reason), Profile: name}
		if withID {
			d.RequestID = envoyconfig.RequestIDMark
		}
		out := p.Render(d, envoyconfig.MarkTime)
		return envoyconfig.Envelope{Status: out.Status, Headers: out.Headers, Body: out.Body}, nil
	}
}

// localRepliesAgree reports each connection manager of an Envoy file whose
// local_reply_config does not begin with the mappers local-replies makes.
func localRepliesAgree(file string, src []byte, eng *engine.Engine) []error {
	lrs, err := envoyconfig.LocalRepliesOf(src, eng.Settings.DefaultProfile)
	if err != nil {
		return []error{err}
	}
	var errs []error
	for _, lr := range lrs {
		bad := func(err error) { errs = append(errs, fmt.Errorf("%s: %s: %w", file, lr.Path, err)) }
		block, err := lr.YAML(envelopes(eng), 0)
		if err != nil {
			bad(err)
			continue
		}
		want, err := envoyconfig.ParseMappers(block)
		if err != nil {
			bad(err)
			continue
		}
		if !lr.Agrees(want) {
			bad(fmt.Errorf("the replies Envoy makes itself (sidecar unreachable or late, 400, 413, 431) are not in the virtual hosts' envelopes, or the mappers are stale: run extauthz local-replies --envoy %s --write", file))
		}
	}
	return errs
}
