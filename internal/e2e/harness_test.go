package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/extauthz/extauthz/internal/envoysim"
)

const shippedEnvoyYAML = "../../envoy/envoy.yaml"

// TestHarnessConfigShipped pins the translation of envoy/envoy.yaml: every
// HCM hardening flag, the ext_authz settings and the whole route table.
func TestHarnessConfigShipped(t *testing.T) {
	cfg, err := HarnessConfig(shippedEnvoyYAML)
	if err != nil {
		t.Fatal(err)
	}
	// HCM and filter settings.
	checks := []struct {
		name      string
		got, want any
	}{
		{"use_remote_address", cfg.UseRemoteAddress, true},
		{"xff_num_trusted_hops", cfg.XFFNumTrustedHops, 0},
		{"normalize_path", cfg.NormalizePath, true},
		{"merge_slashes", cfg.MergeSlashes, true},
		{"path_with_escaped_slashes_action", cfg.PathWithEscapedSlashesAction, envoysim.RejectRequest},
		{"headers_with_underscores_action", cfg.HeadersWithUnderscoresAction, envoysim.RejectUnderscores},
		{"generate_request_id (default true)", cfg.GenerateRequestID, true},
		{"preserve_external_request_id", cfg.PreserveExternalRequestID, false},
		{"strip_any_host_port", cfg.StripAnyHostPort, true},
		{"strip_trailing_host_dot", cfg.StripTrailingHostDot, true},
		{"timeout", cfg.Timeout, 250 * time.Millisecond},
		{"failure_mode_allow", cfg.FailureModeAllow, false},
		{"status_on_error", cfg.StatusOnError, 503},
		{"validate_mutations", cfg.ValidateMutations, true},
		{"with_request_body (filter level)", cfg.WithRequestBody, (*envoysim.BufferSettings)(nil)},
		{"suppress_envoy_headers", cfg.SuppressEnvoyHeaders, false},
	}
	for _, c := range checks {
		if !cmp.Equal(c.got, c.want) {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	if cfg.AuthzConn != nil || cfg.Target != "" || cfg.Upstream != nil {
		t.Error("HarnessConfig must leave the authz connection and upstream to the caller")
	}

	health := envoysim.Route{Path: "/healthz", Disabled: true, Headers: []envoysim.HeaderMatcher{{Name: ":method", Kind: envoysim.HeaderExact, Value: "GET"}}}
	ordersRead := envoysim.Route{
		Path:              "/v1/orders",
		Headers:           []envoysim.HeaderMatcher{{Name: ":method", Kind: envoysim.HeaderExact, Value: "GET"}},
		ContextExtensions: map[string]string{"route": "orders-read", "scopes": "orders:read"},
	}
	ordersWrite := envoysim.Route{
		Path:              "/v1/orders",
		Headers:           []envoysim.HeaderMatcher{{Name: ":method", Kind: envoysim.HeaderExact, Value: "POST"}},
		ContextExtensions: map[string]string{"route": "orders-write", "scopes": "orders:write"},
		WithRequestBody:   &envoysim.BufferSettings{MaxRequestBytes: 8192},
	}
	catchAll := envoysim.Route{Prefix: "/"}
	vh := func(name, domain string, routes ...envoysim.Route) envoysim.VirtualHost {
		return envoysim.VirtualHost{Name: name, Domains: []string{domain}, ContextExtensions: map[string]string{"profile": name}, Routes: routes}
	}
	want := []envoysim.VirtualHost{
		vh("aidial", "aidial.localhost", health, ordersRead, catchAll),
		vh("dialektai", "dialektai.localhost", health, ordersRead, catchAll),
		vh("aidelly", "aidelly.localhost", health, ordersRead, catchAll),
		vh("lowercase", "lowercase.localhost", health, ordersRead, catchAll),
		vh("aisafe", "aisafe.localhost", health, ordersRead, catchAll),
		vh("default", "*", health, ordersRead, ordersWrite, catchAll),
	}
	if diff := cmp.Diff(want, cfg.VirtualHosts, cmp.Comparer(func(a, b map[string]string) bool {
		return len(a) == len(b) && (len(a) == 0 || cmp.Equal(a, b))
	})); diff != "" {
		t.Errorf("route table (-want +got):\n%s", diff)
	}
	if _, err := envoysim.New(withConn(cfg)); err != nil {
		t.Errorf("envoysim rejects the translation: %v", err)
	}
}

func withConn(cfg envoysim.Config) envoysim.Config {
	cfg.Target = "127.0.0.1:1"
	cfg.Upstream = &Echo{}
	return cfg
}

func TestHarnessConfigSidecarYAML(t *testing.T) {
	if _, err := HarnessConfig("../../envoy/envoy-sidecar.yaml"); err != nil {
		t.Fatal(err)
	}
}

// minimalYAML is a valid bootstrap the negative cases below edit.
const minimalYAML = `
static_resources:
  listeners:
  - name: l
    address: {socket_address: {address: 127.0.0.1, port_value: 8000}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: s
          strip_any_host_port: true
          #HCM
          route_config:
            name: r
            virtual_hosts:
            - name: vh
              domains: ["*"]
              #VHOST
              routes:
              - match: {prefix: /}
                route: {cluster: upstream}
                #ROUTE
          http_filters:
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              grpc_service: {envoy_grpc: {cluster_name: extauthz}, timeout: 1s}
              transport_api_version: V3
              #AUTHZ
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: upstream
    load_assignment: {cluster_name: upstream, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 8080}}}}]}]}
`

// edit replaces a #MARKER line with text indented like the marker.
func edit(marker, text string) string {
	i := strings.Index(minimalYAML, "#"+marker)
	lineStart := strings.LastIndexByte(minimalYAML[:i], '\n') + 1
	indent := minimalYAML[lineStart:i]
	lines := strings.Split(strings.TrimSpace(text), "\n")
	for j := range lines {
		lines[j] = indent + lines[j]
	}
	return minimalYAML[:lineStart] + strings.Join(lines, "\n") + minimalYAML[i+len(marker)+1:]
}

func TestTranslateMinimal(t *testing.T) {
	cfg, err := TranslateYAML([]byte(minimalYAML))
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.GenerateRequestID || cfg.UseRemoteAddress || cfg.NormalizePath || cfg.Timeout != time.Second {
		t.Errorf("defaults: %+v", cfg)
	}
	if len(cfg.VirtualHosts) != 1 || len(cfg.VirtualHosts[0].Routes) != 1 {
		t.Fatalf("routes: %+v", cfg.VirtualHosts)
	}
}

// TestTranslatePerFilterConfig: a vhost-level ExtAuthzPerRoute applies to
// routes without their own; a route's own config replaces disabled and
// with_request_body (most specific wins) and merges context_extensions.
func TestTranslatePerFilterConfig(t *testing.T) {
	y := edit("VHOST", `
typed_per_filter_config:
  envoy.filters.http.ext_authz:
    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
    disabled: true`)
	y = strings.Replace(y, `              - match: {prefix: /}
                route: {cluster: upstream}`, `              - match: {prefix: /checked}
                route: {cluster: upstream}
                typed_per_filter_config:
                  envoy.filters.http.ext_authz:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                    check_settings:
                      context_extensions: {k: v}
                      with_request_body: {max_request_bytes: 10, allow_partial_message: true, pack_as_bytes: true}
              - match:
                  prefix: /
                  headers:
                  - {name: x-a, present_match: true, invert_match: true}
                  - {name: x-b, string_match: {prefix: P, ignore_case: true}}
                  - {name: x-c, string_match: {exact: ""}, treat_missing_header_as_empty: true}
                route: {cluster: upstream}`, 1)
	cfg, err := TranslateYAML([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	want := []envoysim.Route{
		{Prefix: "/checked", ContextExtensions: map[string]string{"k": "v"},
			WithRequestBody: &envoysim.BufferSettings{MaxRequestBytes: 10, AllowPartialMessage: true, PackAsBytes: true}},
		{Prefix: "/", Disabled: true, Headers: []envoysim.HeaderMatcher{
			{Name: "x-a", Kind: envoysim.HeaderPresent, Present: true, Invert: true},
			{Name: "x-b", Kind: envoysim.HeaderPrefix, Value: "P", IgnoreCase: true},
			{Name: "x-c", Kind: envoysim.HeaderExact, TreatMissingAsEmpty: true},
		}},
	}
	if diff := cmp.Diff(want, cfg.VirtualHosts[0].Routes); diff != "" {
		t.Errorf("routes (-want +got):\n%s", diff)
	}
}

// TestTranslateRefusesUnmodelled: anything the harness cannot emulate is an
// error naming the field, never silently dropped.
func TestTranslateRefusesUnmodelled(t *testing.T) {
	cases := []struct {
		name, yaml, want string
	}{
		{"hcm_request_timeout", edit("HCM", "request_timeout: 5s"), "typed_config.request_timeout: not modelled"},
		{"hcm_strip_matching_host_port", strings.Replace(minimalYAML, "strip_any_host_port: true", "strip_matching_host_port: true", 1), "strip_matching_host_port"},
		{"port_in_host_matching", strings.Replace(minimalYAML, "strip_any_host_port: true", "merge_slashes: true", 1), "ignoring the port"},
		{"hcm_forward_client_cert", edit("HCM", "forward_client_cert_details: APPEND_FORWARD"), "forward_client_cert_details"},
		{"hcm_codec_http3", edit("HCM", "codec_type: HTTP3"), "codec_type"},
		{"hcm_local_reply_config", edit("HCM", "local_reply_config: {}"), "local_reply_config"},
		{"hcm_common_idle_timeout", edit("HCM", "common_http_protocol_options: {idle_timeout: 1s}"), "common_http_protocol_options.idle_timeout"},
		{"vhost_require_tls", edit("VHOST", "require_tls: ALL"), "virtual_hosts[0].require_tls"},
		{"vhost_request_headers_to_add", edit("VHOST", "request_headers_to_remove: [x-a]"), "request_headers_to_remove"},
		{"route_prefix_rewrite", strings.Replace(minimalYAML, "route: {cluster: upstream}", "route: {cluster: upstream, prefix_rewrite: /x}", 1), "routes[0].route.prefix_rewrite"},
		{"route_redirect", strings.Replace(minimalYAML, "route: {cluster: upstream}", "redirect: {path_redirect: /x}", 1), "only route actions"},
		{"route_regex", strings.Replace(minimalYAML, "match: {prefix: /}", "match: {safe_regex: {regex: '.*'}}", 1), "match.safe_regex"},
		{"route_case_insensitive", strings.Replace(minimalYAML, "match: {prefix: /}", "match: {prefix: /, case_sensitive: false}", 1), "case_sensitive"},
		{"route_query_match", strings.Replace(minimalYAML, "match: {prefix: /}", "match: {prefix: /, query_parameters: [{name: a, present_match: true}]}", 1), "query_parameters"},
		{"header_regex", strings.Replace(minimalYAML, "match: {prefix: /}", "match: {prefix: /, headers: [{name: a, string_match: {safe_regex: {regex: x}}}]}", 1), "string_match.safe_regex"},
		{"header_range", strings.Replace(minimalYAML, "match: {prefix: /}", "match: {prefix: /, headers: [{name: a, range_match: {start: 1, end: 2}}]}", 1), "range_match"},
		{"route_response_headers", edit("ROUTE", "response_headers_to_add: [{header: {key: a, value: b}}]"), "response_headers_to_add"},
		{"authz_clear_route_cache", edit("AUTHZ", "clear_route_cache: true"), "clear_route_cache"},
		{"authz_allowed_headers", edit("AUTHZ", "allowed_headers: {patterns: [{exact: x}]}"), "allowed_headers"},
		{"authz_filter_enabled", edit("AUTHZ", "filter_enabled: {default_value: {numerator: 50}}"), "filter_enabled"},
		{"authz_initial_metadata", strings.Replace(minimalYAML, "grpc_service: {envoy_grpc: {cluster_name: extauthz}, timeout: 1s}", "grpc_service: {envoy_grpc: {cluster_name: extauthz}, timeout: 1s, initial_metadata: [{key: a, value: b}]}", 1), "grpc_service.initial_metadata"},
		{"authz_http_service", strings.Replace(minimalYAML, "grpc_service: {envoy_grpc: {cluster_name: extauthz}, timeout: 1s}", "http_service: {server_uri: {uri: 'http://x', cluster: extauthz, timeout: 1s}}", 1), "http_service"},
		{"per_filter_other_filter", edit("ROUTE", `typed_per_filter_config:
  other.filter:
    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
    disabled: true`), "not the ext_authz filter"},
		{"per_route_disable_buffering", edit("ROUTE", `typed_per_filter_config:
  envoy.filters.http.ext_authz:
    "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
    check_settings: {disable_request_body_buffering: true}`), "disable_request_body_buffering"},
		{"listener_filters", strings.Replace(minimalYAML, "    filter_chains:", "    listener_filters: [{name: x, typed_config: {\"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]\n    filter_chains:", 1), "listener_filters"},
		{"bootstrap_runtime", minimalYAML + "layered_runtime: {layers: [{name: a, static_layer: {}}]}\n", "bootstrap.layered_runtime"},
		{"second_http_filter", strings.Replace(minimalYAML, "          - name: envoy.filters.http.router", "          - name: envoy.filters.http.health_check\n            typed_config:\n              \"@type\": type.googleapis.com/envoy.extensions.filters.http.health_check.v3.HealthCheck\n              pass_through_mode: false\n          - name: envoy.filters.http.router", 1), "not modelled"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := TranslateYAML([]byte(tc.yaml))
			if err == nil {
				t.Fatalf("translated without error:\n%s", tc.yaml)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}
