// Package apikey verifies API keys against records stored by the SHA-256 of
// the key. The plaintext key is never stored; lookups hash the presented key
// and compare digests in constant time.
package apikey

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/extauthz/extauthz/internal/authn"
)

// Record is one API key as written in policy data under extauthz.api_keys,
// keyed by the lower-case hex SHA-256 of the key.
type Record struct {
	ID           string          `json:"id"`
	Subject      string          `json:"subject,omitempty"`
	Tenants      json.RawMessage `json:"tenants,omitempty"` // ["42"] or {"workspace":["w1"],"brand":["b1"]}
	Scopes       []string        `json:"scopes,omitempty"`
	ExpiresAt    string          `json:"expires_at,omitempty"` // RFC 3339; empty = never
	Status       string          `json:"status,omitempty"`     // active (default), revoked, suspended
	AllowedCIDRs []string        `json:"allowed_cidrs,omitempty"`
	Plan         string          `json:"plan,omitempty"`
}

type entry struct {
	digest  [sha256.Size]byte
	expires time.Time // zero = never
	status  authn.Status
	id      authn.Identity // in the entry: one allocation per key, not two
}

// Store is an immutable index of key records.
type Store struct {
	byDigest map[[sha256.Size]byte]*entry
}

// Len is the number of keys.
func (s *Store) Len() int { return len(s.byDigest) }

// Hash returns the record key for an API key: lower-case hex SHA-256.
func Hash(key string) string {
	d := sha256.Sum256([]byte(key))
	return hex.EncodeToString(d[:])
}

// Parse builds a store from the extauthz.api_keys object. Errors name the
// record (by key id or digest prefix) and field; all problems are reported.
func Parse(raw json.RawMessage) (*Store, error) {
	s := &Store{byDigest: map[[sha256.Size]byte]*entry{}}
	if len(raw) == 0 || string(raw) == "null" {
		return s, nil
	}
	var recs map[string]Record
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&recs); err != nil {
		return nil, fmt.Errorf("api_keys: %w", err)
	}
	var errs []error
	ids := map[string]string{}
	in := newInterner()
	for _, h := range slices.Sorted(maps.Keys(recs)) {
		e, err := build(h, recs[h], in)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if prev, dup := ids[e.id.KeyID]; dup {
			errs = append(errs, fmt.Errorf("api_keys[%q].id: %q already used by %q", short(h), e.id.KeyID, short(prev)))
			continue
		}
		ids[e.id.KeyID] = h
		s.byDigest[e.digest] = e
	}
	return s, errors.Join(errs...)
}

// interner shares equal tenant sets, scope and CIDR lists between the
// records of one store: keys of one customer usually carry the same ones,
// and identities never change them. A million keys then hold a few thousand
// tenant maps, not a million.
type interner struct {
	tenants map[string]map[string][]string
	lists   map[string][]string
}

func newInterner() *interner {
	return &interner{tenants: map[string]map[string][]string{}, lists: map[string][]string{}}
}

func (in *interner) list(l []string) []string {
	if len(l) == 0 {
		return nil
	}
	var b strings.Builder
	for _, s := range l { // length-prefixed: no two different lists share a key
		b.WriteString(strconv.Itoa(len(s)))
		b.WriteByte(':')
		b.WriteString(s)
	}
	k := b.String()
	if v, ok := in.lists[k]; ok {
		return v
	}
	l = slices.Clip(l)
	in.lists[k] = l
	return l
}

func (in *interner) tenantSet(raw json.RawMessage) (map[string][]string, error) {
	if v, ok := in.tenants[string(raw)]; ok {
		return v, nil
	}
	t, err := ParseTenants(raw)
	if err != nil {
		return nil, err
	}
	for dim, ids := range t {
		t[dim] = in.list(ids)
	}
	in.tenants[string(raw)] = t
	return t, nil
}

