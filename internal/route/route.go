// Package route matches a request's method and canonical path to the route
// requirements written in policy data (extauthz.routes), with a prepared
// segment trie so matching costs O(path depth) however many routes there are.
// Envoy routes can override requirements through context_extensions.
package route

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/extauthz/extauthz/internal/authn"
	"github.com/extauthz/extauthz/internal/decision"
	"github.com/extauthz/extauthz/internal/httpheader"
	"github.com/extauthz/extauthz/internal/jsonx"
)

// Credential kinds a route may accept.
const (
	AuthAPIKey       = "api_key"        // API key in the API-key header
	AuthAPIKeyBearer = "api_key_bearer" // API key as Authorization: Bearer
	AuthJWT          = "jwt"            // bearer JWT
)

// Tenant header formats.
const (
	FormatAny             = "any"
	FormatPositiveInteger = "positive_integer"
	FormatUUID            = "uuid"
	FormatSlug            = "slug"
)

// TenantHeader is one tenancy header a route reads.
type TenantHeader struct {
	Header    string `json:"header"`              // as documented, e.g. "X-Tenant-Id"
	Dimension string `json:"dimension,omitempty"` // which credential tenants it is checked against; default "tenant"
	Format    string `json:"format,omitempty"`    // any (default), positive_integer, uuid, slug
	Required  bool   `json:"required,omitempty"`
	Key       string `json:"-"` // lower-case Header, as Envoy sends it
}

// Requirements is what a route demands.
type Requirements struct {
	Public              bool           `json:"public,omitempty"`                 // no credential needed
	Auth                []string       `json:"auth,omitempty"`                   // accepted kinds; default [api_key, jwt]
	Scopes              []string       `json:"scopes,omitempty"`                 // all required
	TenantHeaders       []TenantHeader `json:"tenant_headers,omitempty"`         // checked in order
	Profile             string         `json:"profile,omitempty"`                // deny envelope
	IdempotencyKey      bool           `json:"idempotency_key,omitempty"`        // require Idempotency-Key
	RejectBrowserAPIKey bool           `json:"reject_browser_api_key,omitempty"` // refuse API keys from browsers
	// Shadow lists deny reasons that are only recorded, not enforced, on
	// this route ("*": every reason but the fail-closed ones, which must
	// be named).
	Shadow []string `json:"shadow,omitempty"`
}

// Def is a route in policy data.
type Def struct {
	ID      string   `json:"id"`
	Methods []string `json:"methods,omitempty"` // empty = any
	Path    string   `json:"path"`              // literal segments and {param} segments
	Prefix  bool     `json:"prefix,omitempty"`  // also match everything below Path
	Requirements
}

// MaxTenantHeaders bounds the tenant headers of one route.
const MaxTenantHeaders = 4

// Route is a compiled route. Within one table a *Route is the route's
// identity: two requests with the same pointer face the same requirements
// (Table.WithOverrides returns one pointer per distinct override).
type Route struct {
	ID  string
	Req Requirements
	val ast.Value
}

// Value is the route as the policy sees it (input.extauthz.route).
func (r *Route) Value() ast.Value { return r.val }

// Table is an immutable route table.
type Table struct {
	root     *trieNode
	byID     map[string]*Route
	fallback *Route

	slashRoutes bool // an exact route is written with a trailing slash

	overridden sync.Map // overrideKey -> *Route; see WithOverrides
	nOverrides atomic.Int32
}

type trieNode struct {
	lit    map[string]*trieNode
	param  *trieNode
	exact  map[string]*Route // method ("*" = any) -> route
	prefix map[string]*Route
}

