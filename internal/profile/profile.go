// Package profile turns a decision into the exact response an API documents:
// status, headers and a compact JSON envelope. A profile is data — a JSON
// envelope template plus a table of reasons — so the built-in contracts and a
// team's own contract use the same mechanism and need no recompiling.
package profile

import (
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/extauthz/extauthz/internal/decision"
	"github.com/extauthz/extauthz/internal/httpheader"
	"github.com/extauthz/extauthz/internal/jsonx"
)

//go:embed builtin/*.json
var builtinFS embed.FS

// Definition is a profile as written in policy data (extauthz.profiles.<name>)
// or in the built-in files.
type Definition struct {
	Extends         string               `json:"extends,omitempty"`      // inherit everything not set here; user profiles default to "default"
	Description     string               `json:"description,omitempty"`  // free text
	ContentType     string               `json:"content_type,omitempty"` // default application/json
	RequestIDHeader string               `json:"request_id_header,omitempty"`
	Realm           string               `json:"realm,omitempty"` // WWW-Authenticate realm on 401
	Body            json.RawMessage      `json:"body,omitempty"`
	Headers         map[string]string    `json:"headers,omitempty"`
	Reasons         map[string]ReasonDef `json:"reasons,omitempty"`
	// Variables declares placeholders filled neither by the server nor by a
	// reason's vars here: details a custom policy adds to its denials, or
	// vars left to profiles that extend this one. Any other placeholder no
	// reason can fill is a typo, refused at load.
	Variables []string `json:"variables,omitempty"`
}

// ReasonDef is how one reason (optionally "reason.variant") is answered.
type ReasonDef struct {
	Status  int               `json:"status"`
	Code    string            `json:"code,omitempty"`
	Message string            `json:"message,omitempty"`
	Details json.RawMessage   `json:"details,omitempty"`
	Headers map[string]string `json:"headers,omitempty"`
	// Vars are extra template variables for this reason, e.g. a message_key.
	Vars map[string]string `json:"vars,omitempty"`
}

// Response is what the client receives.
type Response struct {
	Status  int
	Headers [][2]string // lower-case names, in order
	Body    []byte
}

// Profile is a compiled definition.
type Profile struct {
	Name        string
	contentType string
	reqIDHeader string
	realm       string
	body        *node
	headers     []header
	reasons     map[string]*reasonT
}

type header struct {
	name  string
	parts []part
}

type reasonT struct {
	status  int
	code    string
	message []part
	details *node
	headers []header
	vars    map[string]string
}

// Set is an immutable collection of profiles.
type Set struct{ byName map[string]*Profile }

// Builtins are the names of the built-in profiles.
func Builtins() []string {
	ents, _ := builtinFS.ReadDir("builtin")
	var out []string
	for _, e := range ents {
		out = append(out, strings.TrimSuffix(e.Name(), ".json"))
	}
	return out
}

// BuiltinDefinition returns a built-in profile's definition.
func BuiltinDefinition(name string) (Definition, error) {
	var d Definition
	raw, err := builtinFS.ReadFile(path.Join("builtin", name+".json"))
	if err != nil {
		return d, fmt.Errorf("no built-in profile %q", name)
	}
	err = jsonx.Strict(raw, &d)
	return d, err
}

