package extauthz_test

import data.extauthz

# A request as the sidecar presents it to the policy.
base := {
	"extauthz": {
		"tenant_values": {"x-tenant-id": "42"},
		"browser": false,
		"idempotency_key": false,
		"path_problem": "",
		"client_ip": "127.0.0.1",
		"route": {
			"id": "orders-read", "public": false, "auth": {"api_key", "jwt"}, "scopes": ["orders:read"],
			"tenant_headers": [{"header": "X-Tenant-Id", "key": "x-tenant-id", "dimension": "tenant", "format": "positive_integer", "required": true}],
			"idempotency_key": false, "reject_browser_api_key": false,
		},
		"credential": {
			"kind": "api_key", "via": "header", "status": "valid",
			"identity": {"tenants": {"tenant": {"42"}}, "scopes": {"orders:read"}, "allowed_cidrs": []},
		},
	},
}

reason(inp) := r if {
	r := extauthz.decision.reason with input as inp
}

test_valid_key_is_allowed if {
	extauthz.decision == {"allow": true, "reason": "ok"} with input as base
}

test_ambiguous_path_is_refused_first if {
	reason(json.patch(base, [
		{"op": "replace", "path": "/extauthz/path_problem", "value": "dot_segment"},
		{"op": "replace", "path": "/extauthz/credential/status", "value": "missing"},
	])) == "path_invalid"
}

test_unmatched_route if {
	reason(json.patch(base, [{"op": "replace", "path": "/extauthz/route", "value": null}])) == "route_not_found"
}

test_key_statuses_map_to_reasons if {
	every status, want in {"unknown": "key_invalid", "expired": "key_expired", "revoked": "key_revoked", "suspended": "key_suspended", "malformed": "credentials_malformed", "wrong_scheme": "wrong_scheme"} {
		reason(json.patch(base, [{"op": "replace", "path": "/extauthz/credential/status", "value": status}])) == want
	}
}

test_token_statuses_map_to_reasons if {
	every status, want in {"bad_signature": "token_invalid", "wrong_issuer": "token_invalid", "wrong_audience": "token_invalid", "not_yet_valid": "token_invalid", "expired": "token_expired", "unavailable": "auth_unavailable"} {
		reason(json.patch(base, [
			{"op": "replace", "path": "/extauthz/credential/kind", "value": "jwt"},
			{"op": "replace", "path": "/extauthz/credential/via", "value": "bearer"},
			{"op": "replace", "path": "/extauthz/credential/status", "value": status},
		])) == want
	}
}

test_missing_credentials if {
	reason(json.patch(base, [{"op": "replace", "path": "/extauthz/credential", "value": {"kind": "none", "via": "", "status": "missing"}}])) == "credentials_missing"
}

test_public_route_needs_no_credentials if {
	extauthz.decision.allow with input as json.patch(base, [
		{"op": "replace", "path": "/extauthz/route/public", "value": true},
		{"op": "replace", "path": "/extauthz/credential", "value": {"kind": "none", "via": "", "status": "missing"}},
	])
}

test_browser_with_api_key_refused_where_route_says_so if {
	reason(json.patch(base, [
		{"op": "replace", "path": "/extauthz/route/reject_browser_api_key", "value": true},
		{"op": "replace", "path": "/extauthz/browser", "value": true},
	])) == "browser_api_key"
}

test_jwt_on_api_key_only_route if {
	reason(json.patch(base, [
		{"op": "replace", "path": "/extauthz/route/auth", "value": {"api_key"}},
		{"op": "replace", "path": "/extauthz/credential/kind", "value": "jwt"},
		{"op": "replace", "path": "/extauthz/credential/via", "value": "bearer"},
	])) == "wrong_auth_mode"
}

