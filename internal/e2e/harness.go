package e2e

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/extauthz/extauthz/internal/envoyconfig"
	"github.com/extauthz/extauthz/internal/envoysim"
)

// HarnessConfig reads an Envoy bootstrap (YAML or JSON) and translates it
// into the envoysim.Config that emulates it. AuthzConn/Target and Upstream
// are left for the caller.
//
// The translation is strict: every field of the listener, HCM, route table,
// ext_authz filter and router that the harness does not model is an error
// (naming the field), so the harness never silently diverges from the file.
// Fields without influence on how one request is handled are accepted and
// ignored: admin, node, names, stat prefixes, access logs, listener
// addresses, clusters (the harness calls the sidecar and the upstream it is
// given, not the clusters' endpoints), include_peer_certificate (no TLS).
func HarnessConfig(path string) (envoysim.Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return envoysim.Config{}, err
	}
	cfg, err := TranslateYAML(data)
	if err != nil {
		return envoysim.Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// TranslateYAML is HarnessConfig for a config held in memory.
func TranslateYAML(data []byte) (envoysim.Config, error) {
	b, err := envoyconfig.Parse(data)
	if err != nil {
		return envoysim.Config{}, err
	}
	return Translate(b)
}

// Translate converts a parsed bootstrap; see HarnessConfig.
func Translate(b *bootstrapv3.Bootstrap) (envoysim.Config, error) {
	t := &translator{}
	cfg := t.bootstrap(b)
	if len(t.errs) > 0 {
		return envoysim.Config{}, errors.Join(t.errs...)
	}
	return cfg, nil
}

type translator struct {
	errs []error
}

func (t *translator) fail(path, format string, args ...any) {
	t.errs = append(t.errs, fmt.Errorf("%s: %s", path, fmt.Sprintf(format, args...)))
}

// only reports every populated field of m that is not in allowed.
func (t *translator) only(path string, m proto.Message, allowed ...string) {
	if m == nil {
		return
	}
	m.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		if !slices.Contains(allowed, string(fd.Name())) {
			t.fail(path+"."+string(fd.Name()), "not modelled by the envoysim harness")
		}
		return true
	})
}

// unpack unmarshals a into m, reporting a type mismatch.
func (t *translator) unpack(path string, a *anypb.Any, m proto.Message) bool {
	if a == nil || !a.MessageIs(m) {
		t.fail(path, "typed_config %q: expected %s", a.GetTypeUrl(), m.ProtoReflect().Descriptor().FullName())
		return false
	}
	if err := a.UnmarshalTo(m); err != nil {
		t.fail(path, "%v", err)
		return false
	}
	return true
}

func (t *translator) bootstrap(b *bootstrapv3.Bootstrap) envoysim.Config {
	t.only("bootstrap", b, "admin", "node", "static_resources")
	sr := b.GetStaticResources()
	t.only("static_resources", sr, "listeners", "clusters")

	type found struct {
		path string
		hcm  *hcmv3.HttpConnectionManager
	}
	var hcms []found
	for li, l := range sr.GetListeners() {
		lp := fmt.Sprintf("static_resources.listeners[%d]", li)
		t.only(lp, l, "name", "address", "filter_chains")
		for ci, fc := range l.GetFilterChains() {
			cp := fmt.Sprintf("%s.filter_chains[%d]", lp, ci)
			t.only(cp, fc, "filters")
			for fi, f := range fc.GetFilters() {
				fp := fmt.Sprintf("%s.filters[%d]", cp, fi)
				t.only(fp, f, "name", "typed_config")
				h := &hcmv3.HttpConnectionManager{}
				if t.unpack(fp+".typed_config", f.GetTypedConfig(), h) {
					hcms = append(hcms, found{fp + ".typed_config", h})
				}
			}
		}
	}
	if len(hcms) != 1 {
		t.fail("static_resources.listeners", "the harness emulates exactly one HTTP connection manager; found %d", len(hcms))
		return envoysim.Config{}
	}
	return t.hcm(hcms[0].path, hcms[0].hcm)
}

