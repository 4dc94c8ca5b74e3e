package check

import (
	"context"
	"net/netip"
	"strconv"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/extauthz/extauthz/internal/authn"
	"github.com/extauthz/extauthz/internal/credential"
	"github.com/extauthz/extauthz/internal/engine"
	"github.com/extauthz/extauthz/internal/pathcanon"
	"github.com/extauthz/extauthz/internal/policy"
	"github.com/extauthz/extauthz/internal/route"
)

// request is what step one resolved about a CheckRequest.
type request struct {
	req       *authv3.CheckRequest
	id        string // request id (x-request-id or generated)
	method    string
	path      pathcanon.Path
	route     *route.Route
	routeErr  error // bad context_extensions: fail closed
	profile   string
	cred      credential.Presented
	status    authn.Status
	identity  *authn.Identity
	clientIP  netip.Addr
	headers   map[string]string
	setupFail bool // the request could not be understood at all (no HTTP attributes)
	// Request facts the rulebook reads instead of raw headers.
	tenantValues [][2]string // route's tenant headers present: lower-case name, value
	browser      bool        // a browser signal is present (Origin, Sec-Fetch-*, Cookie)
	idempotency  bool        // Idempotency-Key present and non-empty
	ceKey        string      // the context_extensions overrides, for the decision cache key
	purity       policy.Purity
	quotaHeaders [][2]string // rate-limit headers for the response (allowed, or IETF on 429)
	memo         *memoEntry  // the remembered decision this request used, if any
	tenant       string      // the tenant the request acts for (see actingTenant)
	segs         [6]string   // storage for path.Segments of ordinary paths
}

// browserSignals are request headers only browsers send on their own.
var browserSignals = []string{"origin", "sec-fetch-mode", "sec-fetch-site", "sec-fetch-dest", "cookie"}

// requestToInput is step one: it resolves the facts the policy needs and
// builds the policy input directly as an OPA value.
// The OPA value of the input is built only when the policy has to be
// evaluated (request.value; see decide).
// It fills r step by step, so that if anything fails midway the request id
// and profile already resolved still shape the error response.
func (s *Server) requestToInput(ctx context.Context, eng *engine.Engine, req *authv3.CheckRequest, now time.Time, decisionID string, r *request) {
	attrs := req.GetAttributes()
	h := attrs.GetRequest().GetHttp()
	headers := h.GetHeaders()
	*r = request{req: req, headers: headers, method: h.GetMethod(), id: s.requestID(headers)}
	if r.id == "" {
		r.id = decisionID
	}
	if h == nil {
		r.setupFail = true
	}
	rawPath := h.GetPath()
	if rawPath == "" {
		rawPath = headers[":path"]
	}
	r.path = pathcanon.ParseInto(rawPath, r.segs[:0])
	ce := attrs.GetContextExtensions()

	// Route: an Envoy route may name it; otherwise the prepared matcher.
	if id, ok := ce[route.CERoute]; ok {
		if rt, found := eng.Routes.ByID(id); found {
			r.route = rt
		} else {
			r.routeErr = errUnknownRoute
		}
	} else if r.path.Problem == "" {
		r.route = eng.Routes.Match(r.method, r.path.Segments)
	}
	if r.route != nil && route.HasOverrides(ce) {
		r.ceKey = ce[route.CEAuth] + "\x00" + ce[route.CEScopes] + "\x00" + ce[route.CETenantHeader] + "\x00" + ce[route.CETenantFormat] + "\x00" + ce[route.CETenantRequired]
		r.route, r.routeErr = r.route.WithOverrides(ce)
	}
	if r.route != nil {
		for _, th := range r.route.Req.TenantHeaders {
			if v, ok := headers[th.Key]; ok {
				r.tenantValues = append(r.tenantValues, [2]string{th.Key, v})
			}
		}
	}
	for _, h := range browserSignals {
		if _, ok := headers[h]; ok {
			r.browser = true
			break
		}
	}
	r.idempotency = headers["idempotency-key"] != ""
	r.profile = eng.Settings.DefaultProfile
	if r.route != nil && r.route.Req.Profile != "" {
		r.profile = r.route.Req.Profile
	}
	if p, ok := ce[route.CEProfile]; ok {
		if _, known := eng.Profiles.Get(p); known {
			r.profile = p
		} else {
			r.routeErr = errUnknownProfile
		}
	}

	// Credential: found, then verified.
	r.cred = credential.Extract(headers, eng.Settings.APIKeyHeader)
	r.status, r.identity = s.verify(ctx, eng, r.cred, now)

	// Client address.
	src := attrs.GetSource().GetAddress().GetSocketAddress().GetAddress()
	r.clientIP, _ = s.ClientIP.Resolve(src, headers["x-forwarded-for"])
	r.tenant = actingTenant(r)
}