test_tenant_header_rules if {
	reason(json.patch(base, [{"op": "remove", "path": "/extauthz/tenant_values/x-tenant-id"}])) == "tenant_header_missing"
	reason(json.patch(base, [{"op": "replace", "path": "/extauthz/tenant_values/x-tenant-id", "value": "-1"}])) == "tenant_header_invalid"
	reason(json.patch(base, [{"op": "replace", "path": "/extauthz/tenant_values/x-tenant-id", "value": "042"}])) == "tenant_header_invalid"
	reason(json.patch(base, [{"op": "replace", "path": "/extauthz/tenant_values/x-tenant-id", "value": "43"}])) == "tenant_forbidden"
}

test_invalid_tenant_details_carry_header_and_value if {
	d := extauthz.decision with input as json.patch(base, [{"op": "replace", "path": "/extauthz/tenant_values/x-tenant-id", "value": "invalid-id"}])
	d.details == {"header": "X-Tenant-Id", "value": "invalid-id"}
	d.variant == "tenant"
}

test_key_allowlist if {
	inp := json.patch(base, [{"op": "replace", "path": "/extauthz/credential/identity/allowed_cidrs", "value": ["10.0.0.0/8", "2001:db8::/32"]}])
	reason(inp) == "ip_not_allowed"
	extauthz.decision.allow with input as json.patch(inp, [{"op": "replace", "path": "/extauthz/client_ip", "value": "2001:db8::7"}])
	reason(json.patch(inp, [{"op": "replace", "path": "/extauthz/client_ip", "value": ""}])) == "ip_not_allowed"
}

test_tenant_allowlist if {
	reason(base) == "ip_not_allowed" with data.extauthz.tenants as {"42": {"allowed_cidrs": ["192.0.2.0/24"]}}
	extauthz.decision.allow with input as base with data.extauthz.tenants as {"42": {"allowed_cidrs": ["127.0.0.0/8"]}}
}

# Workspace 42 is not tenant 42: data.extauthz.tenants names it workspace:42.
test_tenant_allowlist_per_dimension if {
	ws := json.patch(base, [
		{"op": "replace", "path": "/extauthz/route/tenant_headers/0/dimension", "value": "workspace"},
		{"op": "replace", "path": "/extauthz/credential/identity/tenants", "value": {"workspace": {"42"}}},
	])
	extauthz.decision.allow with input as ws with data.extauthz.tenants as {"42": {"allowed_cidrs": ["192.0.2.0/24"]}}
	reason(ws) == "ip_not_allowed" with data.extauthz.tenants as {"workspace:42": {"allowed_cidrs": ["192.0.2.0/24"]}}
}

# Naming no tenant, a request may act for any the credential holds: all of
# their allowlists apply.
test_every_held_tenants_allowlist_applies_when_none_is_named if {
	none := json.patch(base, [
		{"op": "replace", "path": "/extauthz/tenant_values", "value": {}},
		{"op": "replace", "path": "/extauthz/route/tenant_headers/0/required", "value": false},
		{"op": "replace", "path": "/extauthz/credential/identity/tenants", "value": {"tenant": {"42", "7"}, "region": {"eu"}}},
	])
	reason(none) == "ip_not_allowed" with data.extauthz.tenants as {"7": {"allowed_cidrs": ["192.0.2.0/24"]}}
	reason(none) == "ip_not_allowed" with data.extauthz.tenants as {"region:eu": {"allowed_cidrs": ["192.0.2.0/24"]}}
	extauthz.decision.allow with input as none with data.extauthz.tenants as {"7": {"allowed_cidrs": ["127.0.0.0/8"]}}
}

test_tenant_key if {
	extauthz.tenant_key("tenant", "42") == "42"
	extauthz.tenant_key("workspace", "42") == "workspace:42"
	extauthz.tenant_key("tenant", "a:b") == "tenant:a:b"
}

test_scope_missing_names_the_scopes if {
	d := extauthz.decision with input as json.patch(base, [{"op": "replace", "path": "/extauthz/route/scopes", "value": ["orders:read", "orders:write", "admin"]}])
	d.reason == "scope_missing"
	d.details.scope == "orders:write admin"
}

