# The extauthz rulebook. The sidecar queries data.extauthz.decision once per
# request. Input keeps the OPA-Envoy plugin's shape (input.attributes,
# input.parsed_path, input.parsed_query) and adds input.extauthz: what the
# sidecar resolved before evaluation (canonical path, matched route,
# credential verification, client IP, request id). See docs/policy.md.
package extauthz

import input.extauthz as facts
import input.extauthz.credential as cred
import input.extauthz.route

# Fail closed: anything the rules below do not explicitly allow is an
# internal error, never an allow.
default decision := {"allow": false, "reason": "internal_error"}

# The first rule that applies decides, in this order: the request's shape,
# authentication, then authorization (auth mode, tenant, IP, scope), then
# request preconditions.
decision := deny("path_invalid") if {
	facts.path_problem != ""
} else := deny("route_not_found") if {
	route == null
} else := deny(authn_failure) if {
	authn_failure
} else := deny("browser_api_key") if {
	browser_api_key
} else := deny("wrong_auth_mode") if {
	wrong_auth_mode
} else := tenant_denial if {
	tenant_denial
} else := deny("ip_not_allowed") if {
	ip_not_allowed
} else := scope_denial if {
	scope_denial
} else := deny("idempotency_key_missing") if {
	idempotency_key_missing
} else := allow if {
	route.public
} else := allow if {
	identity
}

allow := {"allow": true, "reason": "ok"}

deny(reason) := {"allow": false, "reason": reason}

# --- Authentication -------------------------------------------------------

# How the credential was presented, in the route's vocabulary.
presented_as := "api_key" if {
	cred.kind == "api_key"
	cred.via == "header"
}

presented_as := "api_key_bearer" if {
	cred.kind == "api_key"
	cred.via == "bearer"
}

presented_as := "jwt" if cred.kind == "jwt"

# A route that takes bearer JWTs but not bearer API keys reads any opaque
# bearer value as a broken token.
bearer_read_as_token if {
	presented_as == "api_key_bearer"
	not "api_key_bearer" in route.auth
	"jwt" in route.auth
}

authn_failure := "token_invalid" if {
	bearer_read_as_token
} else := "credentials_missing" if {
	cred.status == "missing"
	not route.public
} else := reason if {
	cred.status != "missing"
	reason := status_reasons[cred.kind][cred.status]
}

# Verification result -> reason, by credential kind.
status_reasons := {
	"api_key": {
		"malformed": "credentials_malformed",
		"wrong_scheme": "wrong_scheme",
		"unknown": "key_invalid",
		"expired": "key_expired",
		"revoked": "key_revoked",
		"suspended": "key_suspended",
		"unavailable": "auth_unavailable",
	},
	"jwt": {
		"malformed": "credentials_malformed",
		"wrong_scheme": "wrong_scheme",
		"invalid": "token_invalid",
		"unknown": "token_invalid",
		"bad_signature": "token_invalid",
		"wrong_issuer": "token_invalid",
		"wrong_audience": "token_invalid",
		"not_yet_valid": "token_invalid",
		"expired": "token_expired",
		"unavailable": "auth_unavailable",
	},
}

identity := cred.identity if cred.status == "valid"

# --- Authorization --------------------------------------------------------

# Browsers (Origin, Sec-Fetch-*, Cookie) must not carry API keys where the
# API forbids it.
browser_api_key if {
	route.reject_browser_api_key
	presented_as == "api_key"
	facts.browser
}

# A public route takes any valid credential (an SDK that always sends its
# key can call it); other routes only the kinds they list.
wrong_auth_mode if {
	identity
	not route.public
	not presented_as in route.auth
}

# Tenant headers are checked in route order; the first failure decides.
tenant_denials := [d | some th in route.tenant_headers; d := tenant_check(th)]

tenant_denial := tenant_denials[0]

# The values of the route's tenant headers, by lower-case name.
values := facts.tenant_values

tenant_check(th) := denial("tenant_header_missing", th, {"header": th.header}) if {
	not values[th.key]
	th.required
} else := denial("tenant_header_invalid", th, {"header": th.header, "value": values[th.key]}) if {
	values[th.key]
	not valid_format(th.format, values[th.key])
} else := denial("tenant_forbidden", th, {"header": th.header, "value": values[th.key]}) if {
	values[th.key]
	not anonymous_on_public_route
	not holds(th.dimension, values[th.key])
}

# A credential holds a tenant only when it lists that value in that
# dimension: a credential with no grant in a dimension holds nothing there.
holds(dimension, value) if value in identity.tenants[dimension]

# An anonymous caller on a public route names tenants nobody verifies; the
# sidecar passes no tenant upstream for it.
anonymous_on_public_route if {
	route.public
	not identity
}

denial(reason, th, details) := {"allow": false, "reason": reason, "variant": th.dimension, "details": details}

valid_format("any", v) if {
	count(v) <= 128
	not contains(v, ",")
}

valid_format("positive_integer", v) if regex.match(`^[1-9][0-9]{0,17}$`, v)

valid_format("uuid", v) if regex.match(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`, v)

valid_format("slug", v) if regex.match(`^[a-z0-9][a-z0-9_-]{0,62}$`, v)

# The tenants a request names or acts for: every tenant header it sent
# (held by the credential or not: a tenant named from outside its allowlist
# is refused even where its denial is shadowed or the caller anonymous), or,
# when it sent none, every tenant the credential holds (the upstream may act
# for any of them, so each one's allowlist applies).
request_tenants contains tenant_key(th.dimension, values[th.key]) if some th in route.tenant_headers

request_tenants contains tenant_key(dimension, t) if {
	count([th | some th in route.tenant_headers; values[th.key]]) == 0
	some dimension, ids in identity.tenants
	some t in ids
}

# A tenant as data.extauthz.tenants and limits.tenants name it: the id in
# dimension "tenant", "dimension:id" in any other, so workspace 7 is not
# tenant 7.
tenant_key(dimension, id) := id if {
	dimension == "tenant"
	not contains(id, ":")
} else := concat(":", [dimension, id])

# Every allowlist that applies must contain the client address.
allowlists contains identity.allowed_cidrs if count(identity.allowed_cidrs) > 0

allowlists contains cidrs if {
	some t in request_tenants
	cidrs := data.extauthz.tenants[t].allowed_cidrs
	count(cidrs) > 0
}

ip_not_allowed if {
	some cidrs in allowlists
	not extauthz.client_in(cidrs, facts.client_ip)
}

missing_scopes := [s | some s in route.scopes; not s in identity.scopes]

scope_denial := {"allow": false, "reason": "scope_missing", "details": {"scope": concat(" ", missing_scopes)}} if {
	not route.public
	count(missing_scopes) > 0
}

idempotency_key_missing if {
	route.idempotency_key
	not facts.idempotency_key
}
