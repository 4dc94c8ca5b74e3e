// Package replay is the decision log's record of the facts a decision was
// taken on (--decision-log-facts), and the reading of such records back for
// extauthz check --decision-log, which decides them again.
//
// A decision is a function of the verified facts (internal/facts: the
// policy's input.extauthz and the memo key), so a record carries those facts
// as the sidecar resolved them — method, canonical path, the Envoy route's
// context extensions, the credential's kind, status and key id (or a JWT's
// verified claims), the values of the route's tenant headers, the client
// address, the browser and Idempotency-Key signals — and never the request
// itself: no credential, no header but the route's tenant headers. A replay
// rebuilds the facts against the policy being tested (the route matched
// again, the API key looked up by its id in that policy's data) and decides
// them. What a record cannot carry exactly is withheld and named; such a
// record, and one the tested policy cannot decide from facts alone, is not
// replayable, with the reason. Nothing is guessed.
package replay

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/extauthz/extauthz/internal/authn"
	"github.com/extauthz/extauthz/internal/credential"
	"github.com/extauthz/extauthz/internal/engine"
	"github.com/extauthz/extauthz/internal/facts"
	"github.com/extauthz/extauthz/internal/route"
)

// Version is the schema version of Facts (its "v").
const Version = 1

// Bounds on what a record carries. A value over its bound, or not valid
// UTF-8, is withheld (left out and named in Withheld), never cut: a cut
// value would replay as another request.
const (
	MaxMethod  = 32   // bytes
	MaxPath    = 2048 // bytes of the canonical path
	MaxValue   = 256  // bytes of a tenant header, context extension or claim value
	MaxItems   = 64   // scopes, tenant values per dimension
	MaxDims    = 16   // tenant dimensions of a JWT identity
	maxWithold = 16
)

// Facts is the "facts" member of a decision log record: the facts the
// decision was taken on, as JSON.
type Facts struct {
	V           int    `json:"v"`
	Method      string `json:"method"`
	Path        string `json:"path"`                   // canonical
	PathProblem string `json:"path_problem,omitempty"` // why the path was refused
	// Context holds the Envoy route's context extensions the sidecar reads
	// (route, profile and the requirement overrides); they come from
	// Envoy's configuration, not the client.
	Context    map[string]string `json:"context,omitempty"`
	Credential Credential        `json:"credential"`
	// TenantHeaders holds each tenant header of the route that decided (by
	// lower-case name): the value sent, or null when it was not sent. A
	// header not listed was not looked at.
	TenantHeaders  map[string]*string `json:"tenant_headers,omitempty"`
	ClientIP       string             `json:"client_ip"` // "" when unknown
	Browser        bool               `json:"browser"`
	IdempotencyKey bool               `json:"idempotency_key"`
	// Withheld names what is left out (over its bound, or not UTF-8):
	// "path", "tenant_headers.<name>", "context.<key>", "credential.identity".
	Withheld []string `json:"withheld,omitempty"`
}

// Credential is the presented credential as verified: never its value.
type Credential struct {
	Kind   string `json:"kind"`          // api_key, jwt, none
	Via    string `json:"via,omitempty"` // header, bearer
	Status string `json:"status"`
	KeyID  string `json:"key_id,omitempty"` // an API key that matched a record
	// Keys is the fingerprint of the api_keys section that found no record
	// for the presented key (status unknown): only a policy with the same
	// keys would find none either.
	Keys string `json:"keys,omitempty"`
	// JWT is the fingerprint of the jwt section a bearer JWT was verified
	// with: the token is not kept, so only a policy with the same issuers
	// would verify it the same way.
	JWT string `json:"jwt,omitempty"`
	// A JWT's verified claims.
	Issuer  string              `json:"issuer,omitempty"`
	Subject string              `json:"subject,omitempty"`
	Scopes  []string            `json:"scopes,omitempty"`
	Tenants map[string][]string `json:"tenants,omitempty"`
}