// NewSet compiles the built-in profiles plus user definitions (which may
// replace a built-in of the same name). Errors name the profile and field.
func NewSet(user map[string]Definition) (*Set, error) {
	defs := map[string]Definition{}
	var errs []error
	for _, n := range Builtins() {
		d, err := BuiltinDefinition(n)
		if err != nil {
			errs = append(errs, fmt.Errorf("built-in profile %s: %w", n, err))
			continue
		}
		defs[n] = d
	}
	for n, d := range user {
		if d.Extends == "" && n != "default" {
			d.Extends = "default"
		}
		defs[n] = d
	}
	s := &Set{byName: map[string]*Profile{}}
	for _, n := range slices.Sorted(maps.Keys(defs)) {
		merged, err := resolve(n, defs, 0)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		p, err := compile(n, merged)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		s.byName[n] = p
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return s, nil
}

// ParseDefinitions reads the extauthz.profiles object.
func ParseDefinitions(raw json.RawMessage) (map[string]Definition, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var m map[string]Definition
	if err := jsonx.Strict(raw, &m); err != nil {
		return nil, jsonx.At("profiles", err)
	}
	return m, nil
}

// Get returns a profile by name.
func (s *Set) Get(name string) (*Profile, bool) {
	p, ok := s.byName[name]
	return p, ok
}

// Names lists the profiles.
func (s *Set) Names() []string { return slices.Sorted(maps.Keys(s.byName)) }

func resolve(name string, defs map[string]Definition, depth int) (Definition, error) {
	d := defs[name]
	if d.Extends == "" {
		return d, nil
	}
	if depth > 8 {
		return d, fmt.Errorf("profiles.%s.extends: chain too deep or circular", name)
	}
	if _, ok := defs[d.Extends]; !ok {
		return d, fmt.Errorf("profiles.%s.extends: unknown profile %q", name, d.Extends)
	}
	parent, err := resolve(d.Extends, defs, depth+1)
	if err != nil {
		return d, err
	}
	out := parent
	out.Extends = ""
	out.Description = d.Description
	if d.ContentType != "" {
		out.ContentType = d.ContentType
	}
	if d.RequestIDHeader != "" {
		out.RequestIDHeader = d.RequestIDHeader
	}
	if d.Realm != "" {
		out.Realm = d.Realm
	}
	if len(d.Body) > 0 {
		out.Body = d.Body
	}
	if d.Headers != nil {
		out.Headers = d.Headers
	}
	out.Reasons = maps.Clone(parent.Reasons)
	maps.Copy(out.Reasons, d.Reasons)
	out.Variables = append(slices.Clip(parent.Variables), d.Variables...)
	return out, nil
}

func compile(name string, d Definition) (*Profile, error) {
	where := "profiles." + name
	var errs []error
	fail := func(field string, err error) { errs = append(errs, fmt.Errorf("%s.%s: %w", where, field, err)) }
	p := &Profile{
		Name:        name,
		contentType: or(d.ContentType, "application/json"),
		reqIDHeader: strings.ToLower(or(d.RequestIDHeader, "x-request-id")),
		realm:       or(d.Realm, "api"),
		reasons:     map[string]*reasonT{},
	}
	if !validHeaderValue(p.contentType) {
		fail("content_type", errors.New("not a valid header value"))
	}
	if !httpheader.Name(p.reqIDHeader) {
		fail("request_id_header", fmt.Errorf("%q is not a header name", d.RequestIDHeader))
	}
	if strings.ContainsAny(p.realm, "\"\\") || !validHeaderValue(p.realm) {
		fail("realm", errors.New("must be printable ASCII without quotes or backslashes"))
	}
	if len(d.Body) == 0 {
		fail("body", errors.New("required"))
	} else if b, err := compileJSON(d.Body); err != nil {
		fail("body", err)
	} else {
		p.body = b
	}
	var err error
	if p.headers, err = compileHeaders(d.Headers); err != nil {
		fail("headers", err)
	}
	for _, key := range slices.Sorted(maps.Keys(d.Reasons)) {
		rd := d.Reasons[key]
		rf := "reasons." + key
		base, _, _ := strings.Cut(key, ".")
		if !decision.Known(decision.Reason(base)) || base == string(decision.OK) {
			fail(rf, fmt.Errorf("unknown reason %q", base))
			continue
		}
		if rd.Status < 300 || rd.Status > 599 {
			fail(rf+".status", fmt.Errorf("%d is not a deny status (300-599)", rd.Status))
		}
		r := &reasonT{status: rd.Status, code: rd.Code, vars: rd.Vars}
		for k := range rd.Vars {
			if !validName(k) {
				fail(rf+".vars", fmt.Errorf("bad variable name %q", k))
			}
		}
		if r.message, err = parseParts(rd.Message); err != nil {
			fail(rf+".message", err)
		}
		if len(rd.Details) > 0 {
			if r.details, err = compileJSON(rd.Details); err != nil {
				fail(rf+".details", err)
			}
		}
		if r.headers, err = compileHeaders(rd.Headers); err != nil {
			fail(rf+".headers", err)
		}
		p.reasons[key] = r
	}
	for _, r := range append([]decision.Reason{decision.InternalError}, decision.Precedence...) {
		if _, ok := p.reasons[string(r)]; !ok {
			fail("reasons", fmt.Errorf("no entry for reason %q", r))
		}
	}
	for _, n := range d.Variables {
		if !validName(n) {
			fail("variables", fmt.Errorf("bad variable name %q", n))
		}
	}
	errs = append(errs, checkPlaceholders(where, d, p)...)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return p, nil
}

func compileHeaders(m map[string]string) ([]header, error) {
	var out []header
	for _, k := range slices.Sorted(maps.Keys(m)) {
		name := strings.ToLower(k)
		if !httpheader.Name(name) || reservedHeader(name) {
			return nil, fmt.Errorf("%q cannot be set", k)
		}
		parts, err := parseParts(m[k])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", k, err)
		}
		for _, pt := range parts {
			if !validHeaderValue(pt.lit) {
				return nil, fmt.Errorf("%s: %q is not a valid header value (printable ASCII)", k, pt.lit)
			}
		}
		out = append(out, header{name: name, parts: parts})
	}
	return out, nil
}

