package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"

	"github.com/extauthz/extauthz/internal/engine"
	"github.com/extauthz/extauthz/internal/openapi"
)

const routesUsage = `Usage: extauthz routes import [flags] SPEC
Reads an OpenAPI 3.0/3.1 document (YAML or JSON) and prints the route table
for data.json's extauthz.routes: one route per path, methods grouped when
their requirements are equal; public for security: [], else the credential
kinds of the security schemes (apiKey in a header: api_key; http bearer:
jwt; oauth2/openIdConnect: jwt; a scheme's x-extauthz-auth: [...] says it
exactly) and every scope the alternatives list. What cannot be mapped
exactly is warned about on stderr.

Flags:
  --bearer-api-keys          http bearer schemes also carry API keys (api_key_bearer),
                             except those with bearerFormat JWT
  --tenant-headers           header parameters named like tenant ids become tenant_headers
  --tenant-header-pattern RE which header names are tenant ids (default ` + openapi.DefaultTenantHeaderPattern + `)
  --base-path PATH           prefix for every path (default: the path of the first server URL)
`

// openapiFlags are the mapping options of 'routes import' and
// 'validate --openapi'.
type openapiFlags struct {
	spec          string
	bearerAPIKeys bool
	tenantHeaders bool
	pattern       string
	basePath      *string
}

func (o *openapiFlags) register(fs *flag.FlagSet) {
	fs.BoolVar(&o.bearerAPIKeys, "bearer-api-keys", false, "http bearer schemes also carry API keys (api_key_bearer)")
	fs.BoolVar(&o.tenantHeaders, "tenant-headers", false, "header parameters named like tenant ids become tenant_headers")
	fs.StringVar(&o.pattern, "tenant-header-pattern", openapi.DefaultTenantHeaderPattern, "which header names are tenant ids")
	fs.Func("base-path", "prefix for every path (default: the path of the first server URL)", func(v string) error {
		o.basePath = &v
		return nil
	})
}

// take consumes args[*i] (and its value) when it is a validate flag of
// the OpenAPI check: --openapi SPEC, --bearer-api-keys, --base-path PATH.
func (o *openapiFlags) take(args []string, i *int, errs *[]error) bool {
	name, val, hasVal := strings.Cut(strings.TrimLeft(args[*i], "-"), "=")
	if !strings.HasPrefix(args[*i], "-") {
		return false
	}
	value := func() string {
		if hasVal {
			return val
		}
		if *i+1 < len(args) {
			*i++
			return args[*i]
		}
		*errs = append(*errs, fmt.Errorf("--%s needs a value", name))
		return ""
	}
	switch name {
	case "openapi":
		o.spec = value()
	case "base-path":
		v := value()
		o.basePath = &v
	case "bearer-api-keys":
		o.bearerAPIKeys = !hasVal || val == "true"
	default:
		return false
	}
	return true
}

func (o *openapiFlags) load() (*openapi.Spec, error) {
	opts := openapi.Options{BearerAPIKeys: o.bearerAPIKeys, BasePath: o.basePath}
	if o.tenantHeaders {
		re, err := regexp.Compile(o.pattern)
		if err != nil {
			return nil, fmt.Errorf("--tenant-header-pattern: %w", err)
		}
		opts.TenantHeaders = re
	}
	b, err := os.ReadFile(o.spec)
	if err != nil {
		return nil, err
	}
	s, err := openapi.Load(b, opts)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", o.spec, err)
	}
	return s, nil
}

// runRoutes is 'extauthz routes import SPEC'.
func runRoutes(args []string, env Env) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		w := env.Stdout
		if len(args) == 0 {
			w = env.Stderr
		}
		fmt.Fprint(w, routesUsage)
		if len(args) == 0 {
			return errUsage
		}
		return nil
	}
	if args[0] != "import" {
		fmt.Fprintf(env.Stderr, "extauthz routes: unknown subcommand %q\n\n%s", args[0], routesUsage)
		return errUsage
	}
	var o openapiFlags
	fs := flag.NewFlagSet("routes import", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	o.register(fs)
	var specs []string
	for rest := args[1:]; ; {
		if err := fs.Parse(rest); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprint(env.Stdout, routesUsage)
				return nil
			}
			fmt.Fprintf(env.Stderr, "extauthz routes import: %v\n\n%s", err, routesUsage)
			return errUsage
		}
		if fs.NArg() == 0 {
			break
		}
		specs = append(specs, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	if len(specs) != 1 {
		fmt.Fprintf(env.Stderr, "extauthz routes import: one SPEC file, got %d\n\n%s", len(specs), routesUsage)
		return errUsage
	}
	o.spec = specs[0]
	s, err := o.load()
	if err != nil {
		return err
	}
	defs := s.Routes() // may warn too
	for _, w := range s.Warnings {
		fmt.Fprintf(env.Stderr, "warning: %s\n", w)
	}
	if hw := s.APIKeyHeaderWarnings("x-api-key"); len(hw) > 0 {
		fmt.Fprintf(env.Stderr, "warning: the spec sends API keys in header %s; the sidecar reads one header, extauthz.settings.api_key_header (default X-API-Key)\n", strings.Join(s.APIKeyHeaders, ", "))
	}
	out, err := openapi.MarshalRoutes(defs)
	if err != nil {
		return err
	}
	_, err = env.Stdout.Write(out)
	return err
}

// validateOpenAPI is validate's --openapi check: every operation of the
// spec against the policy's route table. It prints the findings and returns
// an error when there is any.
func (o *openapiFlags) validate(w io.Writer, eng *engine.Engine) error {
	name := "openapi " + o.spec
	if eng == nil {
		fmt.Fprintf(w, "%s: skipped (no policy to compare with)\n", name)
		return nil
	}
	s, err := o.load()
	if err != nil {
		fmt.Fprintf(w, "%s: FAIL\n%s\n", name, indent(err))
		return err
	}
	for _, warn := range append(s.Warnings, s.APIKeyHeaderWarnings(eng.Settings.APIKeyHeader)...) {
		fmt.Fprintf(w, "%s: warning: %s\n", name, warn)
	}
	findings := openapi.Compare(eng.Routes, s)
	if len(findings) == 0 {
		fmt.Fprintf(w, "%s: ok (%d operations, every one routed no weaker than the spec; %d routes, each matching an operation)\n", name, len(s.Ops), eng.Routes.Len())
		return nil
	}
	fmt.Fprintf(w, "%s: FAIL (%d findings)\n", name, len(findings))
	for _, f := range findings {
		fmt.Fprintf(w, "  %s\n", f)
	}
	return fmt.Errorf("%s: %d findings", o.spec, len(findings))
}