// Source is what a decision was taken on, as the check path holds it.
type Source struct {
	Facts   *facts.Facts
	Context map[string]string // the CheckRequest's context_extensions
	Engine  *engine.Engine    // the policy version that decided
}

// contextKeys are the context extensions the sidecar reads.
var contextKeys = []string{route.CERoute, route.CEProfile, route.CEAuth, route.CEScopes, route.CETenantHeader, route.CETenantFormat, route.CETenantRequired, route.CEShadow}

func fits(s string, n int) bool { return len(s) <= n && utf8.ValidString(s) }

// Of is the record of src's facts, bounded: a value over its bound is
// withheld and named.
func Of(src Source) *Facts {
	f := src.Facts
	out := &Facts{V: Version, PathProblem: f.PathProblem, Browser: f.Browser, IdempotencyKey: f.IdempotencyKey}
	withhold := func(what string) {
		if len(out.Withheld) < maxWithold {
			out.Withheld = append(out.Withheld, what)
		}
	}
	if fits(f.Method, MaxMethod) {
		out.Method = f.Method
	} else {
		withhold("method")
	}
	if fits(f.Path, MaxPath) {
		out.Path = f.Path
	} else {
		withhold("path")
	}
	for _, k := range contextKeys {
		v, ok := src.Context[k]
		switch {
		case !ok:
		case !fits(v, MaxValue):
			withhold("context." + k)
		default:
			if out.Context == nil {
				out.Context = map[string]string{}
			}
			out.Context[k] = v
		}
	}
	if f.Route != nil && len(f.Route.Req.TenantHeaders) > 0 {
		out.TenantHeaders = make(map[string]*string, len(f.Route.Req.TenantHeaders))
		for i, th := range f.Route.Req.TenantHeaders {
			v, ok := f.Tenants.Get(i)
			switch {
			case !ok:
				out.TenantHeaders[th.Key] = nil
			case !fits(v, MaxValue):
				withhold("tenant_headers." + th.Key)
			default:
				out.TenantHeaders[th.Key] = &v
			}
		}
	}
	if f.ClientIP.IsValid() {
		out.ClientIP = f.ClientIP.String()
	}
	c := &out.Credential
	c.Kind, c.Via, c.Status = string(f.Credential.Kind), string(f.Credential.Via), string(f.Credential.Status)
	id := f.Credential.Identity
	switch f.Credential.Kind {
	case credential.APIKey:
		if id != nil {
			if fits(id.KeyID, MaxValue) {
				c.KeyID = id.KeyID
			} else {
				withhold("credential.key_id")
			}
		} else if f.Credential.Status == authn.Unknown && src.Engine != nil {
			c.Keys = src.Engine.KeysVersion
		}
	case credential.JWT:
		if src.Engine != nil {
			c.JWT = src.Engine.JWTVersion
		}
		if id != nil {
			if jwtIdentityFits(id) {
				c.Issuer, c.Subject, c.Scopes, c.Tenants = id.Issuer, id.Subject, id.Scopes, id.Tenants
			} else {
				withhold("credential.identity")
			}
		}
	}
	return out
}

func jwtIdentityFits(id *authn.Identity) bool {
	if !fits(id.Issuer, MaxValue) || !fits(id.Subject, MaxValue) || len(id.Scopes) > MaxItems || len(id.Tenants) > MaxDims {
		return false
	}
	for _, s := range id.Scopes {
		if !fits(s, MaxValue) {
			return false
		}
	}
	for dim, vs := range id.Tenants {
		if !fits(dim, MaxValue) || len(vs) > MaxItems {
			return false
		}
		for _, v := range vs {
			if !fits(v, MaxValue) {
				return false
			}
		}
	}
	return true
}

var (
	kinds    = []string{string(credential.None), string(credential.APIKey), string(credential.JWT)}
	vias     = []string{"", string(credential.ViaHeader), string(credential.ViaBearer)}
	statuses = []authn.Status{authn.Valid, authn.Missing, authn.Malformed, authn.WrongScheme, authn.Unknown, authn.Expired,
		authn.Revoked, authn.Suspended, authn.BadSignature, authn.WrongIssuer, authn.WrongAudience, authn.NotYetValid,
		authn.Invalid, authn.Unavailable}
)

