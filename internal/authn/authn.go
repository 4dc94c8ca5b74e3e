// Package authn holds what the sidecar learned about a request's credential
// before policy evaluation: a verification status from a small fixed set and,
// when verified, the identity behind it.
package authn

import (
	"maps"
	"slices"
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
)

// Status is the verification result of the presented credential.
type Status string

// The verification results a policy can see in input.extauthz.credential.status.
const (
	Valid         Status = "valid"
	Missing       Status = "missing"
	Malformed     Status = "malformed"
	WrongScheme   Status = "wrong_scheme"
	Unknown       Status = "unknown"
	Expired       Status = "expired"
	Revoked       Status = "revoked"
	Suspended     Status = "suspended"
	BadSignature  Status = "bad_signature"
	WrongIssuer   Status = "wrong_issuer"
	WrongAudience Status = "wrong_audience"
	NotYetValid   Status = "not_yet_valid"
	Invalid       Status = "invalid" // a token that does not parse or uses a refused algorithm
	Unavailable   Status = "unavailable"
)

// DefaultDimension is the tenancy dimension of a plain "tenants" list.
const DefaultDimension = "tenant"

// Identity is a verified principal. It is immutable once built.
type Identity struct {
	Kind         string              // "api_key" or "jwt"
	KeyID        string              // API key id (never the key)
	Subject      string              // key subject or JWT sub
	Issuer       string              // JWT iss
	Plan         string              // rate-limit plan name, if any
	Tenants      map[string][]string // dimension ("tenant", "workspace", ...) -> ids
	Scopes       []string
	AllowedCIDRs []string

	quotaOnce sync.Once
	quota     string
}

// Key identifies the identity's content: two identities with equal keys are
// the same to a policy (the text of its policy value).
func (id *Identity) Key() string { return id.Value().String() }

// Seal marks the identity complete: no field may change afterwards, since
// its quota subject is derived from them (lazily, once).
func (id *Identity) Seal() *Identity { return id }

// QuotaSubject is who quotas count a JWT identity as: "issuer|subject",
// and "issuer|" for every token of the issuer without a subject (they
// share one count rather than escape quotas); empty for API keys, which
// are counted by key id. Valid after Seal.
func (id *Identity) QuotaSubject() string {
	id.quotaOnce.Do(func() {
		if id.KeyID == "" && (id.Subject != "" || id.Issuer != "") {
			id.quota = id.Issuer + "|" + id.Subject
		}
	})
	return id.quota
}

// The identity value's field names, shared by every identity.
var (
	kKind, kKeyID, kSubject = ast.StringTerm("kind"), ast.StringTerm("key_id"), ast.StringTerm("subject")
	kIssuer, kPlan          = ast.StringTerm("issuer"), ast.StringTerm("plan")
	kTenants, kScopes       = ast.StringTerm("tenants"), ast.StringTerm("scopes")
	kAllowedCIDRs           = ast.StringTerm("allowed_cidrs")
)

// Value is the identity as the policy sees it
// (input.extauthz.credential.identity), built on each call: it is needed
// only when a policy is evaluated, and an identity that kept it would hold
// about 2 KiB more while it is cached (by a key store, a token cache, the
// decision memo's keys).
func (id *Identity) Value() ast.Value {
	tenants := ast.NewObject()
	for _, dim := range slices.Sorted(maps.Keys(id.Tenants)) {
		tenants.Insert(ast.StringTerm(dim), ast.NewTerm(stringSet(id.Tenants[dim])))
	}
	cidrs := make([]*ast.Term, len(id.AllowedCIDRs))
	for i, c := range id.AllowedCIDRs {
		cidrs[i] = ast.StringTerm(c)
	}
	return ast.NewObject(
		ast.Item(kKind, ast.StringTerm(id.Kind)),
		ast.Item(kKeyID, ast.StringTerm(id.KeyID)),
		ast.Item(kSubject, ast.StringTerm(id.Subject)),
		ast.Item(kIssuer, ast.StringTerm(id.Issuer)),
		ast.Item(kPlan, ast.StringTerm(id.Plan)),
		ast.Item(kTenants, ast.NewTerm(tenants)),
		ast.Item(kScopes, ast.NewTerm(stringSet(id.Scopes))),
		ast.Item(kAllowedCIDRs, ast.ArrayTerm(cidrs...)),
	)
}

func stringSet(ss []string) ast.Set {
	s := ast.NewSet()
	for _, v := range ss {
		s.Add(ast.StringTerm(v))
	}
	return s
}
