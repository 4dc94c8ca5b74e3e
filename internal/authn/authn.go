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

	once  sync.Once // value and key are built on first use, not at load:
	value ast.Value // a million keys must not each carry a policy value
	key   string
	quota string
}

// Key identifies the identity's content: two identities with equal keys are
// the same to a policy. Valid after Seal.
func (id *Identity) Key() string {
	id.once.Do(id.derive)
	return id.key
}

// Seal marks the identity complete: no field may change afterwards, since
// its policy value and key are derived from them (lazily, once).
func (id *Identity) Seal() *Identity { return id }

func (id *Identity) derive() {
	id.value = id.build()
	id.key = id.value.String()
	if id.KeyID == "" && id.Subject != "" {
		id.quota = id.Issuer + "|" + id.Subject
	}
}

// QuotaSubject is who quotas count a JWT identity as: "issuer|subject"
// (empty for API keys, which are counted by key id). Valid after Seal.
func (id *Identity) QuotaSubject() string {
	id.once.Do(id.derive)
	return id.quota
}

// Value is the identity as the policy sees it (input.extauthz.credential.identity).
func (id *Identity) Value() ast.Value {
	id.once.Do(id.derive)
	return id.value
}

func (id *Identity) build() ast.Value {
	tenants := ast.NewObject()
	for _, dim := range slices.Sorted(maps.Keys(id.Tenants)) {
		tenants.Insert(ast.StringTerm(dim), ast.NewTerm(stringSet(id.Tenants[dim])))
	}
	cidrs := make([]*ast.Term, len(id.AllowedCIDRs))
	for i, c := range id.AllowedCIDRs {
		cidrs[i] = ast.StringTerm(c)
	}
	return ast.NewObject(
		ast.Item(ast.StringTerm("kind"), ast.StringTerm(id.Kind)),
		ast.Item(ast.StringTerm("key_id"), ast.StringTerm(id.KeyID)),
		ast.Item(ast.StringTerm("subject"), ast.StringTerm(id.Subject)),
		ast.Item(ast.StringTerm("issuer"), ast.StringTerm(id.Issuer)),
		ast.Item(ast.StringTerm("plan"), ast.StringTerm(id.Plan)),
		ast.Item(ast.StringTerm("tenants"), ast.NewTerm(tenants)),
		ast.Item(ast.StringTerm("scopes"), ast.NewTerm(stringSet(id.Scopes))),
		ast.Item(ast.StringTerm("allowed_cidrs"), ast.ArrayTerm(cidrs...)),
	)
}

func stringSet(ss []string) ast.Set {
	s := ast.NewSet()
	for _, v := range ss {
		s.Add(ast.StringTerm(v))
	}
	return s
}
