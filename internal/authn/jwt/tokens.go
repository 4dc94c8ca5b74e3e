package jwt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/extauthz/extauthz/internal/authn"
	"github.com/extauthz/extauthz/internal/jsonx"
)

// Section is extauthz.jwt in policy data.
type Section struct {
	Issuers                []IssuerConfig `json:"issuers"`
	CacheEntries           int            `json:"cache_entries,omitempty"`
	CacheTTLSeconds        int            `json:"cache_ttl_seconds,omitempty"`
	RefreshIntervalSeconds int            `json:"refresh_interval_seconds,omitempty"`
}

// Tokens adapts a Verifier to the sidecar's credential vocabulary: an
// authn.Status and a sealed authn.Identity, built once per verified token and
// cached with it.
type Tokens struct{ v *Verifier }

// NewTokens builds the verifier from the raw extauthz.jwt section. A relative
// jwks_file is read from baseDir (the policy directory), when given.
func NewTokens(ctx context.Context, raw json.RawMessage, baseDir string, now func() time.Time, onFetch func(issuer string, ok bool)) (*Tokens, error) {
	var s Section
	if err := jsonx.Strict(raw, &s); err != nil {
		return nil, err
	}
	if err := s.check(); err != nil {
		return nil, err
	}
	for i := range s.Issuers {
		if f := s.Issuers[i].JWKSFile; f != "" && baseDir != "" && !filepath.IsAbs(f) {
			s.Issuers[i].JWKSFile = filepath.Join(baseDir, f)
		}
	}
	v, err := New(ctx, s.Issuers, Options{
		Now:             now,
		CacheEntries:    s.CacheEntries,
		CacheTTL:        time.Duration(s.CacheTTLSeconds) * time.Second,
		RefreshInterval: time.Duration(s.RefreshIntervalSeconds) * time.Second,
		Attach:          identityOf,
		OnJWKSFetch:     onFetch,
	})
	if err != nil {
		return nil, err
	}
	return &Tokens{v: v}, nil
}

// Bounds of the section's numbers: a verified-token cache of more entries
// than this is a typo, not a plan (each entry holds a token and its claims).
const (
	MaxCacheEntries           = 1_000_000
	MaxCacheTTLSeconds        = 24 * 3600
	MaxRefreshIntervalSeconds = 7 * 24 * 3600
)

// check reports each number of s outside its bounds, named as in data.json.
func (s *Section) check() error {
	var errs []error
	for _, f := range [...]struct {
		name   string
		v, max int
	}{
		{"cache_entries", s.CacheEntries, MaxCacheEntries},
		{"cache_ttl_seconds", s.CacheTTLSeconds, MaxCacheTTLSeconds},
		{"refresh_interval_seconds", s.RefreshIntervalSeconds, MaxRefreshIntervalSeconds},
	} {
		if f.v < 0 || f.v > f.max {
			errs = append(errs, &jsonx.Error{Path: f.name, Msg: fmt.Sprintf("%d is outside [0, %d] (0: the default)", f.v, f.max)})
		}
	}
	return errors.Join(errs...)
}

func identityOf(r Result) any {
	id := &authn.Identity{Kind: "jwt", Subject: r.Subject, Issuer: r.Issuer, Scopes: r.Scopes}
	if len(r.Tenants) > 0 {
		id.Tenants = map[string][]string{authn.DefaultDimension: r.Tenants}
	}
	return id.Seal()
}

var authnStatus = map[Status]authn.Status{
	Valid: authn.Valid, Malformed: authn.Invalid, Expired: authn.Expired, NotYetValid: authn.NotYetValid,
	BadSignature: authn.BadSignature, WrongIssuer: authn.WrongIssuer, WrongAudience: authn.WrongAudience,
	UnknownKey: authn.Unknown, AlgorithmNotAllowed: authn.Invalid, Unavailable: authn.Unavailable,
}

// Verify verifies a bearer token.
func (t *Tokens) Verify(ctx context.Context, raw string) (authn.Status, *authn.Identity) {
	r := t.v.Verify(ctx, raw)
	st, ok := authnStatus[r.Status]
	if !ok {
		return authn.Invalid, nil
	}
	id, _ := r.Attached.(*authn.Identity)
	if st == authn.Valid && id == nil {
		return authn.Invalid, nil // cannot happen: Attach runs for every valid result
	}
	return st, id
}

// Ready reports whether every JWKS source had its first load attempt.
func (t *Tokens) Ready() bool { return t.v.Ready() }

// Close stops background JWKS refreshes.
func (t *Tokens) Close() { t.v.Close() }

// Files are the JWKS files the tokens' keys were read from.
func (t *Tokens) Files() []File { return t.v.Files() }

// Stats are the verifier cache counters.
func (t *Tokens) Stats() (hits, misses uint64, entries int) {
	s := t.v.CacheStats()
	return s.Hits, s.Misses, s.Entries
}
