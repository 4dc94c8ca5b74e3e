// Package decision defines the outcome of a check: allow, or deny for exactly
// one reason from a small fixed set, with the context a deny envelope needs.
package decision

// Reason names why a request was denied. The set is fixed and documented in
// docs/reasons.md; policies may only return these.
type Reason string

// Reasons, in precedence order (the first that applies wins; see Precedence).
const (
	OK                    Reason = "ok"
	RequestInvalid        Reason = "request_invalid"
	RequestTooLarge       Reason = "request_too_large"
	PathInvalid           Reason = "path_invalid"
	RouteNotFound         Reason = "route_not_found"
	CredentialsMalformed  Reason = "credentials_malformed"
	WrongScheme           Reason = "wrong_scheme"
	CredentialsMissing    Reason = "credentials_missing"
	KeyInvalid            Reason = "key_invalid"
	KeyExpired            Reason = "key_expired"
	KeyRevoked            Reason = "key_revoked"
	KeySuspended          Reason = "key_suspended"
	TokenInvalid          Reason = "token_invalid"
	TokenExpired          Reason = "token_expired"
	AuthUnavailable       Reason = "auth_unavailable"
	BrowserAPIKey         Reason = "browser_api_key"
	WrongAuthMode         Reason = "wrong_auth_mode"
	TenantHeaderMissing   Reason = "tenant_header_missing"
	TenantHeaderInvalid   Reason = "tenant_header_invalid"
	TenantForbidden       Reason = "tenant_forbidden"
	IPNotAllowed          Reason = "ip_not_allowed"
	ScopeMissing          Reason = "scope_missing"
	IdempotencyKeyMissing Reason = "idempotency_key_missing"
	// PolicyDenied is a deny by a policy that gives no reason of its own:
	// an OPA-Envoy compatible policy (extauthz.settings.opa_envoy_path)
	// returning false, or an object with allowed false and neither body
	// nor http_status. It comes after every check the sidecar's own
	// rulebook makes and before the quota, which counts allowed requests.
	PolicyDenied  Reason = "policy_denied"
	RateLimited   Reason = "rate_limited"
	InternalError Reason = "internal_error"
)

// Precedence lists every deny reason in the order the default policy checks
// them: the request's shape, then authentication, then authorization
// (auth mode, tenant, IP, scope), then request preconditions, then the
// verdict of a policy that names no reason (policy_denied), and quotas.
// internal_error is outside the order: it replaces any result that could not
// be computed.
var Precedence = []Reason{
	RequestInvalid, RequestTooLarge, PathInvalid, RouteNotFound,
	CredentialsMalformed, WrongScheme, CredentialsMissing,
	KeyInvalid, KeyExpired, KeyRevoked, KeySuspended,
	TokenInvalid, TokenExpired, AuthUnavailable,
	BrowserAPIKey, WrongAuthMode,
	TenantHeaderMissing, TenantHeaderInvalid, TenantForbidden,
	IPNotAllowed, ScopeMissing, IdempotencyKeyMissing, PolicyDenied, RateLimited,
}

var known = func() map[Reason]bool {
	m := map[Reason]bool{OK: true, InternalError: true}
	for _, r := range Precedence {
		m[r] = true
	}
	return m
}()

// Known reports whether r is in the fixed set.
func Known(r Reason) bool { return known[r] }

// RateLimit carries quota state for 429s and rate-limit headers.
type RateLimit struct {
	Limit         int64  // requests allowed in the window
	Remaining     int64  // requests left
	Reset         int64  // unix seconds when the window resets
	RetryAfter    int64  // seconds; 0 = not limited
	WindowSeconds int64  // window length
	Window        string // human form, e.g. "1 minute"
}

// Decision is the result of a check.
type Decision struct {
	Allow   bool
	Reason  Reason
	Variant string            // refines a reason for profiles, e.g. the tenant dimension "brand"
	Details map[string]string // header, value, dimension, scope: request-derived values are capped and escaped by the renderer
	// Context filled by the check path.
	ID        string // decision id
	RequestID string
	Profile   string
	Route     string
	RateLimit *RateLimit
	// Who, for logs and metadata (never a credential).
	KeyID, Subject, Tenant string
	PolicyVersion          string
	// UpstreamHeaders are extra headers a policy asks to set on allowed requests.
	UpstreamHeaders map[string]string
	// Shadow is the deny the request would have got, when its route puts
	// that reason in shadow: the request was allowed instead.
	Shadow *Shadow
}

// Shadow is a deny that was not enforced: what the client would have seen.
type Shadow struct {
	Reason Reason
	Status int
	Body   string
}

// FailClosed are the reasons that report a failure rather than a verdict on
// the request: "*" never shadows them, only naming them does.
var FailClosed = map[Reason]bool{InternalError: true, AuthUnavailable: true, RequestInvalid: true, RequestTooLarge: true}