// Parse compiles the routes and the optional default route (used when no
// route matches; nil means unmatched requests are denied route_not_found).
// Errors name the route index and field; every problem is reported.
func Parse(routesRaw, defaultRaw json.RawMessage, profiles func(string) bool) (*Table, error) {
	t := &Table{root: &trieNode{}, byID: map[string]*Route{}}
	var raws []json.RawMessage
	if len(routesRaw) > 0 && string(routesRaw) != "null" {
		if err := jsonx.Strict(routesRaw, &raws); err != nil {
			return nil, jsonx.At("routes", err)
		}
	}
	var errs []error
	firstOf := map[string]int{}
	for i, raw := range raws {
		where := fmt.Sprintf("routes[%d]", i)
		var d Def
		if err := jsonx.Strict(raw, &d); err != nil {
			errs = append(errs, jsonx.At(where, err))
			continue
		}
		if d.ID == "" {
			errs = append(errs, fmt.Errorf("%s.id: required", where))
			continue
		}
		named := func(err error) error { return prefixErr(where, err, fmt.Sprintf(" (route %q)", d.ID)) }
		if d.ID == DefaultID {
			errs = append(errs, fmt.Errorf("%s.id: %q is reserved for default_route", where, d.ID))
			continue
		}
		if j, dup := firstOf[d.ID]; dup {
			errs = append(errs, fmt.Errorf("%s.id: %q is already the id of routes[%d]", where, d.ID, j))
			continue
		}
		firstOf[d.ID] = i
		var merrs []error
		for j, m := range d.Methods {
			if !httpMethods[strings.ToUpper(m)] {
				merrs = append(merrs, fmt.Errorf("methods[%d]: unknown method %q (known: %s)", j, m, methodList))
			}
		}
		if len(merrs) > 0 {
			errs = append(errs, named(errors.Join(merrs...)))
			continue
		}
		r, err := compile(d.ID, d.Requirements, profiles)
		if err != nil {
			errs = append(errs, named(err))
			continue
		}
		if err := t.insert(d, r); err != nil {
			errs = append(errs, named(err))
			continue
		}
		t.byID[d.ID] = r
	}
	if len(defaultRaw) > 0 && string(defaultRaw) != "null" {
		var req Requirements
		if err := jsonx.Strict(defaultRaw, &req); err != nil {
			errs = append(errs, jsonx.At("default_route", err))
		} else if r, err := compile(DefaultID, req, profiles); err != nil {
			errs = append(errs, prefixErr("default_route", err, ""))
		} else {
			t.fallback = r
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return t, nil
}

// httpMethods are the methods a route may name (any case).
var httpMethods = map[string]bool{
	"GET": true, "HEAD": true, "POST": true, "PUT": true, "PATCH": true, "DELETE": true,
	"OPTIONS": true, "TRACE": true, "CONNECT": true,
}

const methodList = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, TRACE, CONNECT"

func prefixErr(where string, err error, suffix string) error {
	var out []error
	for _, e := range unjoin(err) {
		out = append(out, fmt.Errorf("%s.%w%s", where, e, suffix))
	}
	return errors.Join(out...)
}

func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func (t *Table) insert(d Def, r *Route) error {
	if !strings.HasPrefix(d.Path, "/") {
		return fmt.Errorf("path: %q must start with /", d.Path)
	}
	n := t.root
	for s := range strings.SplitSeq(strings.Trim(d.Path, "/"), "/") {
		if s == "" {
			continue
		}
		if strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}") {
			if n.param == nil {
				n.param = &trieNode{}
			}
			n = n.param
			continue
		}
		if s == "." || s == ".." || strings.ContainsAny(s, "%;\\{}") {
			return fmt.Errorf("path: segment %q is not canonical", s)
		}
		if strings.ContainsAny(s, "?# \"<>`^") || strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r >= 0x7f }) {
			// A query, a fragment, or a byte the canonical path never holds
			// (internal/pathcanon refuses it raw and keeps it escaped): no
			// request could ever match it.
			return fmt.Errorf("path: segment %q has a character no canonical request path holds (?, #, a space, \", <, >, `, ^, a control character or non-ASCII)", s)
		}
		if n.lit == nil {
			n.lit = map[string]*trieNode{}
		}
		c := n.lit[s]
		if c == nil {
			c = &trieNode{}
			n.lit[s] = c
		}
		n = c
	}
	if !d.Prefix && len(d.Path) > 1 && strings.HasSuffix(d.Path, "/") {
		// "/v1/posts/" is another path than "/v1/posts": its own node,
		// under the empty last segment Match is given for it.
		if n.lit == nil {
			n.lit = map[string]*trieNode{}
		}
		if n.lit[""] == nil {
			n.lit[""] = &trieNode{}
		}
		n = n.lit[""]
		t.slashRoutes = true
	}
	m := &n.exact
	if d.Prefix {
		m = &n.prefix
	}
	if *m == nil {
		*m = map[string]*Route{}
	}
	methods := d.Methods
	if len(methods) == 0 {
		methods = []string{"*"}
	}
	for _, meth := range methods {
		meth = strings.ToUpper(meth)
		if _, dup := (*m)[meth]; dup {
			return fmt.Errorf("path: %s %s is already routed", meth, d.Path)
		}
		(*m)[meth] = r
	}
	return nil
}

