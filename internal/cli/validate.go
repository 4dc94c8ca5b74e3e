package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/cover"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/tester"

	"github.com/extauthz/extauthz/internal/check"
	"github.com/extauthz/extauthz/internal/config"
	"github.com/extauthz/extauthz/internal/engine"
	"github.com/extauthz/extauthz/internal/envoybin"
	"github.com/extauthz/extauthz/internal/envoyconfig"
	"github.com/extauthz/extauthz/internal/httpheader"
	"github.com/extauthz/extauthz/internal/policy"
	"github.com/extauthz/extauthz/internal/route"
	"github.com/extauthz/extauthz/internal/source"
)

const validateUsage = `Usage: extauthz validate [--envoy FILE]... [--openapi SPEC] [--coverage] [-v] [server flags]
Checks everything the server would load, without serving:
  - the server flags, file and EXTAUTHZ_* variables (every problem at once);
  - the policy and its data.json (every error with file and field), and that
    the server would not refuse the version (no data.json, no routes or no
    credentials, unless extauthz.settings.allow_empty is true);
  - the policy's own *_test.rego tests, run with its data.json as
    'opa test DIR' does (a PASS/FAIL line per test, details on failure);
  - each Envoy file: schema, hardening, xff_num_trusted_hops equal to
    --xff-trusted-hops, and every route's context_extensions against the
    policy (known route ids and profiles, valid requirement overrides), the
    identity headers removed on routes without a check, and local_reply_config
    answering Envoy's own replies in each virtual host's envelope (see
    'extauthz local-replies');
  - with --openapi, an OpenAPI 3.0/3.1 document against the policy's routes:
    every operation with no route or a weaker one (public where the spec
    secures it, missing scopes the spec requires, accepting credential kinds
    the spec does not declare) and every route that matches no operation.
Exits 0 when all is well, 1 otherwise.

Flags:
  --envoy FILE   an Envoy bootstrap to check (repeatable)
  --openapi SPEC an OpenAPI document to check the routes against; with
                 --bearer-api-keys (bearer schemes carry API keys too) and
                 --base-path PATH as for 'extauthz routes import'
  --coverage     also print the policy tests' coverage of each policy file
  -v             on a failed test, also print its evaluation trace

Server flags (as for 'extauthz serve'; --policy-dir or --bundle-file picks the policy):
`