test_idempotency_key if {
	inp := json.patch(base, [{"op": "replace", "path": "/extauthz/route/idempotency_key", "value": true}])
	reason(inp) == "idempotency_key_missing"
	extauthz.decision.allow with input as json.patch(inp, [{"op": "replace", "path": "/extauthz/idempotency_key", "value": true}])
}

test_unknown_status_never_allows if {
	not extauthz.decision.allow with input as json.patch(base, [{"op": "replace", "path": "/extauthz/credential/status", "value": "weird"}])
}

# A credential with no grant in a dimension holds nothing there: naming a
# tenant in that dimension is refused, not waved through.
test_no_grant_in_dimension_holds_nothing if {
	reason(json.patch(base, [{"op": "replace", "path": "/extauthz/credential/identity/tenants", "value": {}}])) == "tenant_forbidden"
	reason(json.patch(base, [{"op": "replace", "path": "/extauthz/credential/identity/tenants", "value": {"workspace": {"42"}}}])) == "tenant_forbidden"
	ws := json.patch(base, [
		{"op": "add", "path": "/extauthz/route/tenant_headers/-", "value": {"header": "X-Workspace-Id", "key": "x-workspace-id", "dimension": "workspace", "format": "any", "required": false}},
		{"op": "add", "path": "/extauthz/tenant_values/x-workspace-id", "value": "ws_9"},
	])
	d := extauthz.decision with input as ws
	d.reason == "tenant_forbidden"
	d.variant == "workspace"
	extauthz.decision.allow with input as json.patch(ws, [{"op": "add", "path": "/extauthz/credential/identity/tenants/workspace", "value": {"ws_9"}}])
}

# A public route takes anonymous callers and any valid credential; a
# credential that is presented but fails verification is still refused.
test_public_route_takes_valid_credentials if {
	pub := json.patch(base, [
		{"op": "replace", "path": "/extauthz/route/public", "value": true},
		{"op": "replace", "path": "/extauthz/route/auth", "value": {"jwt"}},
	])
	extauthz.decision.allow with input as pub
	reason(json.patch(pub, [{"op": "replace", "path": "/extauthz/credential/status", "value": "revoked"}])) == "key_revoked"
	reason(json.patch(pub, [{"op": "replace", "path": "/extauthz/tenant_values/x-tenant-id", "value": "43"}])) == "tenant_forbidden"
	extauthz.decision.allow with input as json.patch(pub, [
		{"op": "replace", "path": "/extauthz/credential", "value": {"kind": "none", "via": "", "status": "missing"}},
		{"op": "replace", "path": "/extauthz/tenant_values/x-tenant-id", "value": "43"},
	])
}

# A tenant a request names is held to its allowlist even when the caller
# may not act for it (the header is then removed before the upstream): an
# anonymous caller on a public route naming tenant 7 from outside tenant
# 7's networks is refused, and one naming no tenant is not.
test_named_tenant_allowlist_applies_to_anonymous_callers if {
	anon := json.patch(base, [
		{"op": "replace", "path": "/extauthz/route/public", "value": true},
		{"op": "replace", "path": "/extauthz/route/tenant_headers/0/required", "value": false},
		{"op": "replace", "path": "/extauthz/tenant_values", "value": {"x-tenant-id": "7"}},
		{"op": "replace", "path": "/extauthz/credential", "value": {"kind": "none", "via": "", "status": "missing"}},
	])
	reason(anon) == "ip_not_allowed" with data.extauthz.tenants as {"7": {"allowed_cidrs": ["192.0.2.0/24"]}}
	extauthz.decision.allow with input as json.patch(anon, [{"op": "replace", "path": "/extauthz/tenant_values", "value": {}}])
		with data.extauthz.tenants as {"7": {"allowed_cidrs": ["192.0.2.0/24"]}}
}
