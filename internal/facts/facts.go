// Package facts holds what the sidecar resolved about one request before the
// policy runs: the policy's input.extauthz.
//
// Facts is one comparable type, and it is both what the policy is given
// (Value) and what the decision memo is keyed by (Key). A fact added here is
// given to the policy and keyed by the memo in the same stroke; there is no
// second list to forget it in. Pointers in Facts (route, identity) are
// identities: within one policy version a pointer stands for one immutable
// value, so equal pointers mean equal facts.
package facts

import (
	"net/netip"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/extauthz/extauthz/internal/authn"
	"github.com/extauthz/extauthz/internal/credential"
	"github.com/extauthz/extauthz/internal/route"
)

// Facts is input.extauthz.
type Facts struct {
	RequestID      string // never keyed: a policy that reads it is not memoized
	Method         string
	Path           string // canonical
	PathProblem    string // why the path is not canonical; "" when it is
	ClientIP       netip.Addr
	Route          *route.Route // nil: no route matched
	Profile        string
	Credential     Credential
	Tenants        Tenants // the route's tenant headers the request sent
	Browser        bool    // a browser signal is present (Origin, Sec-Fetch-*, Cookie)
	IdempotencyKey bool    // Idempotency-Key present and non-empty
}

// Credential is what was presented and how it verified.
type Credential struct {
	Kind     credential.Kind
	Via      credential.Via
	Status   authn.Status
	Identity *authn.Identity // set when the credential matched a known principal
}

// Tenants are the values of the route's tenant headers that the request
// sent, by the header's position in Route.Req.TenantHeaders.
type Tenants struct {
	present uint8
	values  [route.MaxTenantHeaders]string
}

// Set records the value of the route's i-th tenant header.
func (t *Tenants) Set(i int, v string) {
	t.present |= 1 << i
	t.values[i] = v
}

// Get is the value of the route's i-th tenant header, if sent.
func (t *Tenants) Get(i int) (string, bool) {
	return t.values[i], t.present&(1<<i) != 0
}

// Any reports whether any tenant header was sent.
func (t *Tenants) Any() bool { return t.present != 0 }

// Field names of input.extauthz.
const (
	FieldRequestID      = "request_id"
	FieldMethod         = "method"
	FieldPath           = "path"
	FieldPathProblem    = "path_problem"
	FieldClientIP       = "client_ip"
	FieldRoute          = "route"
	FieldProfile        = "profile"
	FieldCredential     = "credential"
	FieldTenantValues   = "tenant_values"
	FieldBrowser        = "browser"
	FieldIdempotencyKey = "idempotency_key"
)

// Keyed reports whether the memo keys on input.extauthz.<field>: every
// field Value gives the policy but the request id.
func Keyed(field string) bool { return field != FieldRequestID && keyedFields[field] }

var keyedFields = func() map[string]bool {
	m := map[string]bool{}
	for _, k := range (&Facts{}).Value().(ast.Object).Keys() {
		m[string(k.Value.(ast.String))] = true
	}
	return m
}()

// Reads is what a policy provably reads of the facts that need not always be
// keyed; what it does not read is left out of the memo key.
type Reads struct {
	Path, Method, ClientIP bool
	// ClientIPTraced: the policy only tests the client address against
	// networks through a recording builtin, so the key leaves the address
	// out and each remembered decision carries the tests it made.
	ClientIPTraced bool
}

// Key is the memo key for f under a policy that reads r: f itself, with the
// request id and every fact the policy does not read left out.
type Key struct {
	f      Facts
	traced bool // the address is left out and matched against recorded tests
}

// Key returns f's memo key under r.
func (f *Facts) Key(r Reads) Key {
	k := Key{f: *f}
	k.f.RequestID = ""
	if !r.Path {
		k.f.Path = ""
	}
	if !r.Method {
		k.f.Method = ""
	}
	// An address the policy traces must be text net.ParseIP reads the same
	// (valid, no zone); any other is keyed as it is.
	switch {
	case !r.ClientIP && !r.ClientIPTraced:
		k.f.ClientIP = netip.Addr{}
	case r.ClientIPTraced && f.ClientIP.IsValid() && f.ClientIP.Zone() == "":
		k.f.ClientIP, k.traced = netip.Addr{}, true
	}
	return k
}

