// Package jwt verifies bearer JWTs from several trusted issuers with
// github.com/golang-jwt/jwt/v5 and github.com/MicahParks/keyfunc/v3, closing
// the known JWT and JWKS pitfalls (alg none and key confusion, untrusted key
// headers, missing exp, parser DoS, unknown-kid floods):
//
//   - cheap pre-checks before any parsing (length cap, exactly three
//     non-empty base64url segments, kid at most 128 bytes, no crit header);
//   - the issuer is chosen by the unverified iss claim, then the token is
//     verified by that issuer's parser, built once with an algorithm
//     allowlist (never HS* or none), issuer, audiences, required exp, iat
//     check, nbf, leeway and Options.Now;
//   - keys come from a JWKS file or a JWKS URL; oct keys are never used and
//     jku/x5u/x5c/jwk headers are never honoured; a token without kid is
//     accepted only if the issuer has exactly one usable key (not "enc"),
//     and that key's alg, if the JWK names one, is the token's; an unknown kid
//     may trigger at most one JWKS refresh per 30s per issuer, which the one
//     Verify that triggered it waits for within its context (the check's
//     deadline); any other Verify never waits for a refresh;
//   - a JWKS URL's key set is shared by the verifiers of successive policy
//     versions (shared.go): a reload keeps the keys fetched so far;
//   - only Valid results are cached, keyed by the SHA-256 of the token, until
//     min(CacheTTL, exp).
//
// Token contents are never logged.
package jwt

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	gojwt "github.com/golang-jwt/jwt/v5"

	"github.com/extauthz/extauthz/internal/authn"
	"github.com/extauthz/extauthz/internal/cache"
)

// Status is the outcome of a verification.
type Status string

// Verification outcomes. Where a name also exists in package authn the string
// value is the same.
const (
	Valid               Status = "valid"
	Malformed           Status = "malformed"
	Expired             Status = "expired"
	NotYetValid         Status = "not_yet_valid" // nbf in the future, or iat in the future
	BadSignature        Status = "bad_signature"
	WrongIssuer         Status = "wrong_issuer"
	WrongAudience       Status = "wrong_audience"
	UnknownKey          Status = "unknown_key"
	AlgorithmNotAllowed Status = "algorithm_not_allowed"
	Unavailable         Status = "unavailable" // no keys could be obtained (JWKS never loaded / unreachable)
)

// Result is the outcome of Verify. Results served from the cache share their
// slices and map with other callers: treat every Result as read-only.
type Result struct {
	Status  Status
	Issuer  string // the configured issuer the token named; empty if it named none
	Subject string // the sub claim; only when Valid

	Tenants   []string       // from the issuer's TenantClaim: string → [s], number → [decimal], array of those
	Scopes    []string       // from "scope" and "scp" (space-separated string or array of strings), deduplicated
	ExpiresAt time.Time      // only when Valid
	Claims    map[string]any // the verified claims, numbers as json.Number; nil unless Valid
	// Attached is what Options.Attach built from this result; it is computed
	// once per verification and served from the cache with the result.
	Attached any
}

// Verifier verifies JWTs. It is safe for concurrent use.
type Verifier struct {
	now      func() time.Time
	maxBytes int
	cacheTTL time.Duration
	byIss    map[string]*issuer
	attach   func(Result) any

	cache        *cache.Cache[*cached]
	hits, misses atomic.Uint64
	pendingLoads atomic.Int32 // URL issuers whose first JWKS fetch has not finished
	cancel       context.CancelFunc
	loaders      sync.WaitGroup
	closeOnce    sync.Once
	files        []File   // the jwks_files read
	releases     []func() // of the shared JWKS URL key sets it uses
}

// Files are the JWKS files the verifier read its keys from.
func (v *Verifier) Files() []File { return v.files }

type issuer struct {
	cfg    IssuerConfig // normalized
	parser *gojwt.Parser
	keys   atomic.Pointer[keySource] // nil until the first load attempt finished
}

type cached struct {
	res   Result
	until time.Time  // by Options.Now; at most exp
	is    *issuer    // whose keys verified it
	ks    *keySource // those keys: another key set verifies the token again
	gen   uint64     // ks.gen then: so does a later set at the same URL
}