// Check reports the first way f is not a record the sidecar could have
// written: its fields' sets and bounds.
func (f *Facts) Check() error {
	switch {
	case f.V != Version:
		return fmt.Errorf("facts.v: %d, want %d", f.V, Version)
	case !fits(f.Method, MaxMethod):
		return fmt.Errorf("facts.method: over %d bytes or not UTF-8", MaxMethod)
	case !fits(f.Path, MaxPath):
		return fmt.Errorf("facts.path: over %d bytes or not UTF-8", MaxPath)
	case !fits(f.PathProblem, MaxValue):
		return fmt.Errorf("facts.path_problem: over %d bytes or not UTF-8", MaxValue)
	case f.ClientIP != "" && !validAddr(f.ClientIP):
		return fmt.Errorf("facts.client_ip: %q is not an address", clip(f.ClientIP))
	case len(f.Withheld) > maxWithold:
		return fmt.Errorf("facts.withheld: more than %d entries", maxWithold)
	}
	for k, v := range f.Context {
		if !slices.Contains(contextKeys, k) || !fits(v, MaxValue) {
			return fmt.Errorf("facts.context: %q is not a context extension the sidecar reads, or its value is over %d bytes", clip(k), MaxValue)
		}
	}
	if len(f.TenantHeaders) > route.MaxTenantHeaders {
		return fmt.Errorf("facts.tenant_headers: more than %d", route.MaxTenantHeaders)
	}
	for k, v := range f.TenantHeaders {
		if k == "" || !fits(k, MaxValue) || strings.ToLower(k) != k || (v != nil && !fits(*v, MaxValue)) {
			return fmt.Errorf("facts.tenant_headers: %q: not a lower-case header name with a value of at most %d bytes", clip(k), MaxValue)
		}
	}
	for _, w := range f.Withheld {
		if !fits(w, MaxValue) {
			return fmt.Errorf("facts.withheld: an entry over %d bytes", MaxValue)
		}
	}
	c := &f.Credential
	switch {
	case !slices.Contains(kinds, c.Kind):
		return fmt.Errorf("facts.credential.kind: %q is not one of %s", clip(c.Kind), strings.Join(kinds, ", "))
	case !slices.Contains(vias, c.Via):
		return fmt.Errorf("facts.credential.via: %q is not header or bearer", clip(c.Via))
	case !slices.Contains(statuses, authn.Status(c.Status)):
		return fmt.Errorf("facts.credential.status: %q is not a verification status", clip(c.Status))
	case !fits(c.KeyID, MaxValue) || !fits(c.Keys, MaxValue) || !fits(c.JWT, MaxValue):
		return fmt.Errorf("facts.credential: a value over %d bytes", MaxValue)
	case !jwtIdentityFits(&authn.Identity{Issuer: c.Issuer, Subject: c.Subject, Scopes: c.Scopes, Tenants: c.Tenants}):
		return fmt.Errorf("facts.credential: claims over their bounds")
	}
	return nil
}

func validAddr(s string) bool {
	a, err := netip.ParseAddr(s)
	return err == nil && a.String() == s
}

// clip makes a value from a record safe to print: at most 64 bytes,
// printable ASCII.
func clip(s string) string {
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r > 0x7e && r != '…') {
			return '?'
		}
		return r
	}, s)
}

// NotReplayable says why a record cannot be decided again exactly.
type NotReplayable struct {
	Why    string // a fixed phrase: what the summary counts by
	Detail string // the record's particulars (clipped)
}

func (e *NotReplayable) Error() string {
	if e.Detail == "" {
		return "not replayable: " + e.Why
	}
	return "not replayable: " + e.Why + ": " + e.Detail
}

// Not returns a NotReplayable; detail is clipped.
func Not(why, detail string) error { return &NotReplayable{Why: why, Detail: clip(detail)} }