// Traced reports whether k leaves the client address out.
func (k Key) Traced() bool { return k.traced }

// WithAddress is traced key k for one address: for decisions kept by address.
func (k Key) WithAddress(ip netip.Addr) Key {
	k.f.ClientIP, k.traced = ip, false
	return k
}

var (
	kRequestID    = ast.StringTerm(FieldRequestID)
	kMethod       = ast.StringTerm(FieldMethod)
	kPath         = ast.StringTerm(FieldPath)
	kPathProblem  = ast.StringTerm(FieldPathProblem)
	kClientIP     = ast.StringTerm(FieldClientIP)
	kRoute        = ast.StringTerm(FieldRoute)
	kProfile      = ast.StringTerm(FieldProfile)
	kCredential   = ast.StringTerm(FieldCredential)
	kTenantValues = ast.StringTerm(FieldTenantValues)
	kBrowser      = ast.StringTerm(FieldBrowser)
	kIdempotency  = ast.StringTerm(FieldIdempotencyKey)
	kKind         = ast.StringTerm("kind")
	kVia          = ast.StringTerm("via")
	kStatus       = ast.StringTerm("status")
	kIdentity     = ast.StringTerm("identity")
	nullTerm      = ast.NullTerm()
	emptyStrTerm  = ast.StringTerm("")
)

// Value is f as the policy sees it (input.extauthz). Route and identity
// values are shared, not copied.
func (f *Facts) Value() ast.Value {
	routeTerm := nullTerm
	if f.Route != nil {
		routeTerm = ast.NewTerm(f.Route.Value())
	}
	credItems := [][2]*ast.Term{
		ast.Item(kKind, ast.StringTerm(string(f.Credential.Kind))),
		ast.Item(kVia, ast.StringTerm(string(f.Credential.Via))),
		ast.Item(kStatus, ast.StringTerm(string(f.Credential.Status))),
	}
	if f.Credential.Identity != nil {
		credItems = append(credItems, ast.Item(kIdentity, ast.NewTerm(f.Credential.Identity.Value())))
	}
	clientIP := emptyStrTerm
	if f.ClientIP.IsValid() {
		clientIP = ast.StringTerm(f.ClientIP.String())
	}
	var tenantItems [][2]*ast.Term
	if f.Route != nil {
		for i, th := range f.Route.Req.TenantHeaders {
			if v, ok := f.Tenants.Get(i); ok {
				tenantItems = append(tenantItems, ast.Item(ast.StringTerm(th.Key), ast.StringTerm(v)))
			}
		}
	}
	return ast.NewObject(
		ast.Item(kRequestID, ast.StringTerm(f.RequestID)),
		ast.Item(kMethod, ast.StringTerm(f.Method)),
		ast.Item(kPath, ast.StringTerm(f.Path)),
		ast.Item(kPathProblem, ast.StringTerm(f.PathProblem)),
		ast.Item(kClientIP, clientIP),
		ast.Item(kRoute, routeTerm),
		ast.Item(kProfile, ast.StringTerm(f.Profile)),
		ast.Item(kCredential, ast.ObjectTerm(credItems...)),
		ast.Item(kTenantValues, ast.ObjectTerm(tenantItems...)),
		ast.Item(kBrowser, ast.BooleanTerm(f.Browser)),
		ast.Item(kIdempotency, ast.BooleanTerm(f.IdempotencyKey)),
	)
}

// Identity is the verified identity: the credential's when it verified.
func (f *Facts) Identity() *authn.Identity {
	if f.Credential.Status == authn.Valid {
		return f.Credential.Identity
	}
	return nil
}

