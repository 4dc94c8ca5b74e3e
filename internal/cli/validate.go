package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/tester"

	"github.com/extauthz/extauthz/internal/config"
	"github.com/extauthz/extauthz/internal/envoybin"
	"github.com/extauthz/extauthz/internal/envoyconfig"
	"github.com/extauthz/extauthz/internal/policy"
	"github.com/extauthz/extauthz/internal/server"
	"github.com/extauthz/extauthz/internal/source"
)

// runValidate checks, without serving: the configuration (all flags/env/file
// problems), the policy and its data (every error with file and field), the
// policy's own _test.rego tests, and Envoy config files (schema + hardening,
// plus `envoy --mode validate` when an Envoy binary is found).
func runValidate(ctx context.Context, args []string, env Env) error {
	var envoyFiles multi
	var rest []string
	for i := 0; i < len(args); i++ {
		switch {
		case args[i] == "--envoy" || args[i] == "-envoy":
			if i+1 < len(args) {
				envoyFiles = append(envoyFiles, args[i+1])
				i++
			}
		case strings.HasPrefix(args[i], "--envoy="):
			envoyFiles = append(envoyFiles, strings.TrimPrefix(args[i], "--envoy="))
		default:
			rest = append(rest, args[i])
		}
	}
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	_ = fs
	var problems []error
	say := func(format string, a ...any) { fmt.Fprintf(env.Stdout, format+"\n", a...) }

	cfg, err := config.Load("extauthz validate", rest, env.Getenv)
	if err != nil {
		problems = append(problems, fmt.Errorf("config: %w", err))
		say("config: FAIL\n%s", indent(err))
	} else {
		say("config: ok")
		if cfg.BundleURL != "" {
			say("policy: skipped (bundle-url is fetched at run time)")
		} else {
			verify, _ := source.ReadVerify(cfg.BundlePubKey)
			loader := source.New(cfg.PolicyDir, cfg.BundleFile, "", verify)
			src, _, err := loader.Load(ctx)
			if err == nil {
				var eng interface{ Close() }
				e, berr := server.Build(ctx, src)
				if berr == nil {
					eng = e
					say("policy: ok (%s, version %s, %d routes, %d API keys, profiles %s, memoized=%v, client_ip_traced=%v)", loader, e.Version, e.Routes.Len(), e.Keys.Len(), strings.Join(e.Profiles.Names(), ","), e.Policy.Pure(), e.Policy.Purity().TracesClientIP)
					eng.Close()
				}
				err = berr
			}
			if err != nil {
				problems = append(problems, err)
				say("policy: FAIL\n%s", indent(err))
			} else if n, err := regoTests(ctx, src); err != nil {
				problems = append(problems, err)
				say("policy tests: FAIL\n%s", indent(err))
			} else if n > 0 {
				say("policy tests: ok (%d passed)", n)
			}
		}
	}
	// The go-control-plane checks (schema + hardening invariants) always
	// run; `envoy --mode validate` runs too when a binary is found, since
	// only Envoy itself knows every extension and cross-field rule.
	envoyBin, binErr := "", error(nil)
	if len(envoyFiles) > 0 {
		envoyBin, binErr = envoybin.Find(env.Getenv, true)
	}
	for _, f := range envoyFiles {
		warnings, err := envoyconfig.ValidateFileStrict(f)
		for _, w := range warnings {
			say("envoy %s: warning: %s", f, w)
		}
		real := "envoy --mode validate: skipped, " + errString(binErr)
		if envoyBin != "" {
			if verr := envoybin.Validate(envoyBin, f); verr != nil {
				err = errors.Join(err, verr)
			} else {
				real = "envoy --mode validate: OK (" + envoyBin + ")"
			}
		}
		if err != nil {
			problems = append(problems, err)
			say("envoy %s: FAIL\n%s", f, indent(err))
		} else {
			say("envoy %s: ok (%s)", f, real)
		}
	}
	if len(problems) > 0 {
		return exitError(1)
	}
	return nil
}

// regoTests runs the policy's _test.rego files with OPA's tester.
func regoTests(ctx context.Context, src *policy.Source) (int, error) {
	if len(src.Tests) == 0 {
		return 0, nil
	}
	mods := map[string]*ast.Module{}
	for name, text := range src.Modules {
		m, err := ast.ParseModuleWithOpts(name, text, ast.ParserOptions{RegoVersion: ast.RegoV1})
		if err != nil {
			return 0, err
		}
		mods[name] = m
	}
	for name, text := range src.Tests {
		m, err := ast.ParseModuleWithOpts(name, text, ast.ParserOptions{RegoVersion: ast.RegoV1})
		if err != nil {
			return 0, err
		}
		mods[name] = m
	}
	ch, err := tester.NewRunner().SetModules(mods).RunTests(ctx, nil)
	if err != nil {
		return 0, err
	}
	n := 0
	var fails []error
	for r := range ch {
		n++
		if r.Fail || r.Error != nil {
			fails = append(fails, fmt.Errorf("%s: %s failed %v", r.Location, r.Name, r.Error))
		}
	}
	return n, errors.Join(fails...)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func indent(err error) string {
	return "  " + strings.ReplaceAll(err.Error(), "\n", "\n  ")
}