func build(h string, r Record, in *interner) (*entry, error) {
	where := fmt.Sprintf("api_keys[%q]", short(h))
	d, err := hex.DecodeString(h)
	validDigest := err == nil && len(d) == sha256.Size && strings.ToLower(h) == h
	if !validDigest {
		// Never echo a non-digest map key: it may be a plaintext secret.
		where = fmt.Sprintf("api_keys[<entry with id %q>]", r.ID)
	}
	var errs []error
	fail := func(field, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: %s", where, field, fmt.Sprintf(format, a...)))
	}
	e := &entry{}
	if !validDigest {
		errs = append(errs, fmt.Errorf("%s: key must be the lower-case hex SHA-256 of the API key (64 characters); plaintext keys are not accepted", where))
	} else {
		copy(e.digest[:], d)
	}
	if r.ID == "" {
		fail("id", "required")
	}
	switch r.Status {
	case "", "active":
		e.status = authn.Valid
	case "revoked":
		e.status = authn.Revoked
	case "suspended":
		e.status = authn.Suspended
	default:
		fail("status", "%q is not one of active, revoked, suspended", r.Status)
	}
	if r.ExpiresAt != "" {
		t, err := time.Parse(time.RFC3339, r.ExpiresAt)
		if err != nil {
			fail("expires_at", "not an RFC 3339 time: %q", r.ExpiresAt)
		}
		e.expires = t
	}
	for i, c := range r.AllowedCIDRs {
		if _, err := netip.ParsePrefix(c); err != nil {
			fail(fmt.Sprintf("allowed_cidrs[%d]", i), "not a CIDR: %q", c)
		}
	}
	tenants, err := in.tenantSet(r.Tenants)
	if err != nil {
		fail("tenants", "%v", err)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	subject := r.Subject
	if subject == "" {
		subject = r.ID
	}
	e.id = authn.Identity{
		Kind: "api_key", KeyID: r.ID, Subject: subject, Plan: r.Plan,
		Tenants: tenants, Scopes: in.list(r.Scopes), AllowedCIDRs: in.list(r.AllowedCIDRs),
	}
	e.id.Seal()
	return e, nil
}

// ParseTenants reads a tenants value: a list of ids (dimension "tenant") or
// an object of dimension -> ids. Ids may be strings or integers.
func ParseTenants(raw json.RawMessage) (map[string][]string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var list []json.Number
	if err := json.Unmarshal(raw, &list); err == nil {
		return map[string][]string{authn.DefaultDimension: numbersToStrings(list)}, nil
	}
	var strs []string
	if err := json.Unmarshal(raw, &strs); err == nil {
		return map[string][]string{authn.DefaultDimension: strs}, nil
	}
	var dims map[string][]any
	if err := json.Unmarshal(raw, &dims); err != nil {
		return nil, errors.New(`want a list of ids or an object of dimension -> ids, e.g. ["42"] or {"workspace":["w1"]}`)
	}
	out := map[string][]string{}
	for dim, ids := range dims {
		for _, v := range ids {
			switch v := v.(type) {
			case string:
				out[dim] = append(out[dim], v)
			case float64:
				out[dim] = append(out[dim], strings.TrimSuffix(fmt.Sprintf("%.0f", v), ".0"))
			default:
				return nil, fmt.Errorf("%s: ids must be strings or integers", dim)
			}
		}
	}
	return out, nil
}

func numbersToStrings(ns []json.Number) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = n.String()
	}
	return out
}

// Result is the outcome of a lookup.
type Result struct {
	Status   authn.Status
	Identity *authn.Identity // set for every status but Unknown
}

// Lookup verifies a presented key at time now.
func (s *Store) Lookup(key string, now time.Time) Result {
	d := sha256.Sum256([]byte(key))
	e, ok := s.byDigest[d]
	if !ok || subtle.ConstantTimeCompare(e.digest[:], d[:]) != 1 {
		return Result{Status: authn.Unknown}
	}
	if e.status != authn.Valid {
		return Result{Status: e.status, Identity: &e.id}
	}
	if !e.expires.IsZero() && !now.Before(e.expires) {
		return Result{Status: authn.Expired, Identity: &e.id}
	}
	return Result{Status: authn.Valid, Identity: &e.id}
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12] + "…"
	}
	return h
}
