package check

import (
	"cmp"
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/extauthz/extauthz/internal/authn"
	"github.com/extauthz/extauthz/internal/credential"
	"github.com/extauthz/extauthz/internal/engine"
	"github.com/extauthz/extauthz/internal/facts"
	"github.com/extauthz/extauthz/internal/memo"
	"github.com/extauthz/extauthz/internal/pathcanon"
	"github.com/extauthz/extauthz/internal/policy"
	"github.com/extauthz/extauthz/internal/route"
	"github.com/extauthz/extauthz/internal/wire"
)

// request is what step one resolved about a CheckRequest: the facts the
// policy is given, and what the sidecar keeps beside them.
type request struct {
	req          *authv3.CheckRequest
	eng          *engine.Engine // the policy version deciding
	f            facts.Facts
	id           string // request id (x-request-id or generated); f.RequestID
	path         pathcanon.Path
	routeErr     error // bad context_extensions: fail closed
	cred         credential.Presented
	headers      map[string]string
	setupFail    bool         // the request could not be understood at all (no HTTP attributes)
	problem      wire.Problem // it could not be taken as sent (bad UTF-8, too large, undecodable)
	quotaHeaders [][2]string  // rate-limit headers for the response (allowed, or IETF on 429)
	entry        *memo.Entry  // the remembered decision this request used, if any
	tenant       string       // the verified tenant the request acts for (facts.Facts.Tenant)
	segs         [6]string    // storage for path.Segments of ordinary paths
	// OPA-Envoy compatibility mode (opaenvoy.go): the input built before
	// evaluation, the policy's decision and its dynamic metadata.
	opaEnvoy   bool
	envoyInput ast.Value
	envoy      *policy.Envoy
	envoyMeta  *structpb.Struct
}

// rawHeaders reads the headers Envoy sends as header_map (encode_raw_headers:
// true) the way it would have filled the headers map: lower-case names,
// repeated headers joined with ",". A raw value that is not UTF-8 is a
// problem: the request is denied request_invalid.
func rawHeaders(hm *corev3.HeaderMap) (map[string]string, wire.Problem) {
	var problem wire.Problem
	out := make(map[string]string, len(hm.GetHeaders()))
	for _, hv := range hm.GetHeaders() {
		k, v := strings.ToLower(hv.GetKey()), hv.GetValue()
		if raw := hv.GetRawValue(); len(raw) > 0 {
			if !utf8.Valid(raw) {
				problem = wire.NotUTF8
			}
			v = string(raw)
		}
		if prev, ok := out[k]; ok {
			v = prev + "," + v
		}
		out[k] = v
	}
	return out, problem
}

// identity is the credential's identity, whatever its status.
func (r *request) identity() *authn.Identity { return r.f.Credential.Identity }

// browserSignals are request headers only browsers send on their own.
var browserSignals = []string{"origin", "sec-fetch-mode", "sec-fetch-site", "sec-fetch-dest", "cookie"}

// requestToInput is step one: it resolves the facts the policy needs.
// The OPA value of the input is built only when the policy has to be
// evaluated (request.value; see decide).
// It fills r step by step, so that if anything fails midway the request id
// and profile already resolved still shape the error response.
func (s *Server) requestToInput(ctx context.Context, eng *engine.Engine, req *authv3.CheckRequest, now time.Time, decisionID string, r *request) {
	attrs := req.GetAttributes()
	h := attrs.GetRequest().GetHttp()
	headers := h.GetHeaders()
	problem := wire.ProblemOf(req)
	if len(headers) == 0 && h.GetHeaderMap() != nil { // Envoy's encode_raw_headers
		var rawProblem wire.Problem
		headers, rawProblem = rawHeaders(h.GetHeaderMap())
		problem = cmp.Or(problem, rawProblem)
	}
	if problem == "" && h != nil && !wellFormed(h.GetMethod(), h.GetPath(), headers) {
		problem = malformed
	}
	*r = request{req: req, eng: eng, headers: headers, id: s.requestID(headers), problem: problem, opaEnvoy: eng.OPAEnvoy()}
	if r.id == "" {
		r.id = decisionID
	}
	f := &r.f
	f.RequestID, f.Method = r.id, h.GetMethod()
	if h == nil {
		r.setupFail = true
	}
	rawPath := h.GetPath()
	if rawPath == "" {
		rawPath = headers[":path"]
	}
	r.path = pathcanon.ParseInto(rawPath, r.segs[:0])
	f.Path, f.PathProblem = r.path.Canonical, r.path.Problem
	ce := attrs.GetContextExtensions()
	r.route(eng, ce)
	if f.Route != nil {
		for i, th := range f.Route.Req.TenantHeaders {
			if v, ok := headers[th.Key]; ok {
				f.Tenants.Set(i, v)
			}
		}
	}
	for _, h := range browserSignals {
		if _, ok := headers[h]; ok {
			f.Browser = true
			break
		}
	}
	f.IdempotencyKey = headers["idempotency-key"] != ""

	// Credential: found, then verified.
	r.cred = credential.Extract(headers, eng.Settings.APIKeyHeader)
	f.Credential.Kind, f.Credential.Via = r.cred.Kind, r.cred.Via
	f.Credential.Status, f.Credential.Identity = s.verify(ctx, eng, r.cred, now)

	// Client address.
	src := attrs.GetSource().GetAddress().GetSocketAddress().GetAddress()
	f.ClientIP, _ = s.ClientIP.Resolve(src, headers["x-forwarded-for"])
	r.tenant = f.Tenant()
}