// New validates the issuers and options, loads JWKS files and starts loading
// JWKS URLs in the background (see Ready). Every configuration problem is
// reported, each naming the issuer index and field. Close releases the
// background work and the verifier's share of JWKS URL key sets;
// cancelling ctx does too.
func New(ctx context.Context, issuers []IssuerConfig, opts Options) (*Verifier, error) {
	given := opts.HTTPClient
	opts, err := opts.normalize()
	errs := []error{err}
	if len(issuers) == 0 {
		errs = append(errs, errors.New("issuers: at least one issuer is required"))
	}
	cfgs := make([]IssuerConfig, len(issuers))
	seen := map[string]int{}
	for i, c := range issuers {
		cfgs[i], err = c.normalize(i)
		errs = append(errs, err)
		if j, dup := seen[c.Issuer]; dup && c.Issuer != "" {
			errs = append(errs, fmt.Errorf("issuers[%d].issuer: %q already configured by issuers[%d]", i, c.Issuer, j))
		}
		seen[c.Issuer] = i
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}

	ctx, cancel := context.WithCancel(ctx)
	v := &Verifier{
		now:      opts.Now,
		maxBytes: opts.MaxTokenBytes,
		cacheTTL: opts.CacheTTL,
		byIss:    make(map[string]*issuer, len(cfgs)),
		cache:    cache.New[*cached](opts.CacheEntries),
		attach:   opts.Attach,
		cancel:   cancel,
	}
	for i, c := range cfgs {
		is := &issuer{cfg: c, parser: newParser(c, opts.Now)}
		v.byIss[c.Issuer] = is
		switch {
		case c.JWKSFile != "":
			ks, f, err := loadJWKSFile(ctx, c.JWKSFile, c.Algorithms)
			if f.Path != "" {
				v.files = append(v.files, f)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("issuers[%d].jwks_file: %w", i, err))
				continue
			}
			is.keys.Store(ks)
		case len(c.JWKS) > 0:
			ks, err := loadJWKS(ctx, c.JWKS, c.Algorithms)
			if err != nil {
				errs = append(errs, fmt.Errorf("issuers[%d].jwks: %w", i, err))
				continue
			}
			is.keys.Store(ks)
		}
	}
	if err := errors.Join(errs...); err != nil {
		cancel()
		return nil, err
	}
	client := jwksClient(opts.HTTPClient)
	for _, is := range v.byIss {
		if is.cfg.JWKSURL == "" {
			continue
		}
		k := urlKey{issuer: is.cfg.Issuer, url: is.cfg.JWKSURL, every: opts.RefreshInterval, algs: strings.Join(slices.Sorted(slices.Values(is.cfg.Algorithms)), ","), client: given}
		sh, seed := acquireURL(k, opts.OnJWKSFetch, func(ctx context.Context, sh *sharedURL, seed *keySource) (*keySource, error) {
			ks, err := newJWKSURL(ctx, is.cfg.Issuer, is.cfg.JWKSURL, is.cfg.Algorithms, opts.RefreshInterval, client, sh.reportFetch, seed)
			if err != nil {
				refreshLogger(is.cfg.Issuer, is.cfg.JWKSURL)(ctx, err)
			}
			return ks, err
		})
		if seed != nil {
			is.keys.Store(seed) // until the new key set's first fetch
		}
		v.releases = append(v.releases, func() { releaseURL(k, sh) })
		v.pendingLoads.Add(1)
		v.loaders.Add(1)
		go func() {
			defer v.loaders.Done()
			defer v.pendingLoads.Add(-1)
			select {
			case <-sh.ready:
				if sh.ks != nil {
					is.keys.Store(sh.ks)
				}
			case <-ctx.Done():
			}
		}()
	}
	v.cache.StartJanitor(ctx, min(opts.CacheTTL, time.Minute))
	go func() {
		<-ctx.Done() // cancelled by the caller's ctx, or by Close
		v.Close()
	}()
	return v, nil
}