// Status is the HTTP status a reason gets in this profile.
func (p *Profile) Status(d *decision.Decision) int { return p.reason(d).status }

func (p *Profile) reason(d *decision.Decision) *reasonT {
	if d.Variant != "" {
		if r, ok := p.reasons[string(d.Reason)+"."+d.Variant]; ok {
			return r
		}
	}
	if r, ok := p.reasons[string(d.Reason)]; ok {
		return r
	}
	return p.reasons[string(decision.InternalError)]
}

// Caps on request-derived values reflected into responses.
const (
	maxReflectBytes = 64
	maxDataBytes    = 256
	maxHeaderBytes  = 256
)

// Render builds the deny response for d at time now.
func (p *Profile) Render(d *decision.Decision, now time.Time) Response {
	r := p.reason(d)
	v := newVars(d, r, now)
	body, _ := p.body.render(make([]byte, 0, 256), v.get, nil)

	hs := make([][2]string, 0, 8)
	hs = append(hs, [2]string{"content-type", p.contentType})
	if wa := p.challenge(d, r, v); wa != "" {
		hs = append(hs, [2]string{"www-authenticate", wa})
	}
	hs = appendHeaders(hs, p.headers, v.get)
	hs = appendHeaders(hs, r.headers, v.get)
	// The request id last, unless a header of the profile sets it: the one
	// header a prepared rendering fills per request.
	if d.RequestID != "" && !slices.ContainsFunc(hs, func(h [2]string) bool { return h[0] == p.reqIDHeader }) {
		hs = append(hs, [2]string{p.reqIDHeader, sanitizeHeader(d.RequestID)})
	}
	return Response{Status: r.status, Headers: hs, Body: body}
}