// runValidate checks, without serving: the configuration (all flags/env/file
// problems), the policy and its data (every error with file and field), the
// policy's own _test.rego tests, and Envoy config files (schema + hardening,
// their agreement with the configuration and the policy, plus
// `envoy --mode validate` when an Envoy binary is found).
func runValidate(ctx context.Context, args []string, env Env) error {
	var envoyFiles []string
	var rest []string
	coverage, verbose := false, false
	var argErrs []error
	var oa openapiFlags
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case oa.take(args, &i, &argErrs):
		case a == "--envoy" || a == "-envoy":
			if i+1 < len(args) {
				envoyFiles = append(envoyFiles, args[i+1])
				i++
			} else {
				argErrs = append(argErrs, errors.New("--envoy needs a file"))
			}
		case strings.HasPrefix(a, "--envoy=") || strings.HasPrefix(a, "-envoy="):
			_, v, _ := strings.Cut(a, "=")
			envoyFiles = append(envoyFiles, v)
		case a == "--coverage" || a == "-coverage":
			coverage = true
		case a == "-v" || a == "--v" || a == "--verbose":
			verbose = true
		default:
			rest = append(rest, a)
		}
	}
	var problems []error
	say := func(format string, a ...any) { fmt.Fprintf(env.Stdout, format+"\n", a...) }

	cfg, err := config.Load("extauthz validate", rest, env.Getenv)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(env.Stdout, validateUsage+config.Usage("extauthz"))
		return nil
	}
	if err == nil {
		err = errors.Join(argErrs...)
	} else if len(argErrs) > 0 {
		err = errors.Join(append(argErrs, err)...)
	}
	var eng *engine.Engine
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
				eng, err = engine.Build(ctx, src, engine.Options{})
				if err == nil {
					defer eng.Close()
					err = eng.Servable() // the engine still serves the Envoy checks below
				}
				if err == nil {
					say("policy: ok (%s, version %s, %d routes, %d API keys, profiles %s, memoized=%v, client_ip_traced=%v)", loader, eng.Version, eng.Routes.Len(), eng.Keys.Len(), strings.Join(eng.Profiles.Names(), ","), eng.Policy.Pure(), eng.Policy.Purity().TracesClientIP)
					for _, w := range eng.Warnings {
						say("  warning: %s", w)
					}
				}
			}
			if err != nil {
				problems = append(problems, err)
				say("policy: FAIL\n%s", indent(err))
			}
			if src != nil && len(src.Tests) > 0 {
				// The tests run even when the data did not validate: they
				// may say more about what is wrong.
				say("policy tests:")
				pass, fail, err := regoTests(ctx, src, env.Stdout, verbose, coverage)
				switch {
				case err != nil:
					problems = append(problems, err)
					say("policy tests: FAIL\n%s", indent(err))
				case fail > 0:
					problems = append(problems, fmt.Errorf("%d policy tests failed", fail))
					say("policy tests: FAIL (%d passed, %d failed)", pass, fail)
				default:
					say("policy tests: ok (%d passed)", pass)
				}
			}
		}
	}
	if oa.spec != "" {
		if oerr := oa.validate(env.Stdout, eng); oerr != nil {
			problems = append(problems, oerr)
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
		if err == nil {
			err = envoyAgrees(f, cfg, eng)
		}
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

// envoyAgrees checks an Envoy file against the sidecar's settings and
// policy: xff_num_trusted_hops must equal --xff-trusted-hops (or client
// addresses, and so IP allowlists, are taken from the wrong hop), and each
// route's context_extensions must name known route ids and profiles and
// override requirements validly (or every request on it fails closed with
// internal_error), and a route without a Check must remove the identity
// headers the sidecar sets (or a client sets them for the upstream). eng
// may be nil (the policy did not load): then only the hops are checked.
func envoyAgrees(file string, cfg config.Config, eng *engine.Engine) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	facts, err := envoyconfig.FactsOf(b)
	if err != nil {
		return err
	}
	var errs []error
	bad := func(p, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: %s: %s", file, p, fmt.Sprintf(format, a...)))
	}
	for _, h := range facts.XFFHops {
		if int(h.Hops) != cfg.XFFTrustedHops {
			bad(h.Path, "%d, but the sidecar's --xff-trusted-hops is %d; they must be equal", h.Hops, cfg.XFFTrustedHops)
		}
	}
	if eng == nil {
		return errors.Join(errs...)
	}
	errs = append(errs, localRepliesAgree(file, b, eng)...)
	ih := eng.Settings.IdentityHeaders
	for _, u := range facts.Unchecked {
		for _, h := range []string{ih.Subject, ih.KeyID, ih.Tenant, ih.Scopes, ih.Kind} {
			if h != "" && !u.Removed[strings.ToLower(h)] {
				bad(u.Path+".request_headers_to_remove", "lacks %q: ext_authz is off on this route, so the upstream gets a client's own %s as if the sidecar had set it", h, h)
			}
		}
		for _, h := range eng.TenantHeaders {
			if !u.Removed[h] {
				bad(u.Path+".request_headers_to_remove", "lacks %q: ext_authz is off on this route, so the upstream gets a client's tenant header nobody verified", h)
			}
		}
		for _, h := range check.OverrideHeaders() {
			if !u.Removed[h] {
				bad(u.Path+".request_headers_to_remove", "lacks %q: ext_authz is off on this route, so an upstream that honours it serves another method or path than the one Envoy routed, unchecked", h)
			}
		}
	}
	for _, rc := range facts.Contexts {
		ce := rc.Extensions
		p := rc.Path + ".context_extensions"
		if k := route.UnknownCE(ce); k != "" && eng.Policy != nil && eng.Policy.Pure() {
			bad(p+"."+k, "not a key extauthz reads (known: %s): every request on this route fails closed (internal_error)", strings.Join(route.CEKeys(), ", "))
		}
		if name, ok := ce[route.CEProfile]; ok {
			if _, known := eng.Profiles.Get(name); !known {
				bad(p+".profile", "unknown profile %q (policy profiles: %s)", name, strings.Join(eng.Profiles.Names(), ", "))
			}
		}
		id, named := ce[route.CERoute]
		if !named {
			// The route is matched by path at run time; its tenant header
			// must still be one the policy's routes declare.
			if h, ok := ce[route.CETenantHeader]; ok && httpheader.Name(strings.ToLower(h)) && !slices.Contains(eng.TenantHeaders, strings.ToLower(h)) {
				bad(p+".tenant_header", "%q is declared by no route of the policy, so routes that do not verify it would pass a client's value to their upstreams: every request on this route fails closed (internal_error); declare it in a policy route's tenant_headers", h)
			}
			continue
		}
		rt, found := eng.Routes.ByID(id)
		if !found {
			bad(p+".route", "unknown route id %q: every request on this route fails closed (internal_error)", id)
			continue
		}
		if !route.HasOverrides(ce) {
			continue
		}
		_, th := ce[route.CETenantHeader]
		_, tf := ce[route.CETenantFormat]
		_, tr := ce[route.CETenantRequired]
		if (tf || tr) && !th && len(rt.Req.TenantHeaders) == 0 {
			bad(p, "sets tenant_required/tenant_format, but policy route %q has no tenant_headers and no tenant_header is given: every request on this route fails closed (internal_error)", id)
			continue
		}
		if o, err := rt.WithOverrides(ce); err != nil {
			bad(p, "on policy route %q: %v: every request on this route fails closed (internal_error)", id, err)
		} else if err := eng.CheckTenantHeaders(o); err != nil {
			bad(p, "on policy route %q: %v: every request on this route fails closed (internal_error)", id, err)
		}
	}
	return errors.Join(errs...)
}

// regoTests runs the policy's _test.rego files with OPA's tester, over the
// policy's data (as `opa test DIR` does), printing a PASS/FAIL line per test
// and details of failures to w, and with coverage the coverage of each
// policy file.
func regoTests(ctx context.Context, src *policy.Source, w io.Writer, verbose, coverage bool) (pass, fail int, err error) {
	mods := map[string]*ast.Module{}
	var errs []error
	for _, set := range []map[string]string{src.Modules, src.Tests} {
		for _, name := range slices.Sorted(maps.Keys(set)) {
			file := path.Join(src.Origin, name)
			m, err := ast.ParseModuleWithOpts(file, set[name], ast.ParserOptions{RegoVersion: ast.RegoV1})
			if err != nil {
				errs = append(errs, err)
				continue
			}
			mods[file] = m
		}
	}
	if len(errs) > 0 {
		return 0, 0, errors.Join(errs...)
	}
	data, err := testData(src.Data)
	if err != nil {
		return 0, 0, err
	}
	var cov *cover.Cover
	r := tester.NewRunner().RaiseBuiltinErrors(true).SetModules(mods).SetStore(inmem.NewFromObject(data)).
		SetDefaultRegoVersion(ast.RegoV1).CapturePrintOutput(true)
	if coverage {
		cov = cover.New()
		r.SetCoverageQueryTracer(cov)
	} else {
		r.EnableTracing(true) // the failing expression and, with -v, the trace
	}
	ch, err := r.RunTests(ctx, nil)
	if err != nil {
		return 0, 0, err
	}
	// A line per test; the failures again, in detail, through OPA's own
	// reporter (the failing expression, its local variables, the output of
	// print, with -v the trace).
	var results, failed []*tester.Result
	for res := range ch {
		results = append(results, res)
	}
	slices.SortFunc(results, func(a, b *tester.Result) int {
		if a.Location == nil || b.Location == nil || a.Location.File != b.Location.File {
			return strings.Compare(a.Package+"."+a.Name, b.Package+"."+b.Name)
		}
		return a.Location.Row - b.Location.Row
	})
	for _, res := range results {
		outcome := "PASS"
		switch {
		case res.Skip:
			outcome = "SKIP"
		case res.Pass():
			pass++
		case res.Error != nil:
			outcome = "ERROR"
			fail++
			failed = append(failed, res)
		default:
			outcome = "FAIL"
			fail++
			failed = append(failed, res)
		}
		loc := ""
		if res.Location != nil {
			loc = fmt.Sprintf(" %s:%d", res.Location.File, res.Location.Row)
		}
		fmt.Fprintf(w, "  %-5s %s.%s (%s)%s\n", outcome, res.Package, res.Name, res.Duration.Round(time.Microsecond), loc)
	}
	if len(failed) > 0 {
		fmt.Fprintln(w, "  details of the failures:")
		detail := make(chan *tester.Result, len(failed))
		for _, res := range failed {
			detail <- res
		}
		close(detail)
		rep := tester.PrettyReporter{Output: &indentWriter{w: w, prefix: "    "}, Verbose: verbose, FailureLine: true, LocalVars: true}
		if err := rep.Report(detail); err != nil {
			return pass, fail, err
		}
	}
	if cov != nil {
		report := cov.Report(mods)
		for _, file := range slices.Sorted(maps.Keys(report.Files)) {
			if _, isPolicy := src.Modules[path.Base(file)]; !isPolicy || path.Dir(file) != path.Clean(src.Origin) {
				continue
			}
			fr := report.Files[file]
			var lines []string
			for _, rg := range fr.NotCovered {
				l := fmt.Sprint(rg.Start.Row)
				if rg.End.Row != rg.Start.Row {
					l = fmt.Sprintf("%d-%d", rg.Start.Row, rg.End.Row)
				}
				if !slices.Contains(lines, l) {
					lines = append(lines, l)
				}
			}
			msg := fmt.Sprintf("  coverage %s: %.1f%% (%d of %d lines)", file, fr.Coverage, fr.CoveredLines, fr.CoveredLines+fr.NotCoveredLines)
			if len(lines) > 0 {
				msg += "; not covered: lines " + strings.Join(lines, ", ")
			}
			fmt.Fprintln(w, msg)
		}
	}
	return pass, fail, nil
}

// testData is the policy's data document as OPA's store takes it: the
// sections the sidecar keeps raw (API keys) decoded too.
func testData(d map[string]any) (map[string]any, error) {
	out := maps.Clone(d)
	root, ok := d["extauthz"].(map[string]any)
	if !ok {
		return out, nil
	}
	r := maps.Clone(root)
	for k, v := range r {
		sec, isRaw := v.(*policy.Section)
		if !isRaw {
			continue
		}
		raw, err := sec.Bytes()
		if err != nil {
			return nil, fmt.Errorf("data.json: extauthz.%s: %w", k, err)
		}
		var x any
		if err := json.Unmarshal(raw, &x); err != nil {
			return nil, fmt.Errorf("data.json: extauthz.%s: %w", k, err)
		}
		r[k] = x
	}
	out["extauthz"] = r
	return out, nil
}

// indentWriter prefixes every line.
type indentWriter struct {
	w      io.Writer
	prefix string
	mid    bool
}

func (iw *indentWriter) Write(p []byte) (int, error) {
	var b strings.Builder
	for _, c := range string(p) {
		if !iw.mid && c != '\n' {
			b.WriteString(iw.prefix)
		}
		b.WriteRune(c)
		iw.mid = c != '\n'
	}
	if _, err := io.WriteString(iw.w, b.String()); err != nil {
		return 0, err
	}
	return len(p), nil
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
