// Package credential finds the credential a request presents and refuses
// every presentation that could be read two ways: duplicates (Envoy joins a
// repeated header's values with ","), comma-joined values, oversized or
// non-token bytes, an API key and a bearer token together. A checker and an
// upstream that read different values of one header is a known ext_authz
// bypass class (see docs/envoy.md).
package credential

import "strings"

// Kind is what the request presents.
type Kind string

const (
	None   Kind = "none"
	APIKey Kind = "api_key"
	JWT    Kind = "jwt"
)

// Via is where the credential was found.
type Via string

const (
	ViaHeader Via = "header" // the configured API-key header
	ViaBearer Via = "bearer" // Authorization: Bearer
)

// Problems with a presentation. They map to the credentials_malformed and
// wrong_scheme reasons.
const (
	ProblemNone      = ""
	ProblemEmpty     = "empty"
	ProblemTooLong   = "too_long"
	ProblemDuplicate = "duplicate"
	ProblemBadChars  = "bad_characters"
	ProblemBoth      = "two_credentials"
	ProblemScheme    = "wrong_scheme"
	ProblemSyntax    = "bad_syntax"
)

// Limits on credential sizes.
const (
	MaxAPIKeyLen = 512
	MaxTokenLen  = 8192
)

// Presented is the credential found in a request. Value holds the secret and
// must never be logged; Presented implements no Stringer on purpose.
type Presented struct {
	Kind    Kind
	Via     Via
	Value   string
	Problem string
}

// Extract reads the credential from Envoy's lower-cased header map. apiKeyHeader
// must be lower-case.
func Extract(headers map[string]string, apiKeyHeader string) Presented {
	key, hasKey := headers[apiKeyHeader]
	auth, hasAuth := headers["authorization"]
	switch {
	case hasKey && hasAuth:
		return Presented{Kind: APIKey, Via: ViaHeader, Problem: ProblemBoth}
	case hasKey:
		return apiKey(key)
	case hasAuth:
		return bearer(auth)
	}
	return Presented{Kind: None}
}

func apiKey(v string) Presented {
	p := Presented{Kind: APIKey, Via: ViaHeader}
	switch {
	case v == "":
		p.Problem = ProblemEmpty
	case len(v) > MaxAPIKeyLen:
		p.Problem = ProblemTooLong
	case strings.IndexByte(v, ',') >= 0:
		p.Problem = ProblemDuplicate
	case !tokenChars(v):
		p.Problem = ProblemBadChars
	default:
		p.Value = v
	}
	return p
}

// bearer parses "Bearer <b64token>" (RFC 6750 §2.1), the scheme matched
// case-insensitively, exactly one space.
func bearer(v string) Presented {
	p := Presented{Kind: JWT, Via: ViaBearer}
	if len(v) > MaxTokenLen+7 {
		p.Problem = ProblemTooLong
		return p
	}
	scheme, tok, found := strings.Cut(v, " ")
	if !strings.EqualFold(scheme, "bearer") {
		if strings.IndexByte(v, ',') >= 0 && strings.HasPrefix(strings.ToLower(v), "bearer") {
			p.Problem = ProblemDuplicate
			return p
		}
		p.Problem = ProblemScheme
		return p
	}
	switch {
	case !found || tok == "":
		p.Problem = ProblemEmpty
	case strings.IndexByte(tok, ',') >= 0:
		p.Problem = ProblemDuplicate
	case !tokenChars(tok):
		p.Problem = ProblemSyntax
	default:
		p.Value = tok
		if strings.Count(tok, ".") != 2 {
			p.Kind = APIKey // an opaque bearer token is an API key
		}
	}
	return p
}

// tokenChars reports whether s uses only b64token characters (RFC 6750):
// ALPHA DIGIT - . _ ~ + / with '=' only as trailing padding. API keys follow
// the same rule.
func tokenChars(s string) bool {
	i := 0
	for i < len(s) && tokenByte[s[i]] { // a table: a JWT is hundreds of bytes
		i++
	}
	for ; i < len(s); i++ {
		if s[i] != '=' {
			return false
		}
	}
	return true
}

// tokenByte marks the b64token characters but the padding '='.
var tokenByte = func() (t [256]bool) {
	for c := range 256 {
		t[c] = 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-._~+/", byte(c)) >= 0
	}
	return t
}()