func newParser(c IssuerConfig, now func() time.Time) *gojwt.Parser {
	return gojwt.NewParser(
		gojwt.WithValidMethods(slices.Clone(c.Algorithms)),
		gojwt.WithIssuer(c.Issuer),
		gojwt.WithAudience(c.Audiences...), // any one of them must be in aud
		gojwt.WithExpirationRequired(),
		gojwt.WithIssuedAt(),
		gojwt.WithLeeway(time.Duration(c.LeewaySeconds)*time.Second),
		gojwt.WithTimeFunc(now),
		gojwt.WithJSONNumber(),     // exact numeric tenant ids and claims
		gojwt.WithStrictDecoding(), // one encoding per token: no non-zero trailing bits
	)
}

// Ready reports whether every issuer's JWKS had its first load attempt,
// successful or not. JWKS files are loaded by New.
func (v *Verifier) Ready() bool { return v.pendingLoads.Load() == 0 }

// CacheStats reports the result cache. Hits are Verify calls answered from the
// cache; Misses are the others that passed the length check.
func (v *Verifier) CacheStats() cache.Stats {
	return cache.Stats{Hits: v.hits.Load(), Misses: v.misses.Load(), Entries: v.cache.Len()}
}

// Close stops JWKS refreshes and the cache janitor. It is idempotent.
func (v *Verifier) Close() {
	v.closeOnce.Do(func() {
		v.cancel()
		v.loaders.Wait()
		for _, release := range v.releases {
			release()
		}
	})
}

// Verify checks a raw JWT (without the "Bearer " prefix). ctx bounds key
// lookups; a Verify of an unknown kid that starts a refresh, or arrives
// while one is in flight, waits for it within ctx.
func (v *Verifier) Verify(ctx context.Context, raw string) Result {
	if len(raw) == 0 || len(raw) > v.maxBytes {
		return Result{Status: Malformed}
	}
	sum := sha256.Sum256(unsafe.Slice(unsafe.StringData(raw), len(raw))) // read-only view, no copy
	if e, ok := v.cache.Get(string(sum[:]), v.now()); ok && e.is.keys.Load() == e.ks && e.ks.gen.Load() == e.gen {
		v.hits.Add(1)
		return e.res
	}
	v.misses.Add(1)
	res, is, ks, gen := v.verify(ctx, raw)
	if res.Status == Valid && v.attach != nil {
		res.Attached = v.attach(res)
	}
	if res.Status == Valid {
		now := v.now()
		if ttl := min(v.cacheTTL, res.ExpiresAt.Sub(now)); ttl > 0 {
			v.cache.Set(string(sum[:]), &cached{res: res, until: now.Add(ttl), is: is, ks: ks, gen: gen}, now, ttl)
		}
	}
	return res
}

// verify is Verify without the cache; a Valid result comes with the issuer and
// key set that verified it and that set's generation before it did.
func (v *Verifier) verify(ctx context.Context, raw string) (Result, *issuer, *keySource, uint64) {
	h, p, ok := splitToken(raw)
	if !ok {
		return Result{Status: Malformed}, nil, nil, 0
	}
	alg, ok := checkHeader(h)
	if !ok {
		return Result{Status: Malformed}, nil, nil, 0
	}
	iss, ok := unverifiedIssuer(p)
	if !ok {
		return Result{Status: Malformed}, nil, nil, 0
	}
	is := v.byIss[iss]
	if is == nil {
		return Result{Status: WrongIssuer}, nil, nil, 0
	}
	if !slices.Contains(is.cfg.Algorithms, alg) {
		return Result{Status: AlgorithmNotAllowed, Issuer: is.cfg.Issuer}, nil, nil, 0
	}
	ks := is.keys.Load()
	if ks == nil {
		return Result{Status: Unavailable, Issuer: is.cfg.Issuer}, nil, nil, 0
	}
	gen := ks.gen.Load()
	claims := gojwt.MapClaims{}
	if _, err := is.parser.ParseWithClaims(raw, claims, ks.keyfunc(ctx)); err != nil {
		st := statusOf(err)
		if st == UnknownKey && !ks.hasKeys(ctx) {
			st = Unavailable
		}
		return Result{Status: st, Issuer: is.cfg.Issuer}, nil, nil, 0
	}
	return is.result(claims), is, ks, gen
}