func (t *translator) hcm(p string, h *hcmv3.HttpConnectionManager) envoysim.Config {
	t.only(p, h,
		"stat_prefix", "codec_type", "access_log", "route_config", "http_filters",
		"use_remote_address", "xff_num_trusted_hops", "generate_request_id", "preserve_external_request_id",
		"normalize_path", "merge_slashes", "path_with_escaped_slashes_action",
		"strip_any_host_port", "strip_trailing_host_dot",
		"common_http_protocol_options", "max_request_headers_kb",
		"server_name", "server_header_transformation", "forward_client_cert_details")
	var cfg envoysim.Config
	switch h.GetCodecType() {
	case hcmv3.HttpConnectionManager_AUTO, hcmv3.HttpConnectionManager_HTTP1, hcmv3.HttpConnectionManager_HTTP2:
	default:
		t.fail(p+".codec_type", "%v is not modelled", h.GetCodecType())
	}
	if h.GetForwardClientCertDetails() != hcmv3.HttpConnectionManager_SANITIZE {
		t.fail(p+".forward_client_cert_details", "only SANITIZE is modelled (no mTLS)")
	}
	cfg.UseRemoteAddress = h.GetUseRemoteAddress().GetValue()
	cfg.XFFNumTrustedHops = int(h.GetXffNumTrustedHops())
	cfg.GenerateRequestID = h.GetGenerateRequestId() == nil || h.GetGenerateRequestId().GetValue()
	cfg.PreserveExternalRequestID = h.GetPreserveExternalRequestId()
	cfg.NormalizePath = h.GetNormalizePath().GetValue()
	cfg.MergeSlashes = h.GetMergeSlashes()
	switch a := h.GetPathWithEscapedSlashesAction(); a {
	case hcmv3.HttpConnectionManager_IMPLEMENTATION_SPECIFIC_DEFAULT, hcmv3.HttpConnectionManager_KEEP_UNCHANGED:
		cfg.PathWithEscapedSlashesAction = envoysim.KeepUnchanged
	case hcmv3.HttpConnectionManager_REJECT_REQUEST:
		cfg.PathWithEscapedSlashesAction = envoysim.RejectRequest
	case hcmv3.HttpConnectionManager_UNESCAPE_AND_REDIRECT:
		cfg.PathWithEscapedSlashesAction = envoysim.UnescapeAndRedirect
	case hcmv3.HttpConnectionManager_UNESCAPE_AND_FORWARD:
		cfg.PathWithEscapedSlashesAction = envoysim.UnescapeAndForward
	default:
		t.fail(p+".path_with_escaped_slashes_action", "unknown value %v", a)
	}
	cfg.StripAnyHostPort = h.GetStripAnyHostPort()
	cfg.StripTrailingHostDot = h.GetStripTrailingHostDot()

	cp := h.GetCommonHttpProtocolOptions()
	t.only(p+".common_http_protocol_options", cp, "headers_with_underscores_action", "max_headers_count")
	switch a := cp.GetHeadersWithUnderscoresAction(); a {
	case corev3.HttpProtocolOptions_ALLOW:
		cfg.HeadersWithUnderscoresAction = envoysim.AllowUnderscores
	case corev3.HttpProtocolOptions_REJECT_REQUEST:
		cfg.HeadersWithUnderscoresAction = envoysim.RejectUnderscores
	case corev3.HttpProtocolOptions_DROP_HEADER:
		cfg.HeadersWithUnderscoresAction = envoysim.DropUnderscores
	default:
		t.fail(p+".common_http_protocol_options.headers_with_underscores_action", "unknown value %v", a)
	}
	if n := cp.GetMaxHeadersCount(); n != nil {
		cfg.MaxRequestHeadersCount = int(n.GetValue())
	}
	if n := h.GetMaxRequestHeadersKb(); n != nil {
		cfg.MaxRequestHeadersKB = int(n.GetValue())
	}
	cfg.ServerName = h.GetServerName()
	switch h.GetServerHeaderTransformation() {
	case hcmv3.HttpConnectionManager_OVERWRITE:
		cfg.ServerHeaderTransformation = envoysim.ServerOverwrite
	case hcmv3.HttpConnectionManager_APPEND_IF_ABSENT:
		cfg.ServerHeaderTransformation = envoysim.ServerAppendIfAbsent
	case hcmv3.HttpConnectionManager_PASS_THROUGH:
		cfg.ServerHeaderTransformation = envoysim.ServerPassThrough
	}

	authzName := t.httpFilters(p, h.GetHttpFilters(), &cfg)
	rc := h.GetRouteConfig()
	if rc == nil {
		t.fail(p, "route_config (inline) is required: rds/scoped_routes are not modelled")
		return cfg
	}
	// envoysim matches virtual hosts without the port; Envoy does so only
	// when the port is stripped or ignored.
	if !cfg.StripAnyHostPort && !rc.GetIgnorePortInHostMatching() {
		t.fail(p, "the harness matches virtual hosts ignoring the port: set strip_any_host_port or route_config.ignore_port_in_host_matching")
	}
	cfg.VirtualHosts = t.routeConfig(p+".route_config", rc, authzName)
	return cfg
}