func compile(id string, req Requirements, profiles func(string) bool) (*Route, error) {
	var errs []error
	if !req.Public && len(req.Auth) == 0 {
		req.Auth = []string{AuthAPIKey, AuthJWT}
	}
	for i, a := range req.Auth {
		if a != AuthAPIKey && a != AuthAPIKeyBearer && a != AuthJWT {
			errs = append(errs, fmt.Errorf("auth[%d]: %q is not one of api_key, api_key_bearer, jwt", i, a))
		}
	}
	if len(req.TenantHeaders) > MaxTenantHeaders {
		errs = append(errs, fmt.Errorf("tenant_headers: %d headers; at most %d", len(req.TenantHeaders), MaxTenantHeaders))
	}
	seen := map[string]bool{}
	for i, sc := range req.Scopes {
		if strings.TrimSpace(sc) == "" {
			errs = append(errs, fmt.Errorf("scopes[%d]: empty scope", i))
		} else if !authn.ScopeToken(sc) {
			errs = append(errs, fmt.Errorf("scopes[%d]: %q is not a scope: printable ASCII without spaces, quotes or backslashes (RFC 6749)", i, sc))
		}
	}
	for i := range req.TenantHeaders {
		th := &req.TenantHeaders[i]
		if th.Dimension == "" {
			th.Dimension = authn.DefaultDimension
		}
		if err := authn.CheckDimension(th.Dimension); err != nil {
			errs = append(errs, fmt.Errorf("tenant_headers[%d].dimension: %w", i, err))
		}
		if th.Format == "" {
			th.Format = FormatAny
		}
		th.Key = strings.ToLower(th.Header)
		if seen[th.Key] {
			errs = append(errs, fmt.Errorf("tenant_headers[%d].header: %q is listed twice", i, th.Header))
		}
		seen[th.Key] = true
		if !httpheader.Name(th.Key) {
			errs = append(errs, fmt.Errorf("tenant_headers[%d].header: %q is not a header name", i, th.Header))
		} else if httpheader.Credential(th.Key) {
			errs = append(errs, fmt.Errorf("tenant_headers[%d].header: %q carries credentials: its value would be echoed in denies and logged", i, th.Header))
		}
		switch th.Format {
		case FormatAny, FormatPositiveInteger, FormatUUID, FormatSlug:
		default:
			errs = append(errs, fmt.Errorf("tenant_headers[%d].format: %q is not one of any, positive_integer, uuid, slug", i, th.Format))
		}
	}
	for i, reason := range req.Shadow {
		if reason != "*" && (!decision.Known(decision.Reason(reason)) || reason == string(decision.OK)) {
			errs = append(errs, fmt.Errorf("shadow[%d]: %q is not a deny reason or \"*\"", i, reason))
		}
	}
	if req.Profile != "" && profiles != nil && !profiles(req.Profile) {
		errs = append(errs, fmt.Errorf("profile: unknown profile %q", req.Profile))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	r := &Route{ID: id, Req: req}
	r.val = r.build()
	return r, nil
}

func (r *Route) build() ast.Value {
	ths := make([]*ast.Term, len(r.Req.TenantHeaders))
	for i, th := range r.Req.TenantHeaders {
		ths[i] = ast.ObjectTerm(
			ast.Item(ast.StringTerm("header"), ast.StringTerm(th.Header)),
			ast.Item(ast.StringTerm("key"), ast.StringTerm(th.Key)),
			ast.Item(ast.StringTerm("dimension"), ast.StringTerm(th.Dimension)),
			ast.Item(ast.StringTerm("format"), ast.StringTerm(th.Format)),
			ast.Item(ast.StringTerm("required"), ast.BooleanTerm(th.Required)),
		)
	}
	return ast.NewObject(
		ast.Item(ast.StringTerm("id"), ast.StringTerm(r.ID)),
		ast.Item(ast.StringTerm("public"), ast.BooleanTerm(r.Req.Public)),
		ast.Item(ast.StringTerm("auth"), ast.SetTerm(strTerms(r.Req.Auth)...)),
		ast.Item(ast.StringTerm("scopes"), ast.ArrayTerm(strTerms(r.Req.Scopes)...)),
		ast.Item(ast.StringTerm("tenant_headers"), ast.ArrayTerm(ths...)),
		ast.Item(ast.StringTerm("idempotency_key"), ast.BooleanTerm(r.Req.IdempotencyKey)),
		ast.Item(ast.StringTerm("reject_browser_api_key"), ast.BooleanTerm(r.Req.RejectBrowserAPIKey)),
	)
}

func strTerms(ss []string) []*ast.Term {
	out := make([]*ast.Term, len(ss))
	for i, s := range ss {
		out[i] = ast.StringTerm(s)
	}
	return out
}

// Match finds the route for method and canonical path segments: an exact
// route beats a prefix route, a literal segment beats a {param}, a longer
// prefix beats a shorter one; a {param} never matches an empty segment
// (the one MatchPath adds for a trailing slash). It returns the default
// route (or nil) when nothing matches.
func (t *Table) Match(method string, segs []string) *Route {
	r, prefix := t.walk(method, segs)
	if r != nil {
		return r
	}
	if prefix != nil {
		return prefix
	}
	return t.fallback
}

// walk finds the exact route for method and segs, and the longest prefix
// route on the way (either may be nil).
func (t *Table) walk(method string, segs []string) (exact, prefix *Route) {
	bestDepth := -1
	var walk func(n *trieNode, i int) *Route
	walk = func(n *trieNode, i int) *Route {
		if r := pick(n.prefix, method); r != nil && i > bestDepth {
			prefix, bestDepth = r, i
		}
		if i == len(segs) {
			return pick(n.exact, method)
		}
		if c := n.lit[segs[i]]; c != nil {
			if r := walk(c, i+1); r != nil {
				return r
			}
		}
		if n.param != nil && segs[i] != "" {
			return walk(n.param, i+1)
		}
		return nil
	}
	return walk(t.root, 0), prefix
}

// MatchPath finds the route for method and a canonical path with its
// segments (pathcanon). A trailing slash is another path: "/v1/items/"
// matches an exact route only when written with that slash. When none is,
// but the path without the slash is an exact route, there is no route (nil):
// many upstreams serve "/x/" as "/x", so it must not fall through to a
// prefix route or default_route that asks for less than "/x" does.
func (t *Table) MatchPath(method, canonical string, segs []string) *Route {
	if strings.IndexByte(canonical, '%') >= 0 {
		segs = literalForm(segs)
	}
	if len(segs) == 0 {
		return t.Match(method, segs)
	}
	if !strings.HasSuffix(canonical, "/") {
		// And the other way round: "/x" when only "/x/" is an exact route.
		if t.slashRoutes && t.exact(method, segs) == nil && t.exact(method, append(segs[:len(segs):len(segs)], "")) != nil {
			return nil
		}
		return t.Match(method, segs)
	}
	slashed := append(segs[:len(segs):len(segs)], "")
	if r := t.exact(method, slashed); r != nil {
		return r
	}
	if t.exact(method, segs) != nil {
		return nil
	}
	return t.Match(method, slashed)
}

// literalForm is segs with the escapes of characters a route literal may
// hold decoded ("users%3AbatchDelete" is "users:batchDelete"): the
// canonical path keeps them escaped, but upstreams decode them, so a
// request must reach the route the upstream will serve, not a weaker prefix
// or {param} route. Escapes of '/', '?', '#', '%' and ';' stay.
func literalForm(segs []string) []string {
	var out []string
	for i, s := range segs {
		if strings.IndexByte(s, '%') < 0 {
			continue
		}
		var b strings.Builder
		for j := 0; j < len(s); j++ {
			if s[j] == '%' && j+2 < len(s) {
				if c, err := strconv.ParseUint(s[j+1:j+3], 16, 8); err == nil && strings.IndexByte(":@!$&'()*+,=|[]", byte(c)) >= 0 {
					b.WriteByte(byte(c))
					j += 2
					continue
				}
			}
			b.WriteByte(s[j])
		}
		if d := b.String(); d != s {
			if out == nil {
				out = slices.Clone(segs)
			}
			out[i] = d
		}
	}
	if out == nil {
		return segs
	}
	return out
}

// exact is the exact route for method and segs, or nil.
func (t *Table) exact(method string, segs []string) *Route {
	r, _ := t.walk(method, segs)
	return r
}

// ByID returns a route by id (context_extensions "route").
func (t *Table) ByID(id string) (*Route, bool) {
	r, ok := t.byID[id]
	return r, ok
}

// HasDefault reports whether unmatched requests get the default route.
func (t *Table) HasDefault() bool { return t.fallback != nil }

// Len is the number of routes.
func (t *Table) Len() int { return len(t.byID) }

// All lists the routes by id, then default_route when there is one.
func (t *Table) All() []*Route {
	out := make([]*Route, 0, len(t.byID)+1)
	for _, id := range slices.Sorted(maps.Keys(t.byID)) {
		out = append(out, t.byID[id])
	}
	if t.fallback != nil {
		out = append(out, t.fallback)
	}
	return out
}

func pick(m map[string]*Route, method string) *Route {
	if m == nil {
		return nil
	}
	if r := m[method]; r != nil {
		return r
	}
	return m["*"]
}

// Context extension keys an Envoy route may set.
const (
	CEProfile        = "profile"
	CERoute          = "route"
	CEAuth           = "auth"
	CEScopes         = "scopes"
	CETenantHeader   = "tenant_header"
	CETenantFormat   = "tenant_format"
	CETenantRequired = "tenant_required"
	CEShadow         = "shadow" // comma-separated deny reasons, or "*"
)

// UnknownCE is a key of ce the sidecar does not read ("" when there is
// none): with a policy that reads only the sidecar's facts, such a key (a
// typo of profile or scopes) would silently change nothing.
func UnknownCE(ce map[string]string) string {
	unknown := ""
	for k := range ce {
		if k != CEProfile && k != CERoute && !slices.Contains(overrideKeys, k) && (unknown == "" || k < unknown) {
			unknown = k // the first in order, so messages do not vary
		}
	}
	return unknown
}

// CEKeys lists the context extension keys the sidecar reads.
func CEKeys() []string { return append([]string{CERoute, CEProfile}, overrideKeys...) }

// HasOverrides reports whether ce changes requirements (beyond route/profile).
func HasOverrides(ce map[string]string) bool {
	for _, k := range overrideKeys {
		if _, ok := ce[k]; ok {
			return true
		}
	}
	return false
}

// Shadows reports whether a deny for reason is only recorded on r.
func (r *Route) Shadows(reason decision.Reason) bool {
	for _, s := range r.Req.Shadow {
		if s == string(reason) || (s == "*" && !decision.FailClosed[reason]) {
			return true
		}
	}
	return false
}

// DefaultID is the id of the default route; no route in data may take it.
const DefaultID = "default"

// maxOverridden bounds the overridden routes a table keeps (Envoy
// configurations name a handful); past it WithOverrides builds afresh.
const maxOverridden = 1024

type overrideKey struct {
	base *Route
	spec string // the override keys present and their values
}

// WithOverrides is base.WithOverrides(ce), one *Route per distinct base and
// override (an absent key and an empty one differ), so that the route
// pointer stays the requirements' identity.
func (t *Table) WithOverrides(base *Route, ce map[string]string) (*Route, error) {
	var b strings.Builder
	for _, k := range overrideKeys {
		if v, ok := ce[k]; ok {
			b.WriteString(strconv.Itoa(len(v)))
			b.WriteByte(':')
			b.WriteString(v)
		} else {
			b.WriteByte('-')
		}
	}
	key := overrideKey{base, b.String()}
	if r, ok := t.overridden.Load(key); ok {
		return r.(*Route), nil
	}
	r, err := base.WithOverrides(ce)
	if err != nil || t.nOverrides.Load() >= maxOverridden {
		return r, err
	}
	if prev, loaded := t.overridden.LoadOrStore(key, r); loaded {
		return prev.(*Route), nil
	}
	t.nOverrides.Add(1)
	return r, nil
}

var overrideKeys = []string{CEAuth, CEScopes, CETenantHeader, CETenantFormat, CETenantRequired, CEShadow}

// WithOverrides returns a route whose requirements are r's overridden by
// context_extensions. The first tenant header (or a new one) takes the
// tenant_* keys.
func (r *Route) WithOverrides(ce map[string]string) (*Route, error) {
	req := r.Req
	req.Auth = slices.Clone(req.Auth)
	req.TenantHeaders = slices.Clone(req.TenantHeaders)
	if v, ok := ce[CEAuth]; ok {
		req.Auth = nil
		req.Public = false
		for a := range strings.SplitSeq(v, ",") {
			if a = strings.TrimSpace(a); a == "public" {
				req.Public = true
			} else if a != "" {
				req.Auth = append(req.Auth, a)
			}
		}
	}
	if v, ok := ce[CEScopes]; ok {
		req.Scopes = strings.Fields(v)
	}
	if v, ok := ce[CEShadow]; ok {
		req.Shadow = nil
		for s := range strings.SplitSeq(v, ",") {
			if s = strings.TrimSpace(s); s != "" {
				req.Shadow = append(req.Shadow, s)
			}
		}
	}
	h, hok := ce[CETenantHeader]
	f, fok := ce[CETenantFormat]
	q, qok := ce[CETenantRequired]
	if hok || fok || qok {
		if len(req.TenantHeaders) == 0 {
			req.TenantHeaders = []TenantHeader{{Header: h}}
		}
		th := &req.TenantHeaders[0]
		if hok {
			th.Header = h
		}
		if fok {
			th.Format = f
		}
		if qok {
			switch q {
			case "true":
				th.Required = true
			case "false":
				th.Required = false
			default:
				return nil, fmt.Errorf("context_extensions.tenant_required: %q is not true or false", q)
			}
		}
	}
	out, err := compile(r.ID, req, nil)
	if err != nil {
		return nil, fmt.Errorf("context_extensions: %w", err)
	}
	return out, nil
}