// result builds a Valid result from verified claims; claims of the wrong type
// make the token Malformed.
func (is *issuer) result(claims gojwt.MapClaims) Result {
	bad := Result{Status: Malformed, Issuer: is.cfg.Issuer}
	sub, err := claims.GetSubject()
	if err != nil || !authn.HeaderSafe(sub) {
		return bad // a sub the identity headers could not carry as is
	}
	exp, err := claims.GetExpirationTime()
	if err != nil || exp == nil {
		return bad
	}
	tenants, ok := tenantsOf(claims[is.cfg.TenantClaim])
	if !ok {
		return bad
	}
	scopes, ok := scopesOf(claims["scope"], claims["scp"])
	if !ok {
		return bad
	}
	return Result{
		Status:    Valid,
		Issuer:    is.cfg.Issuer,
		Subject:   sub,
		Tenants:   tenants,
		Scopes:    scopes,
		ExpiresAt: exp.Time,
		Claims:    map[string]any(claims),
	}
}

// statusOf maps golang-jwt errors. A token can fail several claim checks at
// once; the structural problems win over the time-based ones because a
// client cannot fix them by fetching a fresh token.
func statusOf(err error) Status {
	switch {
	case errors.Is(err, gojwt.ErrTokenMalformed),
		errors.Is(err, gojwt.ErrTokenRequiredClaimMissing), // e.g. no exp, no aud
		errors.Is(err, gojwt.ErrInvalidType):               // e.g. exp is a string
		return Malformed
	case errors.Is(err, gojwt.ErrTokenUnverifiable): // keyfunc failed: no key for this kid
		return UnknownKey
	case errors.Is(err, gojwt.ErrTokenSignatureInvalid):
		return BadSignature
	case errors.Is(err, gojwt.ErrTokenInvalidIssuer):
		return WrongIssuer
	case errors.Is(err, gojwt.ErrTokenInvalidAudience):
		return WrongAudience
	case errors.Is(err, gojwt.ErrTokenExpired):
		return Expired
	case errors.Is(err, gojwt.ErrTokenNotValidYet), errors.Is(err, gojwt.ErrTokenUsedBeforeIssued):
		return NotYetValid
	}
	return Malformed
}

var b64url = base64.RawURLEncoding.Strict()

// splitToken checks that raw is exactly three non-empty base64url segments
// and returns the first two. It does not allocate.
func splitToken(raw string) (header, payload string, ok bool) {
	dots, first, second := 0, -1, -1
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_':
		case c == '.':
			dots++
			switch dots {
			case 1:
				first = i
			case 2:
				second = i
			default:
				return "", "", false
			}
		default:
			return "", "", false // padding, whitespace, non-ASCII, non-UTF-8, ...
		}
	}
	if dots != 2 || first == 0 || second == first+1 || second == len(raw)-1 {
		return "", "", false
	}
	return raw[:first], raw[first+1 : second], true
}

// checkHeader decodes the JOSE header and returns its alg. It refuses a
// header that is not a JSON object, lacks a string alg, has a kid that is
// not a string or is longer than maxKIDBytes, or has a crit parameter (no
// extension is understood, RFC 7515 section 4.1.11). The header is decoded
// into a map so keys match exactly as golang-jwt matches them.
func checkHeader(seg string) (alg string, ok bool) {
	b, err := b64url.DecodeString(seg)
	if err != nil {
		return "", false
	}
	var h map[string]any
	if err := json.Unmarshal(b, &h); err != nil || h == nil {
		return "", false
	}
	if kid, present := h["kid"]; present {
		s, isStr := kid.(string)
		if !isStr || len(s) > maxKIDBytes {
			return "", false
		}
	}
	if _, present := h["crit"]; present {
		return "", false
	}
	alg, ok = h["alg"].(string)
	return alg, ok && alg != ""
}

// unverifiedIssuer reads iss from the unverified payload, only to pick the
// issuer configuration. The parser then checks iss again on the verified
// claims (with exact key matching), so a disagreement fails closed.
func unverifiedIssuer(seg string) (string, bool) {
	b, err := b64url.DecodeString(seg)
	if err != nil {
		return "", false
	}
	var p struct {
		Iss string `json:"iss"`
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return "", false
	}
	return p.Iss, true
}