// httpFilters translates the filter chain: exactly one ext_authz (gRPC)
// followed by the router. It returns the ext_authz filter's name, the key
// of its typed_per_filter_config entries.
func (t *translator) httpFilters(p string, fs []*hcmv3.HttpFilter, cfg *envoysim.Config) string {
	if len(fs) != 2 {
		t.fail(p+".http_filters", "the harness models exactly [ext_authz, router]; found %d filters", len(fs))
	}
	name := ""
	for i, f := range fs {
		fp := fmt.Sprintf("%s.http_filters[%d]", p, i)
		t.only(fp, f, "name", "typed_config")
		switch {
		case f.GetTypedConfig().MessageIs(&extauthzv3.ExtAuthz{}):
			if i != 0 {
				t.fail(fp, "ext_authz must be the first HTTP filter")
			}
			a := &extauthzv3.ExtAuthz{}
			if t.unpack(fp+".typed_config", f.GetTypedConfig(), a) {
				t.extAuthz(fp+".typed_config", a, cfg)
			}
			name = f.GetName()
		case f.GetTypedConfig().MessageIs(&routerv3.Router{}):
			if i != len(fs)-1 {
				t.fail(fp, "the router must be the last HTTP filter")
			}
			r := &routerv3.Router{}
			if t.unpack(fp+".typed_config", f.GetTypedConfig(), r) {
				t.only(fp+".typed_config", r, "suppress_envoy_headers", "dynamic_stats")
				cfg.SuppressEnvoyHeaders = r.GetSuppressEnvoyHeaders()
			}
		default:
			t.fail(fp+".typed_config", "HTTP filter %q (%s) is not modelled", f.GetName(), f.GetTypedConfig().GetTypeUrl())
		}
	}
	if name == "" {
		t.fail(p+".http_filters", "no ext_authz filter")
	}
	return name
}

func (t *translator) extAuthz(p string, a *extauthzv3.ExtAuthz, cfg *envoysim.Config) {
	t.only(p, a,
		"grpc_service", "transport_api_version", "failure_mode_allow", "failure_mode_allow_header_add",
		"status_on_error", "validate_mutations", "with_request_body", "max_denied_response_body_bytes",
		"include_peer_certificate", "stat_prefix")
	if v := a.GetTransportApiVersion(); v != corev3.ApiVersion_V3 && v != corev3.ApiVersion_AUTO {
		t.fail(p+".transport_api_version", "%v: only V3 (or AUTO, which is V3) is modelled", v)
	}
	gs := a.GetGrpcService()
	if gs == nil {
		t.fail(p, "grpc_service is required (http_service is not modelled)")
	}
	t.only(p+".grpc_service", gs, "envoy_grpc", "timeout")
	t.only(p+".grpc_service.envoy_grpc", gs.GetEnvoyGrpc(), "cluster_name")
	if d := gs.GetTimeout(); d != nil {
		cfg.Timeout = d.AsDuration()
		if cfg.Timeout <= 0 {
			// Envoy: a zero timeout means no deadline; the harness cannot express that.
			t.fail(p+".grpc_service.timeout", "must be > 0")
		}
	}
	cfg.FailureModeAllow = a.GetFailureModeAllow()
	cfg.FailureModeAllowHeaderAdd = a.GetFailureModeAllowHeaderAdd()
	if s := a.GetStatusOnError(); s != nil {
		cfg.StatusOnError = int(s.GetCode())
	}
	cfg.ValidateMutations = a.GetValidateMutations()
	cfg.MaxDeniedResponseBodyBytes = int(a.GetMaxDeniedResponseBodyBytes())
	cfg.WithRequestBody = t.buffer(p+".with_request_body", a.GetWithRequestBody())
}

