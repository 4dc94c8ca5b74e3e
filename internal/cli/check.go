package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/extauthz/extauthz/internal/check"
	"github.com/extauthz/extauthz/internal/checkreq"
	"github.com/extauthz/extauthz/internal/clientip"
	"github.com/extauthz/extauthz/internal/config"
	"github.com/extauthz/extauthz/internal/decision"
	"github.com/extauthz/extauthz/internal/engine"
	"github.com/extauthz/extauthz/internal/replay"
	"github.com/extauthz/extauthz/internal/source"
)

const checkUsage = `Usage: extauthz check [flags]
Evaluates one request offline, exactly as the server would, and prints the
decision, the reason and where it sits in the rulebook's precedence, the facts
the policy saw, and the response the client would get (status, headers, body).

The request, one of:
  --method GET --path /v1/orders -H 'X-API-Key: …' [--host api.example.com] [--source 203.0.113.7]
  --curl "curl -H 'X-API-Key: …' https://api.example.com/v1/orders"
  --request checkrequest.json     (a CheckRequest in protobuf JSON, as Envoy sends it)
Plus --context key=value (Envoy route context_extensions, repeatable).

Comparing a candidate policy with --candidate-dir DIR: the request is decided
by both and both verdicts are printed; with --requests FILE (one CheckRequest
in protobuf JSON per line, e.g. recorded from Envoy) every request is decided
by both, the verdicts are counted by (serving, candidate) and each difference
is printed; the exit status is then 0 when the two agree on every request and
2 when they differ on any.

Replaying the decision log with --decision-log FILE: FILE holds the
sidecar's decision records written with --decision-log-facts (its JSON log
lines; other lines are skipped) or OPA decision-log events (one per line, or
an upload's JSON array per line). Each record's facts are decided again by the
policy (--policy-dir / --bundle-file, default the embedded one) and, with
--candidate-dir DIR, by the candidate. Verdicts are reasons; a shadowed deny
counts as its reason and a quota denial as ok (quotas are not replayed). The
counts are printed by (recorded, replayed), or (recorded, serving,
candidate), and each record where the last two differ. A record that cannot be
decided exactly is "not replayable" with the reason (no facts, a withheld
value, a key id the policy lacks, an unknown key or a JWT under changed
api_keys / jwt sections, a policy that reads more than the facts); an
unreadable line is reported with its number. Exit status: 0 when every record
was replayed and the last two verdicts agree, 2 when they differ on any, 3 when
none differ but some could not be replayed or read, 1 on an error.

Exit status: 0 when the request is allowed, 2 when it is denied, 1 on an
error (bad flags, a policy that does not load, a request Envoy itself would
refuse).

Flags:
`

// ruleOf names the rulebook rule (policies/extauthz.rego) behind each reason.
var ruleOf = map[decision.Reason]string{
	decision.OK: "allow", decision.PathInvalid: "decision (path_problem)", decision.RouteNotFound: "decision (route == null)",
	decision.BrowserAPIKey: "browser_api_key", decision.WrongAuthMode: "wrong_auth_mode",
	decision.TenantHeaderMissing: "tenant_check", decision.TenantHeaderInvalid: "tenant_check", decision.TenantForbidden: "tenant_check",
	decision.IPNotAllowed: "ip_not_allowed", decision.ScopeMissing: "scope_denial", decision.IdempotencyKeyMissing: "idempotency_key_missing",
	decision.InternalError: "(none: the sidecar failed closed; see the error log)",
}

