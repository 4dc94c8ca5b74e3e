package envoyconfig

import (
	"fmt"
	"slices"
	"strings"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
)

// unprotectedPaths are the only exact paths on which a route may disable
// ext_authz (ExtAuthzPerRoute{disabled: true}).
var unprotectedPaths = []string{"/healthz", "/readyz"}

// CheckHardening asserts the security invariants for every HTTP connection
// manager that has an ext_authz filter (docs/envoy.md says what each one
// protects against) and
// that at least one has one. Each error is a *FieldError with a Path (no
// File or Line: ValidateNamed adds them).
//
// Per connection manager:
//   - normalize_path: true, merge_slashes: true, path_with_escaped_slashes_action
//     REJECT_REQUEST or UNESCAPE_AND_REDIRECT (path confusion);
//   - use_remote_address: true (client IP from the TCP peer, not from XFF);
//   - common_http_protocol_options.headers_with_underscores_action: REJECT_REQUEST;
//   - no ExtAuthzPerRoute{disabled: true} (nor a FilterConfig disabling
//     ext_authz or wrapping such an override) except on routes matching
//     exactly (case-sensitively) /healthz or /readyz, and none at
//     virtual-host, route-configuration or weighted-cluster level;
//   - no ExtAuthzPerRoute under a name that is not an ext_authz filter;
//   - routes inline (RDS/scoped routes cannot be checked here).
//
// Per ext_authz filter:
//   - failure_mode_allow: false; status_on_error set to a 5xx;
//     validate_mutations: true; an explicit grpc_service.timeout;
//   - shadow_mode off; the filter not disabled in the chain; filter_enabled /
//     filter_enabled_metadata only together with deny_at_disable: true.
func CheckHardening(b *bootstrapv3.Bootstrap) []error {
	h := &hardening{}
	found := false
	for _, r := range httpConnectionManagers(b) {
		authz := extAuthzFilters(r)
		if len(authz) == 0 {
			continue
		}
		found = true
		h.hcm(r)
		for _, a := range authz {
			h.filter(a)
		}
		h.routes(r, authz)
	}
	if !found {
		h.errorf(fieldPath{"static_resources", "listeners"}, "no HTTP connection manager has an ext_authz filter")
	}
	return h.errs
}

type hardening struct{ errs []error }

func (h *hardening) errorf(p fieldPath, format string, args ...any) {
	h.errs = append(h.errs, &FieldError{Path: p.String(), Msg: fmt.Sprintf(format, args...)})
}

func (h *hardening) hcm(r hcmRef) {
	c := r.hcm
	if !c.GetNormalizePath().GetValue() {
		h.errorf(r.path.field("normalize_path"), "normalize_path must be true (stops /public/../admin path confusion, CVE-2019-9901)")
	}
	if !c.GetMergeSlashes() {
		h.errorf(r.path.field("merge_slashes"), "merge_slashes must be true (stops //admin bypassing /admin rules, CVE-2021-29492)")
	}
	switch c.GetPathWithEscapedSlashesAction() {
	case hcmv3.HttpConnectionManager_REJECT_REQUEST, hcmv3.HttpConnectionManager_UNESCAPE_AND_REDIRECT:
	default:
		h.errorf(r.path.field("path_with_escaped_slashes_action"),
			"path_with_escaped_slashes_action must be REJECT_REQUEST or UNESCAPE_AND_REDIRECT, got %s (stops /admin%%2Fx bypasses, CVE-2021-29492)",
			c.GetPathWithEscapedSlashesAction())
	}
	if !c.GetUseRemoteAddress().GetValue() {
		h.errorf(r.path.field("use_remote_address"), "use_remote_address must be true (stops client IP spoofing via X-Forwarded-For)")
	}
	if a := c.GetCommonHttpProtocolOptions().GetHeadersWithUnderscoresAction(); a != corev3.HttpProtocolOptions_REJECT_REQUEST {
		h.errorf(r.path.field("common_http_protocol_options").field("headers_with_underscores_action"),
			"headers_with_underscores_action must be REJECT_REQUEST, got %s (stops x_tenant_id/x-tenant-id confusion)", a)
	}
}

func (h *hardening) filter(a authzFilter) {
	p := a.path.field("typed_config")
	cfg := a.cfg
	if a.filter.GetDisabled() {
		h.errorf(a.path.field("disabled"), "ext_authz filter must not be disabled by default (routes without an override would skip authorization)")
	}
	if cfg.GetFailureModeAllow() {
		h.errorf(p.field("failure_mode_allow"), "failure_mode_allow must be false (fail closed: an authz error or timeout must not allow the request)")
	}
	if sc := cfg.GetStatusOnError(); sc == nil {
		h.errorf(p.field("status_on_error"), "status_on_error must be set to a 5xx such as ServiceUnavailable (default 403 disguises outages as denials)")
	} else if code := sc.GetCode(); code < 500 || code > 599 {
		h.errorf(p.field("status_on_error").field("code"), "status_on_error must be a 5xx status, got %d", int32(code))
	}
	if !cfg.GetValidateMutations() {
		h.errorf(p.field("validate_mutations"), "validate_mutations must be true (rejects invalid header mutations, e.g. CR/LF injection)")
	}
	if gs := cfg.GetGrpcService(); gs != nil {
		if t := gs.GetTimeout(); t == nil || t.AsDuration() <= 0 {
			h.errorf(p.field("grpc_service").field("timeout"), "grpc_service.timeout must be set explicitly (implicit default 200ms)")
		}
	}
	if cfg.GetShadowMode() {
		h.errorf(p.field("shadow_mode"), "shadow_mode must be false (shadow mode never denies)")
	}
	if (cfg.GetFilterEnabled() != nil || cfg.GetFilterEnabledMetadata() != nil) && !cfg.GetDenyAtDisable().GetDefaultValue().GetValue() {
		h.errorf(p.field("deny_at_disable"), "filter_enabled/filter_enabled_metadata can switch ext_authz off; set deny_at_disable.default_value: true")
	}
}

func (h *hardening) routes(r hcmRef, authz []authzFilter) {
	names := authzNames(authz)
	rc := r.hcm.GetRouteConfig()
	if rc == nil {
		h.errorf(r.path, "routes must be inline (route_config) so that per-route ext_authz overrides can be checked")
		return
	}
	for _, pf := range perFilterConfigs(r.path.field("route_config"), rc) {
		per, generic, ok := authzOverride(pf.cfg)
		if !ok || generic && !names[pf.name] {
			continue // not ext_authz's (a FilterConfig of another filter)
		}
		if !names[pf.name] {
			h.errorf(pf.path, "ExtAuthzPerRoute under %q, which is not an ext_authz filter name: the override is silently ignored", pf.name)
			continue
		}
		if !per.GetDisabled() {
			continue
		}
		if pf.level != "route" {
			h.errorf(pf.path.field("disabled"), "ext_authz disabled at %s level: every route below it is unprotected", pf.level)
			continue
		}
		m := pf.route.GetMatch()
		if !slices.Contains(unprotectedPaths, m.GetPath()) || m.GetCaseSensitive() != nil && !m.GetCaseSensitive().GetValue() {
			h.errorf(pf.path.field("disabled"), "ext_authz disabled on a protected route (allowed only on an exact, case-sensitive match.path of %s)", strings.Join(unprotectedPaths, " or "))
		}
	}
}
