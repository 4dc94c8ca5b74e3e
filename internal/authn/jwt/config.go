package jwt

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// IssuerConfig is one trusted token issuer. Exactly one of JWKSFile,
// JWKSURL and JWKS must be set.
type IssuerConfig struct {
	Issuer        string          `json:"issuer"`
	Audiences     []string        `json:"audiences"`
	JWKSFile      string          `json:"jwks_file,omitempty"`      // path to a JWKS JSON file, loaded once by New
	JWKSURL       string          `json:"jwks_url,omitempty"`       // http(s) URL, refreshed in the background
	JWKS          json.RawMessage `json:"jwks,omitempty"`           // the JWKS itself, inline in policy data
	Algorithms    []string        `json:"algorithms"`               // allowlist, default ["RS256","ES256"]; HS* and none are rejected
	TenantClaim   string          `json:"tenant_claim,omitempty"`   // claim holding tenant id(s); default "tenant"
	LeewaySeconds int             `json:"leeway_seconds,omitempty"` // clock skew for exp/nbf/iat; 0 means the default 30; at most 300
}

// Options tune a Verifier. Zero values select the defaults.
type Options struct {
	Now             func() time.Time // default time.Now; used by the parser and for cache TTLs
	CacheEntries    int              // default 10000; positive results only
	CacheTTL        time.Duration    // default 5m, never beyond exp - now
	RefreshInterval time.Duration    // JWKS URL refresh, default 15m
	HTTPClient      *http.Client     // default: 2s timeout; responses are capped at maxJWKSBytes
	MaxTokenBytes   int              // default 8192; longer tokens are Malformed without parsing
	// Attach, when set, is called once per successful verification; its
	// result rides along in Result.Attached, cached with the result.
	Attach func(Result) any
	// OnJWKSFetch, when set, is told the outcome of every JWKS URL fetch.
	OnJWKSFetch func(issuer string, ok bool)
}

// Defaults.
const (
	DefaultTenantClaim     = "tenant"
	DefaultLeeway          = 30 * time.Second
	DefaultCacheEntries    = 10000
	DefaultCacheTTL        = 5 * time.Minute
	DefaultRefreshInterval = 15 * time.Minute
	DefaultMaxTokenBytes   = 8192
	DefaultHTTPTimeout     = 2 * time.Second

	maxLeewaySeconds = 300
	maxKIDBytes      = 128
	maxJWKSBytes     = 1 << 20 // JWKS file or HTTP response
)

// DefaultAlgorithms is the allowlist used when IssuerConfig.Algorithms is empty.
var DefaultAlgorithms = []string{"RS256", "ES256"}

// supportedAlgs are the asymmetric algorithms an issuer may allow. HS* is
// never accepted: an HMAC secret shared with the IdP, or an oct key in a JWKS,
// would let anyone holding it mint tokens, and HS* is the classic key
// confusion vector (an HS256 token whose HMAC secret is the issuer's RSA
// public key).
var supportedAlgs = []string{
	"RS256", "RS384", "RS512",
	"PS256", "PS384", "PS512",
	"ES256", "ES384", "ES512",
	"EdDSA",
}

// normalize checks one issuer and fills in defaults. Errors name the issuer
// index and JSON field.
func (c IssuerConfig) normalize(i int) (IssuerConfig, error) {
	var errs []error
	fail := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("issuers[%d].%s: %s", i, field, fmt.Sprintf(format, args...)))
	}
	if strings.TrimSpace(c.Issuer) == "" {
		fail("issuer", "required")
	}
	if len(c.Audiences) == 0 {
		fail("audiences", "at least one audience is required")
	}
	for j, a := range c.Audiences {
		if strings.TrimSpace(a) == "" {
			fail(fmt.Sprintf("audiences[%d]", j), "must not be empty")
		}
	}
	sources := 0
	for _, set := range []bool{c.JWKSFile != "", c.JWKSURL != "", len(c.JWKS) > 0} {
		if set {
			sources++
		}
	}
	switch {
	case sources == 0:
		fail("jwks_file", "one of jwks_file, jwks_url or jwks is required")
	case sources > 1:
		fail("jwks_url", "set only one of jwks_file, jwks_url and jwks")
	case c.JWKSURL != "":
		u, err := url.Parse(c.JWKSURL)
		if err != nil {
			fail("jwks_url", "not a URL")
		} else if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			fail("jwks_url", "must be an absolute http or https URL")
		}
	}
	if len(c.Algorithms) == 0 {
		c.Algorithms = slices.Clone(DefaultAlgorithms)
	} else {
		algs := make([]string, 0, len(c.Algorithms))
		for _, a := range c.Algorithms {
			switch {
			case strings.HasPrefix(strings.ToUpper(a), "HS"):
				fail("algorithms", "%s not allowed (symmetric algorithms are never accepted)", a)
			case strings.EqualFold(a, "none"):
				fail("algorithms", "%s not allowed", a)
			case !slices.Contains(supportedAlgs, a):
				fail("algorithms", "%q is not supported (supported: %s)", a, strings.Join(supportedAlgs, ", "))
			case !slices.Contains(algs, a):
				algs = append(algs, a)
			}
		}
		c.Algorithms = algs
	}
	if c.TenantClaim == "" {
		c.TenantClaim = DefaultTenantClaim
	}
	switch {
	case c.LeewaySeconds < 0 || c.LeewaySeconds > maxLeewaySeconds:
		fail("leeway_seconds", "must be between 0 and %d", maxLeewaySeconds)
	case c.LeewaySeconds == 0:
		c.LeewaySeconds = int(DefaultLeeway / time.Second)
	}
	c.Audiences = slices.Clone(c.Audiences)
	return c, errors.Join(errs...)
}

func (o Options) normalize() (Options, error) {
	var errs []error
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.CacheEntries < 0 {
		errs = append(errs, errors.New("options.CacheEntries: must not be negative"))
	} else if o.CacheEntries == 0 {
		o.CacheEntries = DefaultCacheEntries
	}
	if o.CacheTTL < 0 {
		errs = append(errs, errors.New("options.CacheTTL: must not be negative"))
	} else if o.CacheTTL == 0 {
		o.CacheTTL = DefaultCacheTTL
	}
	if o.RefreshInterval < 0 {
		errs = append(errs, errors.New("options.RefreshInterval: must not be negative"))
	} else if o.RefreshInterval == 0 {
		o.RefreshInterval = DefaultRefreshInterval
	}
	if o.MaxTokenBytes < 0 {
		errs = append(errs, errors.New("options.MaxTokenBytes: must not be negative"))
	} else if o.MaxTokenBytes == 0 {
		o.MaxTokenBytes = DefaultMaxTokenBytes
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: DefaultHTTPTimeout}
	}
	return o, errors.Join(errs...)
}