func runCheck(ctx context.Context, args []string, env Env) error {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	var headers, ctxExt multi
	policyDir := fs.String("policy-dir", "", "policy directory (default: the embedded policy)")
	bundleFile := fs.String("bundle-file", "", "OPA bundle file instead of a policy dir")
	method := fs.String("method", "GET", "HTTP method")
	path := fs.String("path", "/", "request path with query")
	host := fs.String("host", "api.example.com", "Host / :authority")
	src := fs.String("source", "127.0.0.1", "client address Envoy saw (TCP peer)")
	hops := fs.Int("xff-trusted-hops", 0, "as the server's --xff-trusted-hops")
	curl := fs.String("curl", "", "a curl command line")
	reqFile := fs.String("request", "", "CheckRequest JSON file ('-' for stdin)")
	asJSON := fs.Bool("json", false, "print the explanation as JSON")
	candDir := fs.String("candidate-dir", "", "a candidate policy directory to compare with")
	reqsFile := fs.String("requests", "", "with --candidate-dir: a file of CheckRequests (protobuf JSON, one per line) to compare on")
	logFile := fs.String("decision-log", "", "a decision-log file (JSON lines written with --decision-log-facts, or OPA decision-log events) to replay on the policy (and --candidate-dir)")
	fs.Var(&headers, "H", "request header 'Name: value' (repeatable)")
	fs.Var(&ctxExt, "context", "context extension key=value (repeatable)")
	if err := config.ParseAll(fs, args); errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(env.Stdout, checkUsage)
		fs.SetOutput(env.Stdout)
		fs.PrintDefaults()
		return nil
	} else if err != nil {
		return fmt.Errorf("%w\n(extauthz help check lists the flags)", err)
	}

	if _, err := netip.ParseAddr(*src); err != nil {
		return fmt.Errorf("--source %q: not an IP address", *src)
	}
	if !strings.HasPrefix(*path, "/") {
		return fmt.Errorf("--path %q: must start with / (the path as Envoy sends it, with the query)", *path)
	}
	var req *authv3.CheckRequest
	var err error
	switch {
	case *logFile != "":
		return replayLog(ctx, env, *logFile, *policyDir, *bundleFile, *candDir)
	case *reqsFile != "":
		if *candDir == "" {
			return errors.New("--requests needs --candidate-dir")
		}
		return compareFile(ctx, env, *reqsFile, *policyDir, *bundleFile, *candDir, *hops)
	case *reqFile != "":
		req, err = readCheckRequest(*reqFile, env.Stdin)
	case *curl != "":
		var r *http.Request
		if r, err = parseCurl(*curl); err == nil {
			r.RemoteAddr = *src + ":40000"
			req, err = envoyRequest(r)
		}
	default:
		var r *http.Request
		if r, err = http.NewRequest(*method, "http://"+*host+*path, nil); err == nil {
			for _, h := range headers {
				k, v, ok := strings.Cut(h, ":")
				if !ok {
					return fmt.Errorf("-H %q: want 'Name: value'", h)
				}
				r.Header.Add(strings.TrimSpace(k), strings.TrimSpace(v))
			}
			r.RemoteAddr = *src + ":40000"
			req, err = envoyRequest(r)
		}
	}
	if err != nil {
		return err
	}
	for _, kv := range ctxExt {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return fmt.Errorf("--context %q: want key=value", kv)
		}
		if req.Attributes.ContextExtensions == nil {
			req.Attributes.ContextExtensions = map[string]string{}
		}
		req.Attributes.ContextExtensions[k] = v
	}

	eng, err := loadEngine(ctx, *policyDir, *bundleFile)
	if err != nil {
		return err
	}
	defer eng.Close()
	var h engine.Holder
	h.Store(eng)
	srv := check.NewServer(&h, clientip.Resolver{TrustedHops: *hops})
	srv.Timeout = 2 * time.Second
	ex := srv.Explain(ctx, req)
	if *asJSON {
		err = printJSON(env.Stdout, ex)
	} else {
		printExplanation(env.Stdout, eng, ex)
	}
	if *candDir != "" && err == nil {
		cand, cerr := source.Engine(ctx, *candDir, engine.Options{})
		if cerr != nil {
			return fmt.Errorf("candidate: %w", cerr)
		}
		defer cand.Close()
		cex := offlineServer(cand, *hops).Explain(ctx, req)
		fmt.Fprintf(env.Stdout, "\ncandidate:  %s (%s, version %s)\n", verdictOf(cex.Decision), *candDir, cex.Decision.PolicyVersion)
	}
	if err == nil && !ex.Decision.Allow {
		return exitError(2) // denied
	}
	return err
}