// actingTenant is the tenant the request acts for: the first non-empty tenant
// header the route reads, else the credential's only tenant. Upstream headers,
// metadata, quotas and logs all use it; the policy has checked it belongs to
// the credential before any of them is used.
func actingTenant(r *request) string {
	for _, tv := range r.tenantValues {
		if tv[1] != "" {
			return tv[1]
		}
	}
	if r.identity != nil {
		if t := r.identity.Tenants[authn.DefaultDimension]; len(t) == 1 {
			return t[0]
		}
	}
	return ""
}

// value is the policy input as an OPA value.
func (r *request) value() ast.Value { return buildInput(r.req, r) }

func (s *Server) verify(ctx context.Context, eng *engine.Engine, p credential.Presented, now time.Time) (authn.Status, *authn.Identity) {
	switch {
	case p.Kind == credential.None:
		return authn.Missing, nil
	case p.Problem == credential.ProblemScheme:
		return authn.WrongScheme, nil
	case p.Problem != "":
		return authn.Malformed, nil
	case p.Kind == credential.APIKey:
		res := eng.Keys.Lookup(p.Value, now)
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
	kRequestID    = ast.StringTerm("request_id")
	kClientIP     = ast.StringTerm("client_ip")
	kPathProblem  = ast.StringTerm("path_problem")
	kRoute        = ast.StringTerm("route")
	kCredential   = ast.StringTerm("credential")
	kKind         = ast.StringTerm("kind")
	kVia          = ast.StringTerm("via")
	kStatus       = ast.StringTerm("status")
	kIdentity     = ast.StringTerm("identity")
	kProfile      = ast.StringTerm("profile")
	kTenantValues = ast.StringTerm("tenant_values")
	kBrowser      = ast.StringTerm("browser")
	kIdempotency  = ast.StringTerm("idempotency_key")
	nullTerm      = ast.NullTerm()
	emptyObjTerm  = ast.ObjectTerm()
	emptyArrTerm  = ast.ArrayTerm()
	emptyStrTerm  = ast.StringTerm("")
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

	routeTerm := nullTerm
	if r.route != nil {
		routeTerm = ast.NewTerm(r.route.Value())
	}
	credItems := [][2]*ast.Term{
		ast.Item(kKind, ast.StringTerm(string(r.cred.Kind))),
		ast.Item(kVia, ast.StringTerm(string(r.cred.Via))),
		ast.Item(kStatus, ast.StringTerm(string(r.status))),
	}
	if r.identity != nil {
		credItems = append(credItems, ast.Item(kIdentity, ast.NewTerm(r.identity.Value())))
	}
	clientIP := emptyStrTerm
	if r.clientIP.IsValid() {
		clientIP = ast.StringTerm(r.clientIP.String())
	}
	tenantItems := make([][2]*ast.Term, len(r.tenantValues))
	for i, tv := range r.tenantValues {
		tenantItems[i] = ast.Item(ast.StringTerm(tv[0]), ast.StringTerm(tv[1]))
	}
	facts := ast.ObjectTerm(
		ast.Item(kRequestID, ast.StringTerm(r.id)),
		ast.Item(kMethod, ast.StringTerm(r.method)),
		ast.Item(kPath, ast.StringTerm(r.path.Canonical)),
		ast.Item(kPathProblem, ast.StringTerm(r.path.Problem)),
		ast.Item(kClientIP, clientIP),
		ast.Item(kRoute, routeTerm),
		ast.Item(kProfile, ast.StringTerm(r.profile)),
		ast.Item(kCredential, ast.ObjectTerm(credItems...)),
		ast.Item(kTenantValues, ast.ObjectTerm(tenantItems...)),
		ast.Item(kBrowser, ast.BooleanTerm(r.browser)),
		ast.Item(kIdempotency, ast.BooleanTerm(r.idempotency)),
	)
	return ast.NewObject(
		ast.Item(kAttributes, attributes),
		ast.Item(kParsedPath, ast.ArrayTerm(segs...)),
		ast.Item(kParsedQuery, query),
		ast.Item(kExtauthz, facts),
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