// challenge is the RFC 6750 WWW-Authenticate challenge for d: every 401
// (with error="invalid_token" and the message as error_description unless
// the credential was missing), and a missing-scope 403
// (error="insufficient_scope" with the scopes the route requires).
func (p *Profile) challenge(d *decision.Decision, r *reasonT, v *vars) string {
	wa := `Bearer realm="` + quotedValue(p.realm) + `"`
	switch {
	case r.status == 401 && d.Reason == decision.CredentialsMissing:
		return wa
	case r.status == 401:
		wa += `, error="invalid_token"`
	case r.status == 403 && d.Reason == decision.ScopeMissing:
		wa += `, error="insufficient_scope"`
		if sc := quotedValue(d.Details["scope"]); sc != "" {
			wa += `, scope="` + sc + `"`
		}
	default:
		return ""
	}
	if desc := quotedValue(v.message); desc != "" {
		wa += `, error_description="` + desc + `"`
	}
	return wa
}

// quotedValue keeps the characters RFC 6750 allows in a challenge's quoted
// values (printable ASCII but '"' and '\').
func quotedValue(s string) string {
	return strings.Map(func(c rune) rune {
		if c < 0x20 || c > 0x7e || c == '"' || c == '\\' {
			return -1
		}
		return c
	}, s)
}

func appendHeaders(hs [][2]string, tmpl []header, get lookup) [][2]string {
	for _, h := range tmpl {
		s, ok := interpolate(h.parts, get)
		if !ok || s == "" {
			continue
		}
		replaced := false
		for i := range hs {
			if hs[i][0] == h.name {
				hs[i][1], replaced = sanitizeHeader(s), true
			}
		}
		if !replaced {
			hs = append(hs, [2]string{h.name, sanitizeHeader(s)})
		}
	}
	return hs
}

// vars resolves template variables for one render.
type vars struct {
	d          *decision.Decision
	r          *reasonT
	now        time.Time
	message    string
	hasMessage bool
	details    []byte
}

// newVars resolves the message and details of reason r for d.
func newVars(d *decision.Decision, r *reasonT, now time.Time) *vars {
	v := &vars{d: d, r: r, now: now}
	if r.message != nil {
		v.message, v.hasMessage = interpolate(r.message, v.get)
	}
	if r.details != nil {
		if raw, ok := r.details.render(nil, v.get, nil); ok {
			v.details = raw
		}
	}
	return v
}

func (v *vars) get(name string) (value, bool) {
	d := v.d
	rl := d.RateLimit
	switch name {
	case "status", "status_code":
		return value{kind: vInt, i: int64(v.r.status)}, true
	case "code":
		return value{s: v.r.code}, v.r.code != ""
	case "message":
		return value{s: v.message}, v.hasMessage
	case "details":
		return value{kind: vRaw, raw: v.details}, v.details != nil
	case "request_id":
		return value{s: d.RequestID}, d.RequestID != ""
	case "decision_id":
		return value{s: d.ID}, d.ID != ""
	case "timestamp":
		return value{s: v.now.UTC().Format(time.RFC3339)}, true
	case "reason":
		return value{s: string(d.Reason)}, true
	case "retry_after":
		return value{kind: vInt, i: rlField(rl, func(r *decision.RateLimit) int64 { return r.RetryAfter })}, rl != nil && rl.RetryAfter > 0
	case "retry_after_ms":
		return value{kind: vInt, i: rlField(rl, func(r *decision.RateLimit) int64 { return r.RetryAfter }) * 1000}, rl != nil && rl.RetryAfter > 0
	case "limit":
		return value{kind: vInt, i: rlField(rl, func(r *decision.RateLimit) int64 { return r.Limit })}, rl != nil
	case "remaining":
		return value{kind: vInt, i: rlField(rl, func(r *decision.RateLimit) int64 { return r.Remaining })}, rl != nil
	case "reset":
		return value{kind: vInt, i: rlField(rl, func(r *decision.RateLimit) int64 { return r.Reset })}, rl != nil
	case "window_seconds":
		return value{kind: vInt, i: rlField(rl, func(r *decision.RateLimit) int64 { return r.WindowSeconds })}, rl != nil && rl.WindowSeconds > 0
	case "window":
		if rl == nil || rl.Window == "" {
			return value{}, false
		}
		return value{s: rl.Window}, true
	}
	if s, ok := v.r.vars[name]; ok {
		return value{s: s}, true
	}
	s, ok := d.Details[name]
	if !ok {
		return value{}, false
	}
	limit := maxDataBytes
	if name == "value" {
		limit = maxReflectBytes // taken verbatim from the request
	}
	return value{s: capString(s, limit)}, true
}