// loadEngine builds the policy of a directory or bundle file ("" for both:
// the embedded one).
func loadEngine(ctx context.Context, dir, bundleFile string) (*engine.Engine, error) {
	src, _, err := source.New(dir, bundleFile, "", nil).Load(ctx)
	if err != nil {
		return nil, err
	}
	eng, err := engine.Build(ctx, src, engine.Options{})
	if err == nil {
		source.AwaitReady(ctx, eng) // decide with the keys the server would have
	}
	return eng, err
}

// offlineServer decides with eng as the server would, counting no quota.
func offlineServer(eng *engine.Engine, hops int) *check.Server {
	var h engine.Holder
	h.Store(eng)
	srv := check.NewServer(&h, clientip.Resolver{TrustedHops: hops})
	srv.Timeout, srv.NoQuota = 2*time.Second, true
	return srv
}

func verdictOf(d decision.Decision) string {
	if d.Allow {
		return "ALLOW ok"
	}
	return "DENY " + string(d.Reason)
}

// compareFile decides every CheckRequest of file (JSON lines) with the
// serving and the candidate policy and reports where they differ.
func compareFile(ctx context.Context, env Env, file, policyDir, bundleFile, candDir string, hops int) error {
	serving, err := loadEngine(ctx, policyDir, bundleFile)
	if err != nil {
		return err
	}
	defer serving.Close()
	cand, err := source.Engine(ctx, candDir, engine.Options{})
	if err != nil {
		return fmt.Errorf("candidate: %w", err)
	}
	defer cand.Close()
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	s, c := offlineServer(serving, hops), offlineServer(cand, hops)
	cmp := newComparison(env.Stdout, "serving", "candidate")
	for i, line := range strings.Split(string(b), "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		req := &authv3.CheckRequest{}
		if err := protojson.Unmarshal([]byte(line), req); err != nil {
			return fmt.Errorf("%s:%d: not a CheckRequest: %w", file, i+1, err)
		}
		h := req.GetAttributes().GetRequest().GetHttp()
		cmp.add(fmt.Sprintf("%s:%d", file, i+1), h.GetMethod()+" "+h.GetPath(),
			verdictOf(s.Explain(ctx, req).Decision), verdictOf(c.Explain(ctx, req).Decision))
	}
	return cmp.finish("requests")
}

// replayLog decides every decision record of file again from the facts it
// carries, with the policy and, when candDir is set, the candidate too, and
// reports where the verdicts differ (internal/replay).
func replayLog(ctx context.Context, env Env, file, policyDir, bundleFile, candDir string) error {
	serving, err := loadEngine(ctx, policyDir, bundleFile)
	if err != nil {
		return err
	}
	defer serving.Close()
	servers := []*check.Server{offlineServer(serving, 0)}
	columns := []string{"recorded", "replayed"}
	if candDir != "" {
		cand, err := source.Engine(ctx, candDir, engine.Options{})
		if err != nil {
			return fmt.Errorf("candidate: %w", err)
		}
		defer cand.Close()
		servers = append(servers, offlineServer(cand, 0))
		columns = []string{"recorded", "serving", "candidate"}
	}
	in, err := os.Open(file)
	if err != nil {
		return err
	}
	defer in.Close()
	cmp := newComparison(env.Stdout, columns...)
	err = replay.Read(in, func(rec replay.Record) {
		where := fmt.Sprintf("%s:%d", file, rec.Line)
		what := "decision " + rec.DecisionID
		if f := rec.Facts; f != nil {
			what += " " + printable(f.Method+" "+f.Path)
		}
		verdicts := []string{string(rec.Reason)}
		for i, srv := range servers {
			d, err := srv.Replay(ctx, &rec)
			var nr *replay.NotReplayable
			switch {
			case errors.As(err, &nr):
				if len(servers) > 1 {
					nr.Why = columns[i+1] + ": " + nr.Why
				}
				cmp.skip(where+": "+what, nr.Why, nr.Detail)
				return
			case err != nil:
				cmp.bad(where, err)
				return
			}
			verdicts = append(verdicts, string(check.Verdict(d)))
		}
		cmp.add(where, what, verdicts...)
	}, func(line int, err error) {
		cmp.bad(fmt.Sprintf("%s:%d", file, line), err)
	})
	if err != nil {
		return err
	}
	return cmp.finish("records (reasons; a shadowed deny counts as its reason, a quota denial as ok)")
}