func (t *translator) buffer(p string, b *extauthzv3.BufferSettings) *envoysim.BufferSettings {
	if b == nil {
		return nil
	}
	t.only(p, b, "max_request_bytes", "allow_partial_message", "pack_as_bytes")
	if b.GetMaxRequestBytes() == 0 {
		t.fail(p+".max_request_bytes", "must be > 0")
	}
	return &envoysim.BufferSettings{
		MaxRequestBytes:     b.GetMaxRequestBytes(),
		AllowPartialMessage: b.GetAllowPartialMessage(),
		PackAsBytes:         b.GetPackAsBytes(),
	}
}

// perRoute is a translated ExtAuthzPerRoute.
type perRoute struct {
	disabled bool
	ce       map[string]string
	body     *envoysim.BufferSettings
}

// perFilter reads the ext_authz entry of a typed_per_filter_config map;
// entries for other filters are errors (no other filter is modelled).
func (t *translator) perFilter(p string, m map[string]*anypb.Any, authzName string) *perRoute {
	var out *perRoute
	for _, k := range sortedKeys(m) {
		ep := p + ".typed_per_filter_config[" + strconv.Quote(k) + "]"
		if k != authzName {
			t.fail(ep, "per-filter config for %q, which is not the ext_authz filter %q", k, authzName)
			continue
		}
		pr := &extauthzv3.ExtAuthzPerRoute{}
		if !t.unpack(ep, m[k], pr) {
			continue
		}
		t.only(ep, pr, "disabled", "check_settings")
		cs := pr.GetCheckSettings()
		t.only(ep+".check_settings", cs, "context_extensions", "with_request_body")
		out = &perRoute{
			disabled: pr.GetDisabled(),
			ce:       cs.GetContextExtensions(),
			body:     t.buffer(ep+".check_settings.with_request_body", cs.GetWithRequestBody()),
		}
	}
	return out
}

func (t *translator) routeConfig(p string, rc *routev3.RouteConfiguration, authzName string) []envoysim.VirtualHost {
	t.only(p, rc, "name", "virtual_hosts", "validate_clusters", "ignore_port_in_host_matching")
	var out []envoysim.VirtualHost
	for vi, vh := range rc.GetVirtualHosts() {
		vp := fmt.Sprintf("%s.virtual_hosts[%d]", p, vi)
		t.only(vp, vh, "name", "domains", "routes", "typed_per_filter_config")
		v := envoysim.VirtualHost{Name: vh.GetName(), Domains: vh.GetDomains()}
		vpr := t.perFilter(vp, vh.GetTypedPerFilterConfig(), authzName)
		if vpr != nil {
			v.ContextExtensions = vpr.ce
		}
		for ri, r := range vh.GetRoutes() {
			rp := fmt.Sprintf("%s.routes[%d]", vp, ri)
			rt, ok := t.route(rp, r)
			if !ok {
				continue
			}
			// ext_authz reads disabled and check_settings from the most
			// specific per-filter config; only context_extensions merge.
			if rpr := t.perFilter(rp, r.GetTypedPerFilterConfig(), authzName); rpr != nil {
				rt.Disabled, rt.ContextExtensions, rt.WithRequestBody = rpr.disabled, rpr.ce, rpr.body
			} else if vpr != nil {
				rt.Disabled, rt.WithRequestBody = vpr.disabled, vpr.body
			}
			v.Routes = append(v.Routes, rt)
		}
		out = append(out, v)
	}
	return out
}