func rlField(rl *decision.RateLimit, f func(*decision.RateLimit) int64) int64 {
	if rl == nil {
		return 0
	}
	return f(rl)
}

// capString cuts s to at most n bytes on a rune boundary.
func capString(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// sanitizeHeader keeps printable ASCII only and caps the length, so nothing a
// client sent can split or smuggle a header (CR/LF in an ext_authz answer has
// crashed Envoy, and validate_mutations makes Envoy refuse it with a 500).
func sanitizeHeader(s string) string {
	if len(s) > maxHeaderBytes {
		s = s[:maxHeaderBytes]
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if b[j] < 0x20 || b[j] > 0x7e {
					b[j] = '?'
				}
			}
			return string(b)
		}
	}
	return s
}

func validHeaderValue(s string) bool { return sanitizeHeader(s) == s }

// reservedHeader lists names a profile may not set: those Envoy rewrites or
// that must never be sent in a denied response (Envoy sets content-length,
// content-type and date itself and may overwrite server, its connection
// manager strips hop-by-hop headers (te, trailer among them), and it would
// pass ":"-names on; see docs/envoy.md); grpc-status and grpc-message, which
// would tell a gRPC client a status other than the deny's; set-cookie, as a
// deny must not change a client's state; and www-authenticate, which the
// renderer sets itself.
func reservedHeader(n string) bool {
	switch n {
	case "content-length", "content-type", "date", "server", "connection", "transfer-encoding", "keep-alive",
		"proxy-connection", "upgrade", "te", "trailer", "grpc-status", "grpc-message", "set-cookie", "www-authenticate":
		return true
	}
	return strings.HasPrefix(n, ":")
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// builtinVars are the placeholders every reason can fill (some only when
// the decision has the value: see vars.get), with the details the shipped
// policy and the server put in decisions.
var builtinVars = map[string]bool{
	"status": true, "status_code": true, "code": true, "message": true, "details": true,
	"request_id": true, "decision_id": true, "timestamp": true, "reason": true,
	"retry_after": true, "retry_after_ms": true, "limit": true, "remaining": true, "reset": true,
	"window": true, "window_seconds": true,
	"header": true, "value": true, "scope": true, "dimension": true,
}

// checkPlaceholders reports every placeholder of p that no reason can fill:
// not built in, not declared in d's variables, not in any reason's vars. A
// placeholder like {{hnit}} was left out of every response silently.
func checkPlaceholders(where string, d Definition, p *Profile) []error {
	known := maps.Clone(builtinVars)
	for _, n := range d.Variables {
		known[n] = true
	}
	for _, rd := range d.Reasons {
		for n := range rd.Vars {
			known[n] = true
		}
	}
	var errs []error
	check := func(field string, names []string) {
		for _, n := range names {
			if !known[n] {
				errs = append(errs, fmt.Errorf("%s.%s: unknown placeholder {{%s}} (not built in, in no reason's vars, not declared in variables)", where, field, n))
			}
		}
	}
	check("body", p.body.names(nil))
	for _, h := range p.headers {
		check("headers."+h.name, partNames(nil, h.parts))
	}
	for _, key := range slices.Sorted(maps.Keys(p.reasons)) {
		r, rf := p.reasons[key], "reasons."+key
		check(rf+".message", partNames(nil, r.message))
		check(rf+".details", r.details.names(nil))
		for _, h := range r.headers {
			check(rf+".headers."+h.name, partNames(nil, h.parts))
		}
	}
	return errs
}