// route resolves the route and the profile of r's method and path under
// the Envoy route's context extensions ce (r.routeErr: ce names what the
// policy does not have).
func (r *request) route(eng *engine.Engine, ce map[string]string) {
	f := &r.f
	// Route: an Envoy route may name it; otherwise the prepared matcher.
	if id, ok := ce[route.CERoute]; ok {
		if rt, found := eng.Routes.ByID(id); found {
			f.Route = rt
		} else {
			r.routeErr = errUnknownRoute
		}
	} else if r.path.Problem == "" {
		f.Route = eng.Routes.MatchPath(f.Method, r.path.Canonical, r.path.Segments)
	}
	if f.Route != nil && route.HasOverrides(ce) {
		if f.Route, r.routeErr = eng.Routes.WithOverrides(f.Route, ce); r.routeErr == nil {
			r.routeErr = eng.CheckTenantHeaders(f.Route)
		}
	}
	if len(ce) > 0 && r.routeErr == nil && eng.Policy != nil && eng.Policy.Pure() {
		// A policy of facts alone cannot read a key the sidecar does not:
		// a typo ("profle") would serve the wrong contract silently.
		if k := route.UnknownCE(ce); k != "" {
			r.routeErr = fmt.Errorf("context_extensions.%s is not a key extauthz reads (known: %s)", k, strings.Join(route.CEKeys(), ", "))
		}
	}
	f.Profile = eng.Settings.DefaultProfile
	if f.Route != nil && f.Route.Req.Profile != "" {
		f.Profile = f.Route.Req.Profile
	}
	if p, ok := ce[route.CEProfile]; ok {
		if _, known := eng.Profiles.Get(p); known {
			f.Profile = p
		} else {
			r.routeErr = errUnknownProfile
		}
	}
}

// Input is the policy input as an OPA value (memo.Input).
func (r *request) Input() ast.Value {
	if r.envoyInput != nil {
		return r.envoyInput
	}
	return buildInput(r.req, r)
}

func (s *Server) verify(ctx context.Context, eng *engine.Engine, p credential.Presented, now time.Time) (authn.Status, *authn.Identity) {
	switch {
	case p.Kind == credential.None:
		return authn.Missing, nil
	case p.Problem == credential.ProblemScheme:
		return authn.WrongScheme, nil
	case p.Problem != "":
		return authn.Malformed, nil
	case p.Kind == credential.APIKey:
		res := eng.LookupKey(ctx, p.Value, now)
		return res.Status, res.Identity
	case p.Kind == credential.JWT:
		if eng.Tokens == nil {
			return authn.Unknown, nil
		}
		return eng.Tokens.Verify(ctx, p.Value)
	}
	return authn.Malformed, nil
}

var (
	kAttributes   = ast.StringTerm("attributes")
	kParsedPath   = ast.StringTerm("parsed_path")
	kParsedQuery  = ast.StringTerm("parsed_query")
	kExtauthz     = ast.StringTerm("extauthz")
	kRequest      = ast.StringTerm("request")
	kHTTP         = ast.StringTerm("http")
	kHeaders      = ast.StringTerm("headers")
	kMethod       = ast.StringTerm("method")
	kPath         = ast.StringTerm("path")
	kHost         = ast.StringTerm("host")
	kScheme       = ast.StringTerm("scheme")
	kID           = ast.StringTerm("id")
	kProtocol     = ast.StringTerm("protocol")
	kSource       = ast.StringTerm("source")
	kAddress      = ast.StringTerm("address")
	kSocket       = ast.StringTerm("socketAddress")
	kPortValue    = ast.StringTerm("portValue")
	kCtxExt       = ast.StringTerm("contextExtensions")
	emptyObjTerm  = ast.ObjectTerm()
	emptyQueryObj = ast.ObjectTerm()
)

