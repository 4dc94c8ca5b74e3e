// Package openapi reads an OpenAPI 3.0/3.1 document (YAML or JSON, with
// kin-openapi) and turns its operations' security into extauthz route
// requirements: Import prints a route table for data.json's
// extauthz.routes, Compare reports where a policy's route table is weaker
// than the spec or covers operations the spec does not have.
//
// Mapping:
//   - security: the operation's own, else the document's top-level one. An
//     empty list, or an empty requirement {} among the alternatives
//     (anonymous access allowed), is public.
//   - apiKey schemes in a header are auth api_key (query and cookie keys
//     cannot be checked: a warning); http bearer is jwt, and also
//     api_key_bearer when Options.BearerAPIKeys says bearer tokens may be
//     API keys (except a bearer scheme whose bearerFormat is JWT); oauth2 and
//     openIdConnect are jwt. A scheme may say exactly which kinds it is with
//     the extension x-extauthz-auth: [api_key, api_key_bearer, jwt].
//   - scopes: every scope any alternative lists (OAuth2/OpenID scopes, and
//     the roles OpenAPI 3.1 lets other schemes list); a route demands all of
//     them whatever the credential, so alternatives asking different scopes
//     are warned about.
//   - tenant headers (Options.TenantHeaders): header parameters whose names
//     match the pattern, required as the parameter is; the dimension is the
//     name without "X-" and "-Id" ("X-Workspace-Id": workspace), the format
//     positive_integer for integers, uuid for format uuid, else any.
//   - a required Idempotency-Key header parameter: idempotency_key.
//   - paths: the server base path (Options.BasePath, by default the path of
//     the first server URL) joined to the path template; a segment that is
//     partly templated ("{name}.json") becomes a whole {param} segment (a
//     warning: the route matches more than the operation).
//
// Webhooks (OpenAPI 3.1) are calls the API makes, not requests it answers:
// they are ignored.
package openapi

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"regexp"
	"slices"
	"strings"

	"github.com/getkin/kin-openapi/openapi3"

	"github.com/extauthz/extauthz/internal/route"
)

// DefaultTenantHeaderPattern matches the usual tenancy headers.
const DefaultTenantHeaderPattern = `(?i)^x-(tenant|workspace|organization|org|account|brand|project|team)-id$`

// ExtAuth is the security-scheme extension that names the credential kinds
// a scheme stands for.
const ExtAuth = "x-extauthz-auth"

// Options tune the mapping.
type Options struct {
	// BearerAPIKeys: http bearer schemes (other than bearerFormat JWT)
	// also carry API keys (auth api_key_bearer).
	BearerAPIKeys bool
	// TenantHeaders, when set, turns matching header parameters into
	// tenant headers.
	TenantHeaders *regexp.Regexp
	// BasePath is prepended to every path; nil takes the path of the
	// first server URL.
	BasePath *string
}

// Operation is one operation of the spec and what it requires.
type Operation struct {
	Method      string // upper case
	SpecPath    string // the path as the spec writes it
	Path        string // the route path: base path + template, {param} segments
	OperationID string
	// Secured is false for public operations; then Auth and Scopes are empty.
	Secured       bool
	Auth          []string // credential kinds the spec declares, in kindOrder
	Scopes        []string // sorted
	TenantHeaders []route.TenantHeader
	// IdempotencyKey: the operation requires an Idempotency-Key header.
	IdempotencyKey bool
}

// Name is how findings and warnings name the operation.
func (o Operation) Name() string {
	s := o.Method + " " + o.Path
	if o.OperationID != "" {
		s += " (" + o.OperationID + ")"
	}
	return s
}

// Spec is a loaded document's operations.
type Spec struct {
	Version  string // the document's openapi field
	BasePath string
	Ops      []Operation // by path, then method order
	Warnings []string    // what could not be mapped exactly
	// APIKeyHeaders are the headers the spec's api_key schemes name, as
	// written, in order of first use.
	APIKeyHeaders []string
}

var kindOrder = []string{route.AuthAPIKey, route.AuthAPIKeyBearer, route.AuthJWT}

// routeMethods are the methods a route can name, in output order.
var routeMethods = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}