// envoyRequest builds the CheckRequest Envoy would send for r through the
// shipped front proxy's HCM settings.
func envoyRequest(r *http.Request) (*authv3.CheckRequest, error) {
	req, err := checkreq.Build(r, checkreq.ShippedHCM())
	var lr *checkreq.LocalReplyError
	if errors.As(err, &lr) {
		return nil, fmt.Errorf("this request never reaches extauthz: Envoy itself answers %d (%s; with the shipped local_reply_config, in the profile's request_invalid or request_too_large envelope)", lr.Status, lr.Details)
	}
	return req, err
}

func readCheckRequest(path string, stdin io.Reader) (*authv3.CheckRequest, error) {
	var b []byte
	var err error
	if path == "-" {
		b, err = io.ReadAll(stdin)
	} else {
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, err
	}
	req := &authv3.CheckRequest{}
	if err := protojson.Unmarshal(b, req); err != nil {
		return nil, fmt.Errorf("%s: not a CheckRequest: %w", path, err)
	}
	return req, nil
}

func printExplanation(w io.Writer, eng *engine.Engine, ex check.Explanation) {
	d := ex.Decision
	verdict := "DENY"
	if d.Allow {
		verdict = "ALLOW"
	}
	fmt.Fprintf(w, "decision:   %s\n", verdict)
	reason := string(d.Reason)
	if d.Variant != "" {
		reason += " (" + d.Variant + ")"
	}
	fmt.Fprintf(w, "reason:     %s\n", reason)
	if sh := d.Shadow; sh != nil {
		fmt.Fprintf(w, "shadowed:   %s (%d) — the policy denied, the route's shadow setting let it through; enforced, the client would get:\n            %s\n", sh.Reason, sh.Status, sh.Body)
	}
	step := slices.Index(decision.Precedence, d.Reason)
	rule := ruleOf[d.Reason]
	if rule == "" {
		rule = "authn_failure"
	}
	if step >= 0 {
		fmt.Fprintf(w, "decided by: rule %s — precedence step %d of %d (docs/reasons.md)\n", rule, step+1, len(decision.Precedence))
	} else {
		fmt.Fprintf(w, "decided by: %s\n", rule)
	}
	fmt.Fprintf(w, "route:      %s\nprofile:    %s\npolicy:     %s (%s, memoized=%v)\n", or(d.Route, "(none)"), d.Profile, d.PolicyVersion, eng.Origin, eng.Policy.Pure())
	if ex.Facts != nil {
		b, _ := json.MarshalIndent(ex.Facts, "            ", "  ")
		fmt.Fprintf(w, "facts:      %s\n", b)
	}
	fmt.Fprintln(w)
	if ok := ex.Response.GetOkResponse(); ok != nil {
		fmt.Fprintln(w, "Envoy forwards the request upstream with:")
		for _, h := range ok.GetHeaders() {
			fmt.Fprintf(w, "  set    %s: %s\n", h.GetHeader().GetKey(), h.GetHeader().GetValue())
		}
		for _, h := range ok.GetHeadersToRemove() {
			fmt.Fprintf(w, "  remove %s\n", h)
		}
		if add := ok.GetResponseHeadersToAdd(); len(add) > 0 {
			fmt.Fprintln(w, "and adds to the response the client receives:")
			for _, h := range add {
				fmt.Fprintf(w, "  %s: %s\n", h.GetHeader().GetKey(), h.GetHeader().GetValue())
			}
		}
		return
	}
	den := ex.Response.GetDeniedResponse()
	code := int(den.GetStatus().GetCode())
	fmt.Fprintf(w, "The client receives:\nHTTP/1.1 %d %s\n", code, http.StatusText(code))
	for _, h := range den.GetHeaders() {
		fmt.Fprintf(w, "%s: %s\n", h.GetHeader().GetKey(), h.GetHeader().GetValue())
	}
	fmt.Fprintf(w, "content-length: %d\n\n%s\n", len(den.GetBody()), den.GetBody())
}