// buildInput makes input as an OPA value: the OPA-Envoy plugin's fields plus
// input.extauthz. Values are referenced, not copied, where they are prebuilt
// (route, identity).
func buildInput(req *authv3.CheckRequest, r *request) ast.Value {
	attrs := req.GetAttributes()
	h := attrs.GetRequest().GetHttp()

	hdrs := ast.NewObject()
	for k, v := range r.headers {
		hdrs.Insert(ast.StringTerm(k), ast.StringTerm(v))
	}
	httpObj := ast.NewObject(
		ast.Item(kID, ast.StringTerm(h.GetId())),
		ast.Item(kMethod, ast.StringTerm(h.GetMethod())),
		ast.Item(kPath, ast.StringTerm(h.GetPath())),
		ast.Item(kHost, ast.StringTerm(h.GetHost())),
		ast.Item(kScheme, ast.StringTerm(h.GetScheme())),
		ast.Item(kProtocol, ast.StringTerm(h.GetProtocol())),
		ast.Item(kHeaders, ast.NewTerm(hdrs)),
	)
	sa := attrs.GetSource().GetAddress().GetSocketAddress()
	source := ast.ObjectTerm(ast.Item(kAddress, ast.ObjectTerm(ast.Item(kSocket, ast.ObjectTerm(
		ast.Item(kAddress, ast.StringTerm(sa.GetAddress())),
		ast.Item(kPortValue, ast.IntNumberTerm(int(sa.GetPortValue()))),
	)))))
	ceObj := emptyObjTerm
	if ce := attrs.GetContextExtensions(); len(ce) > 0 {
		o := ast.NewObject()
		for k, v := range ce {
			o.Insert(ast.StringTerm(k), ast.StringTerm(v))
		}
		ceObj = ast.NewTerm(o)
	}
	attributes := ast.ObjectTerm(
		ast.Item(kSource, source),
		ast.Item(kRequest, ast.ObjectTerm(ast.Item(kHTTP, ast.NewTerm(httpObj)))),
		ast.Item(kCtxExt, ceObj),
	)

	segs := make([]*ast.Term, len(r.path.Segments))
	for i, s := range r.path.Segments {
		segs[i] = ast.StringTerm(s)
	}
	query := emptyQueryObj
	if r.path.Query != "" {
		query = parseQuery(r.path.Query)
	}

	return ast.NewObject(
		ast.Item(kAttributes, attributes),
		ast.Item(kParsedPath, ast.ArrayTerm(segs...)),
		ast.Item(kParsedQuery, query),
		ast.Item(kExtauthz, ast.NewTerm(r.f.Value())),
	)
}

// parseQuery builds parsed_query as the OPA-Envoy plugin does: key -> [values].
func parseQuery(q string) *ast.Term {
	vals := map[string][]*ast.Term{}
	var order []string
	for q != "" {
		var kv string
		kv, q, _ = cut(q, '&')
		if kv == "" {
			continue
		}
		k, v, _ := cut(kv, '=')
		k, v = unescape(k), unescape(v)
		if _, ok := vals[k]; !ok {
			order = append(order, k)
		}
		vals[k] = append(vals[k], ast.StringTerm(v))
	}
	o := ast.NewObject()
	for _, k := range order {
		o.Insert(ast.StringTerm(k), ast.ArrayTerm(vals[k]...))
	}
	return ast.NewTerm(o)
}

func cut(s string, sep byte) (string, string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == sep {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// unescape decodes query escapes; malformed escapes are kept verbatim.
func unescape(s string) string {
	hasEsc := false
	for i := 0; i < len(s); i++ {
		if s[i] == '%' || s[i] == '+' {
			hasEsc = true
			break
		}
	}
	if !hasEsc {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '+':
			b = append(b, ' ')
		case s[i] == '%' && i+2 < len(s):
			if n, err := strconv.ParseUint(s[i+1:i+3], 16, 8); err == nil {
				b = append(b, byte(n))
				i += 2
				continue
			}
			b = append(b, s[i])
		default:
			b = append(b, s[i])
		}
	}
	return string(b)
}