// Load parses an OpenAPI document (YAML or JSON; external references are
// not followed) and maps its operations.
func Load(data []byte, opts Options) (*Spec, error) {
	loader := openapi3.NewLoader()
	loader.IsExternalRefsAllowed = false
	doc, err := loader.LoadFromData(data)
	if err != nil {
		return nil, fmt.Errorf("openapi: %w", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		return nil, fmt.Errorf("openapi: version %q: only OpenAPI 3.x documents are read", doc.OpenAPI)
	}
	s := &Spec{Version: doc.OpenAPI}
	if err := doc.Validate(context.Background(), openapi3.DisableExamplesValidation(), openapi3.DisableSchemaDefaultsValidation(), openapi3.DisableSchemaPatternValidation()); err != nil {
		s.warnf("the document does not validate (read anyway): %v", err)
	}
	if opts.BasePath != nil {
		s.BasePath = strings.TrimRight(*opts.BasePath, "/")
	} else {
		s.BasePath, err = basePath(doc, s)
		if err != nil {
			return nil, err
		}
	}
	if s.BasePath != "" && !strings.HasPrefix(s.BasePath, "/") {
		return nil, fmt.Errorf("openapi: base path %q must start with /", s.BasePath)
	}
	schemes := map[string]*openapi3.SecuritySchemeRef{}
	if doc.Components != nil {
		schemes = doc.Components.SecuritySchemes
	}
	if len(doc.Security) == 0 && !anyOpSecurity(doc) {
		s.warnf("the document declares no security: every operation is public")
	}
	if n := len(doc.Webhooks); n > 0 {
		s.warnf("webhooks ignored (%d): they are calls the API makes, not requests it answers", n)
	}
	var errs []error
	var paths map[string]*openapi3.PathItem
	if doc.Paths != nil {
		paths = doc.Paths.Map()
	}
	for _, p := range slices.Sorted(maps.Keys(paths)) {
		item := paths[p]
		if item == nil {
			continue
		}
		rp, err := s.routePath(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ops := item.Operations()
		for _, m := range slices.Sorted(maps.Keys(ops)) {
			if !slices.Contains(routeMethods, m) {
				s.warnf("%s %s: method %s cannot be routed: skipped", m, p, m)
			}
		}
		for _, m := range routeMethods {
			op := ops[m]
			if op == nil {
				continue
			}
			o := Operation{Method: m, SpecPath: p, Path: rp, OperationID: op.OperationID}
			sec := doc.Security
			if op.Security != nil {
				sec = *op.Security
			}
			if err := s.security(&o, sec, schemes, opts); err != nil {
				errs = append(errs, err)
				continue
			}
			o.IdempotencyKey = requiresHeader("Idempotency-Key", item.Parameters, op.Parameters)
			if opts.TenantHeaders != nil {
				o.TenantHeaders = s.tenantHeaders(o, item.Parameters, op.Parameters, opts.TenantHeaders)
			}
			s.Ops = append(s.Ops, o)
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return s, nil
}

// APIKeyHeaderWarnings says which of the spec's API-key headers differ
// from the one the sidecar reads (settings.api_key_header): keys sent
// there are not seen, and such requests are denied credentials_missing.
func (s *Spec) APIKeyHeaderWarnings(policyHeader string) []string {
	var out []string
	for _, h := range s.APIKeyHeaders {
		if !strings.EqualFold(h, policyHeader) {
			out = append(out, fmt.Sprintf("the spec sends API keys in header %q, but the policy reads them from %q (settings.api_key_header): such keys are not seen", h, policyHeader))
		}
	}
	return out
}

func (s *Spec) warnf(format string, a ...any) {
	s.Warnings = append(s.Warnings, fmt.Sprintf(format, a...))
}

func anyOpSecurity(doc *openapi3.T) bool {
	if doc.Paths == nil {
		return false
	}
	for _, item := range doc.Paths.Map() {
		for _, op := range item.Operations() {
			if op.Security != nil && len(*op.Security) > 0 {
				return true
			}
		}
	}
	return false
}

// basePath is the path of the first server URL (variables at their
// defaults), "" for none or "/".
func basePath(doc *openapi3.T, s *Spec) (string, error) {
	if len(doc.Servers) == 0 {
		return "", nil
	}
	var paths []string
	for _, srv := range doc.Servers {
		u := srv.URL
		for name, v := range srv.Variables {
			if v != nil {
				u = strings.ReplaceAll(u, "{"+name+"}", v.Default)
			}
		}
		pu, err := url.Parse(u)
		if err != nil {
			return "", fmt.Errorf("openapi: servers: url %q: %w", srv.URL, err)
		}
		paths = append(paths, strings.TrimRight(pu.Path, "/"))
	}
	for _, p := range paths[1:] {
		if p != paths[0] {
			s.warnf("servers have different base paths (%q, %q): using the first; --base-path picks another", paths[0], p)
			break
		}
	}
	return paths[0], nil
}

// routePath joins the base path and the template, each templated segment a
// whole {param}.
func (s *Spec) routePath(p string) (string, error) {
	if !strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("openapi: path %q must start with /", p)
	}
	segs := strings.Split(strings.Trim(p, "/"), "/")
	for i, seg := range segs {
		open := strings.IndexByte(seg, '{')
		if open < 0 {
			continue
		}
		close := strings.IndexByte(seg, '}')
		if close < open {
			return "", fmt.Errorf("openapi: path %q: segment %q is not a template", p, seg)
		}
		name := seg[open+1 : close]
		if open != 0 || close != len(seg)-1 {
			s.warnf("%s: segment %q is partly templated: the route takes any value for the whole segment", p, seg)
		}
		segs[i] = "{" + name + "}"
	}
	out := s.BasePath + "/" + strings.Join(segs, "/")
	if strings.Trim(p, "/") == "" {
		out = s.BasePath
		if out == "" {
			out = "/"
		}
	}
	return out, nil
}

// security maps the effective security requirements of an operation.
func (s *Spec) security(o *Operation, sec openapi3.SecurityRequirements, schemes map[string]*openapi3.SecuritySchemeRef, opts Options) error {
	if len(sec) == 0 {
		return nil
	}
	for _, req := range sec {
		if len(req) == 0 {
			return nil // {}: anonymous access is one of the alternatives
		}
	}
	kinds := map[string]bool{}
	scopes := map[string]bool{}
	var scoped [][]string // each alternative's scopes, where it lists some
	var errs []error
	for _, req := range sec {
		if len(req) > 1 {
			s.warnf("%s: a requirement needs %s together; extauthz checks one credential, so any of them is accepted", o.Name(), strings.Join(slices.Sorted(maps.Keys(req)), " and "))
		}
		var alt []string
		for _, name := range slices.Sorted(maps.Keys(req)) {
			ref := schemes[name]
			if ref == nil || ref.Value == nil {
				errs = append(errs, fmt.Errorf("openapi: %s: security scheme %q is not in components.securitySchemes", o.Name(), name))
				continue
			}
			ks, err := schemeKinds(name, ref.Value, opts)
			if err != nil {
				errs = append(errs, fmt.Errorf("openapi: %s: %w", o.Name(), err))
				continue
			}
			if len(ks) == 0 {
				s.warnf("%s: security scheme %q (%s) cannot be checked by extauthz: ignored", o.Name(), name, describe(ref.Value))
			}
			for _, k := range ks {
				kinds[k] = true
			}
			if h := ref.Value.Name; ref.Value.Type == "apiKey" && slices.Contains(ks, route.AuthAPIKey) &&
				!slices.ContainsFunc(s.APIKeyHeaders, func(x string) bool { return strings.EqualFold(x, h) }) {
				s.APIKeyHeaders = append(s.APIKeyHeaders, h)
			}
			for _, sc := range req[name] {
				scopes[sc] = true
				alt = append(alt, sc)
			}
		}
		if len(alt) > 0 {
			slices.Sort(alt)
			scoped = append(scoped, slices.Compact(alt))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	for _, a := range scoped[min(1, len(scoped)):] {
		if !slices.Equal(a, scoped[0]) {
			s.warnf("%s: the security alternatives ask different scopes; the route demands all of them (%s)", o.Name(), strings.Join(slices.Sorted(maps.Keys(scopes)), " "))
			break
		}
	}
	o.Secured = true
	for _, k := range kindOrder {
		if kinds[k] {
			o.Auth = append(o.Auth, k)
		}
	}
	if len(o.Auth) == 0 {
		s.warnf("%s: no security scheme of this operation can be checked by extauthz", o.Name())
	}
	o.Scopes = slices.Sorted(maps.Keys(scopes))
	return nil
}

func describe(sc *openapi3.SecurityScheme) string {
	switch sc.Type {
	case "apiKey":
		return "apiKey in " + sc.In
	case "http":
		return "http " + sc.Scheme
	}
	return sc.Type
}

// schemeKinds is the credential kinds a security scheme stands for.
func schemeKinds(name string, sc *openapi3.SecurityScheme, opts Options) ([]string, error) {
	if raw, ok := sc.Extensions[ExtAuth]; ok {
		list, ok := raw.([]any)
		var out []string
		for _, v := range list {
			k, isStr := v.(string)
			if !isStr || !slices.Contains(kindOrder, k) {
				ok = false
				break
			}
			out = append(out, k)
		}
		if !ok || len(out) == 0 {
			return nil, fmt.Errorf("security scheme %q: %s must list some of api_key, api_key_bearer, jwt", name, ExtAuth)
		}
		return out, nil
	}
	switch sc.Type {
	case "apiKey":
		if strings.EqualFold(sc.In, "header") {
			return []string{route.AuthAPIKey}, nil
		}
	case "http":
		if strings.EqualFold(sc.Scheme, "bearer") {
			if opts.BearerAPIKeys && !strings.EqualFold(sc.BearerFormat, "jwt") {
				return []string{route.AuthAPIKeyBearer, route.AuthJWT}, nil
			}
			return []string{route.AuthJWT}, nil
		}
	case "oauth2", "openIdConnect":
		return []string{route.AuthJWT}, nil
	}
	return nil, nil
}

// tenantHeaders are the header parameters (the operation's over the path
// item's) whose names match re.
func (s *Spec) tenantHeaders(o Operation, pathParams, opParams openapi3.Parameters, re *regexp.Regexp) []route.TenantHeader {
	var out []route.TenantHeader
	idx := map[string]int{}
	for _, list := range []openapi3.Parameters{pathParams, opParams} {
		for _, pr := range list {
			if pr == nil || pr.Value == nil || !strings.EqualFold(pr.Value.In, "header") || !re.MatchString(pr.Value.Name) {
				continue
			}
			p := pr.Value
			th := route.TenantHeader{Header: p.Name, Dimension: dimension(p.Name), Format: format(p.Schema), Required: p.Required}
			key := strings.ToLower(p.Name)
			if i, ok := idx[key]; ok {
				out[i] = th // the operation's parameter overrides the path item's
				continue
			}
			idx[key] = len(out)
			out = append(out, th)
		}
	}
	if len(out) > route.MaxTenantHeaders {
		s.warnf("%s: %d tenant headers; a route takes at most %d: the first %d kept", o.Name(), len(out), route.MaxTenantHeaders, route.MaxTenantHeaders)
		out = out[:route.MaxTenantHeaders]
	}
	return out
}

// requiresHeader reports whether the operation requires header name (the
// operation's parameter overriding the path item's).
func requiresHeader(name string, pathParams, opParams openapi3.Parameters) bool {
	req := false
	for _, list := range []openapi3.Parameters{pathParams, opParams} {
		for _, pr := range list {
			if pr != nil && pr.Value != nil && strings.EqualFold(pr.Value.In, "header") && strings.EqualFold(pr.Value.Name, name) {
				req = pr.Value.Required
			}
		}
	}
	return req
}

// dimension is a tenant header's dimension: "X-Workspace-Id" is workspace.
func dimension(header string) string {
	d := strings.ToLower(header)
	d = strings.TrimPrefix(d, "x-")
	d = strings.TrimSuffix(d, "-id")
	d = strings.ReplaceAll(d, "-", "_")
	if d == "" {
		return "tenant"
	}
	return d
}

func format(sr *openapi3.SchemaRef) string {
	if sr == nil || sr.Value == nil || sr.Value.Type == nil {
		return route.FormatAny
	}
	sc := sr.Value
	switch {
	case sc.Type.Includes("integer"):
		return route.FormatPositiveInteger
	case sc.Type.Includes("string") && strings.EqualFold(sc.Format, "uuid"):
		return route.FormatUUID
	}
	return route.FormatAny
}