func (t *translator) route(p string, r *routev3.Route) (envoysim.Route, bool) {
	t.only(p, r, "name", "match", "route", "typed_per_filter_config")
	var rt envoysim.Route
	if r.GetRoute() == nil {
		t.fail(p, "only route actions are modelled (redirect/direct_response/... are not)")
		return rt, false
	}
	t.only(p+".route", r.GetRoute(), "cluster")
	m := r.GetMatch()
	mp := p + ".match"
	t.only(mp, m, "prefix", "path", "headers", "case_sensitive")
	if cs := m.GetCaseSensitive(); cs != nil && !cs.GetValue() {
		t.fail(mp+".case_sensitive", "case-insensitive path matching is not modelled")
	}
	switch ps := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		rt.Prefix = ps.Prefix
	case *routev3.RouteMatch_Path:
		if ps.Path == "" {
			t.fail(mp+".path", "empty path")
		}
		rt.Path = ps.Path
	default:
		t.fail(mp, "only prefix and path matching are modelled")
		return rt, false
	}
	for hi, hm := range m.GetHeaders() {
		if h, ok := t.headerMatcher(fmt.Sprintf("%s.headers[%d]", mp, hi), hm); ok {
			rt.Headers = append(rt.Headers, h)
		}
	}
	return rt, true
}

func (t *translator) headerMatcher(p string, hm *routev3.HeaderMatcher) (envoysim.HeaderMatcher, bool) {
	t.only(p, hm, "name", "string_match", "present_match", "exact_match", "prefix_match", "suffix_match",
		"contains_match", "invert_match", "treat_missing_header_as_empty")
	out := envoysim.HeaderMatcher{
		Name:                strings.ToLower(hm.GetName()),
		Invert:              hm.GetInvertMatch(),
		TreatMissingAsEmpty: hm.GetTreatMissingHeaderAsEmpty(),
	}
	switch s := hm.GetHeaderMatchSpecifier().(type) {
	case *routev3.HeaderMatcher_StringMatch:
		sm := s.StringMatch
		t.only(p+".string_match", sm, "exact", "prefix", "suffix", "contains", "ignore_case")
		out.IgnoreCase = sm.GetIgnoreCase()
		switch mp := sm.GetMatchPattern().(type) {
		case *matcherv3.StringMatcher_Exact:
			out.Kind, out.Value = envoysim.HeaderExact, mp.Exact
		case *matcherv3.StringMatcher_Prefix:
			out.Kind, out.Value = envoysim.HeaderPrefix, mp.Prefix
		case *matcherv3.StringMatcher_Suffix:
			out.Kind, out.Value = envoysim.HeaderSuffix, mp.Suffix
		case *matcherv3.StringMatcher_Contains:
			out.Kind, out.Value = envoysim.HeaderContains, mp.Contains
		default:
			t.fail(p+".string_match", "only exact/prefix/suffix/contains are modelled")
			return out, false
		}
	case *routev3.HeaderMatcher_PresentMatch:
		out.Kind, out.Present = envoysim.HeaderPresent, s.PresentMatch
	case *routev3.HeaderMatcher_ExactMatch:
		out.Kind, out.Value = envoysim.HeaderExact, s.ExactMatch
	case *routev3.HeaderMatcher_PrefixMatch:
		out.Kind, out.Value = envoysim.HeaderPrefix, s.PrefixMatch
	case *routev3.HeaderMatcher_SuffixMatch:
		out.Kind, out.Value = envoysim.HeaderSuffix, s.SuffixMatch
	case *routev3.HeaderMatcher_ContainsMatch:
		out.Kind, out.Value = envoysim.HeaderContains, s.ContainsMatch
	default:
		t.fail(p, "header matcher kind is not modelled (regex/range)")
		return out, false
	}
	return out, true
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