// Tenant is the tenant the request acts for, verified, as authn.TenantKey
// names it (the id in dimension "tenant", "dimension:id" in another): the
// first tenant header sent whose value the identity holds in that header's
// dimension, else, when the request names none, the identity's only tenant
// in dimension "tenant", or its only grant when it has none there.
// The upstream's x-auth-tenant, metadata and logs use it (quotas count
// ActingTenants); it is never a value only the client vouches for.
func (f *Facts) Tenant() string {
	id := f.Identity()
	if id == nil {
		return ""
	}
	if f.Route != nil && f.Tenants.Any() {
		for i, th := range f.Route.Req.TenantHeaders {
			if v, ok := f.VerifiedTenant(i); ok {
				return authn.TenantKey(th.Dimension, v)
			}
		}
		return ""
	}
	if t := id.Tenants[authn.DefaultDimension]; len(t) == 1 {
		return authn.TenantKey(authn.DefaultDimension, t[0]) // its only tenant; grants in other dimensions do not change that
	} else if len(t) > 1 {
		return ""
	}
	only := ""
	for dim, ids := range id.Tenants { // no "tenant" dimension: its only grant, if it has one
		for _, t := range ids {
			if only != "" {
				return ""
			}
			only = authn.TenantKey(dim, t)
		}
	}
	return only
}

// VerifiedTenant is the value of the route's i-th tenant header when the
// request sent it and the verified identity holds it in that header's
// dimension: the one form of a tenant header's value the upstream may get
// (an anonymous caller's, a shadowed tenant denial's, or a comma-joined
// repeated header's is removed on allow).
func (f *Facts) VerifiedTenant(i int) (string, bool) {
	id := f.Identity()
	if id == nil || f.Route == nil || i >= len(f.Route.Req.TenantHeaders) {
		return "", false
	}
	v, sent := f.Tenants.Get(i)
	if !sent || v == "" {
		return "", false
	}
	return v, slices.Contains(id.Tenants[f.Route.Req.TenantHeaders[i].Dimension], v)
}

// ActingTenants are the tenants the request acts for, as authn.TenantKey
// names them, each once: every tenant header it sent whose value the
// identity holds (in route order), or, when it names none it holds (none
// at all, or only values let through by a shadowed tenant denial or a
// policy that does not check tenants, which the upstream does not get),
// every tenant the identity holds (sorted), since the upstream may act
// for any of them: a request is never counted against no tenant's plan
// because it named a tenant it does not hold.
// Quotas count against each one's plan. The rulebook's request_tenants,
// whose allowlists apply, also holds every tenant header value the
// credential does not hold (denied earlier, unless shadowed, or an
// anonymous caller's on a public route): a tenant a request names is held
// to its allowlist whether or not the caller may act for it.
func (f *Facts) ActingTenants() []string {
	id := f.Identity()
	if id == nil {
		return nil
	}
	var out []string
	if f.Route != nil && f.Tenants.Any() {
		for i, th := range f.Route.Req.TenantHeaders {
			// Only a value the identity holds: a shadowed tenant_forbidden,
			// or a policy that does not check tenants, must not charge the
			// request to (and run it on the plan of) another tenant.
			if v, ok := f.VerifiedTenant(i); ok {
				if k := authn.TenantKey(th.Dimension, v); !slices.Contains(out, k) {
					out = append(out, k)
				}
			}
		}
		if len(out) > 0 {
			return out
		}
	}
	for dim, ids := range id.Tenants {
		for _, t := range ids {
			out = append(out, authn.TenantKey(dim, t))
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Size is the bytes k's strings hold (method, path, profile, tenant
// values): what remembering k costs beyond its fixed size, which a client
// sets (a 50 KB X-Tenant-Id) and the memo counts against its budget.
func (k Key) Size() int {
	n := len(k.f.Method) + len(k.f.Path) + len(k.f.PathProblem) + len(k.f.Profile)
	for _, v := range k.f.Tenants.values {
		n += len(v)
	}
	return n
}

// Clone is k with its strings copied: the request's strings they may be
// part of (a path is a substring of the raw :path, query included) are not
// kept alive by a remembered key, so Size is what it holds.
func (k Key) Clone() Key {
	k.f.Method = strings.Clone(k.f.Method)
	k.f.Path = strings.Clone(k.f.Path)
	k.f.PathProblem = strings.Clone(k.f.PathProblem)
	k.f.Profile = strings.Clone(k.f.Profile)
	for i := range k.f.Tenants.values {
		k.f.Tenants.values[i] = strings.Clone(k.f.Tenants.values[i])
	}
	return k
}

// Facts are the facts k holds (what it leaves out is zero).
func (k Key) Facts() Facts { return k.f }