func printJSON(w io.Writer, ex check.Explanation) error {
	resp, _ := protojson.Marshal(ex.Response)
	out := map[string]any{
		"allow": ex.Decision.Allow, "reason": ex.Decision.Reason, "variant": ex.Decision.Variant,
		"route": ex.Decision.Route, "profile": ex.Decision.Profile, "policy_version": ex.Decision.PolicyVersion,
		"facts": ex.Facts, "response": json.RawMessage(resp),
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// parseCurl reads the parts of a curl command line that shape a request:
// -X/--request, -H/--header, -I/--head, and the URL.
func parseCurl(line string) (*http.Request, error) {
	words, err := shellWords(line)
	if err != nil {
		return nil, err
	}
	if len(words) == 0 || words[0] != "curl" {
		return nil, errors.New(`--curl: want a curl command line ("curl -H 'X-API-Key: …' https://…")`)
	}
	words = words[1:]
	method, url := "", ""
	var hs [][2]string
	for i := 0; i < len(words); i++ {
		w := words[i]
		next := func() (string, error) {
			if i+1 >= len(words) {
				return "", fmt.Errorf("curl: %s needs a value", w)
			}
			i++
			return words[i], nil
		}
		switch {
		case w == "-X" || w == "--request":
			if method, err = next(); err != nil {
				return nil, err
			}
		case w == "-H" || w == "--header":
			v, err := next()
			if err != nil {
				return nil, err
			}
			k, val, ok := strings.Cut(v, ":")
			if !ok {
				return nil, fmt.Errorf("curl: header %q: want 'Name: value'", v)
			}
			hs = append(hs, [2]string{strings.TrimSpace(k), strings.TrimSpace(val)})
		case w == "-I" || w == "--head":
			method = http.MethodHead
		case strings.HasPrefix(w, "-"):
			// -s, -i, -v and friends do not change the request.
		default:
			url = w
		}
	}
	if url == "" {
		return nil, errors.New("curl: no URL")
	}
	if !strings.Contains(url, "://") {
		url = "http://" + url
	}
	if method == "" {
		method = http.MethodGet
	}
	r, err := http.NewRequest(method, url, nil)
	if err != nil {
		return nil, err
	}
	for _, h := range hs {
		if strings.EqualFold(h[0], "host") {
			r.Host = h[1]
			continue
		}
		r.Header.Add(h[0], h[1])
	}
	return r, nil
}

// shellWords splits a command line with single and double quotes.
func shellWords(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			} else if c == '\\' && quote == '"' && i+1 < len(s) {
				i++
				cur.WriteByte(s[i])
			} else {
				cur.WriteByte(c)
			}
		case c == '\'' || c == '"':
			quote, inWord = c, true
		case c == '\\' && i+1 < len(s):
			i++
			if s[i] != '\n' {
				cur.WriteByte(s[i])
				inWord = true
			}
		case c == ' ' || c == '\t' || c == '\n':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, errors.New("curl: unterminated quote")
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}
