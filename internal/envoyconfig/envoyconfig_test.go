package envoyconfig_test

import (
	"bytes"
	"errors"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"sigs.k8s.io/yaml"

	"github.com/extauthz/extauthz/internal/envoyconfig"
)

var update = flag.Bool("update", false, "regenerate deploy/k8s/configmap-envoy.yaml from envoy/envoy-sidecar.yaml")

const repoRoot = "../.."

// TestShippedConfigs: every envoy/*.yaml passes the strict validation
// (schema, PGV inside every Any, semantic checks, hardening) with no
// warnings at all, so a new deprecation or an implicit default shows up.
func TestShippedConfigs(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(repoRoot, "envoy", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 2 {
		t.Fatalf("want envoy/envoy.yaml and envoy/envoy-sidecar.yaml, found %v", files)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			warnings, err := envoyconfig.ValidateFileStrict(f)
			if err != nil {
				t.Fatalf("ValidateFileStrict:\n%v", err)
			}
			if len(warnings) > 0 {
				t.Errorf("warnings:\n%s", strings.Join(warnings, "\n"))
			}
		})
	}
}

// TestGoodFixtures: the base of the negative fixtures is itself valid, so
// each bad fixture fails only because of its one change.
func TestGoodFixtures(t *testing.T) {
	files, _ := filepath.Glob("testdata/good/*.yaml")
	if len(files) == 0 {
		t.Fatal("no testdata/good fixtures")
	}
	for _, f := range files {
		warnings, err := envoyconfig.ValidateFileStrict(f)
		if err != nil || len(warnings) > 0 {
			t.Errorf("%s: err=%v warnings=%q", f, err, warnings)
		}
	}
}

// TestBadFixtures: each testdata/bad fixture (the good minimal config with
// one change) fails ValidateFileStrict with the expected message, at the
// expected field. strictOnly marks weakened security flags: the schema-level
// Validate accepts them and only the hardening check rejects them.
func TestBadFixtures(t *testing.T) {
	const hcm = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config"
	const authz = hcm + ".http_filters[0].typed_config"
	const vhost = hcm + ".route_config.virtual_hosts[0]"
	const pfc = ".typed_per_filter_config[envoy.filters.http.ext_authz]"
	cases := []struct {
		file       string
		path       string // "" = do not check
		want       string
		strictOnly bool
	}{
		// Schema: strict protojson.
		{"typo_failure_mode_alow", authz + ".failure_mode_alow", `unknown field "failure_mode_alow"`, false},
		{"transport_api_version_v4", authz + ".transport_api_version", `invalid value for enum field transportApiVersion: "V4"`, false},
		{"unresolvable_type", hcm + ".http_filters[1].typed_config.@type", `unable to resolve "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua"`, false},
		// PGV rules inside Any payloads.
		{"status_on_error_999", authz + ".status_on_error.code", "invalid HttpStatus.Code: value must be one of the defined enum values", false},
		{"max_request_bytes_0", vhost + ".routes[1]" + pfc + ".check_settings.with_request_body.max_request_bytes", "invalid BufferSettings.MaxRequestBytes: value must be greater than 0", false},
		{"per_route_override_missing", vhost + ".routes[0]" + pfc + ".override", "invalid ExtAuthzPerRoute.Override: value is required", false},
		// Semantic checks.
		{"transport_api_version_v2", authz + ".transport_api_version", "transport_api_version V2 is rejected by Envoy", false},
		{"unknown_authz_cluster", authz + ".grpc_service.envoy_grpc.cluster_name", `cluster "ext-authz" is not defined`, false},
		{"unknown_route_cluster", vhost + ".routes[2].route.cluster", `cluster "app" is not defined`, false},
		{"authz_cluster_not_http2", authz + ".grpc_service.envoy_grpc.cluster_name", `cluster "extauthz" is not configured for HTTP/2`, false},
		{"router_not_last", hcm + ".http_filters[0]", "router must be the last HTTP filter", false},
		{"no_router", hcm + ".http_filters", "no envoy.filters.http.router filter", false},
		{"body_buffering_conflict", vhost + ".routes[1]" + pfc + ".check_settings", "with_request_body and disable_request_body_buffering are mutually exclusive", false},
		// Hardening.
		{"failure_mode_allow_true", authz + ".failure_mode_allow", "failure_mode_allow must be false", true},
		{"status_on_error_403", authz + ".status_on_error.code", "status_on_error must be a 5xx status, got 403", true},
		{"status_on_error_missing", authz + ".status_on_error", "status_on_error must be set", true},
		{"validate_mutations_false", authz + ".validate_mutations", "validate_mutations must be true", true},
		{"no_timeout", authz + ".grpc_service.timeout", "grpc_service.timeout must be set explicitly", true},
		{"shadow_mode", authz + ".shadow_mode", "shadow_mode must be false", true},
		{"filter_disabled_in_chain", hcm + ".http_filters[0].disabled", "ext_authz filter must not be disabled", true},
		{"filter_enabled_without_deny", authz + ".deny_at_disable", "set deny_at_disable", true},
		{"normalize_path_missing", hcm + ".normalize_path", "normalize_path must be true", true},
		{"merge_slashes_false", hcm + ".merge_slashes", "merge_slashes must be true", true},
		{"escaped_slashes_keep_unchanged", hcm + ".path_with_escaped_slashes_action", "path_with_escaped_slashes_action must be REJECT_REQUEST or UNESCAPE_AND_REDIRECT, got KEEP_UNCHANGED", true},
		{"use_remote_address_false", hcm + ".use_remote_address", "use_remote_address must be true", true},
		{"headers_with_underscores_allow", hcm + ".common_http_protocol_options.headers_with_underscores_action", "headers_with_underscores_action must be REJECT_REQUEST, got ALLOW", true},
		{"protected_route_disabled", vhost + ".routes[1]" + pfc + ".disabled", "ext_authz disabled on a protected route", true},
		{"healthz_prefix_disabled", vhost + ".routes[0]" + pfc + ".disabled", "ext_authz disabled on a protected route", true},
		{"vhost_disabled", vhost + pfc + ".disabled", "ext_authz disabled at virtual_host level", true},
		{"per_route_wrong_filter_name", "", `ExtAuthzPerRoute under "envoy.filters.http.extauthz", which is not an ext_authz filter name`, true},
		{"no_ext_authz", "static_resources.listeners", "no HTTP connection manager has an ext_authz filter", true},
	}

	files, _ := filepath.Glob("testdata/bad/*.yaml")
	seen := map[string]bool{}
	for _, tc := range cases {
		seen[tc.file] = true
		t.Run(tc.file, func(t *testing.T) {
			file := filepath.Join("testdata", "bad", tc.file+".yaml")
			_, err := envoyconfig.ValidateFileStrict(file)
			if err == nil {
				t.Fatal("ValidateFileStrict passed, want an error")
			}
			fe := findFieldError(err, tc.want)
			if fe == nil {
				t.Fatalf("error does not contain %q:\n%v", tc.want, err)
			}
			if tc.path != "" && fe.Path != tc.path {
				t.Errorf("path = %s\nwant   %s", fe.Path, tc.path)
			}
			if fe.File != file || fe.Line == 0 {
				t.Errorf("error not positioned in %s: %v", file, fe)
			}
			_, err = envoyconfig.ValidateFile(file)
			if tc.strictOnly && err != nil {
				t.Errorf("non-strict Validate failed on a hardening-only fixture:\n%v", err)
			}
			if !tc.strictOnly && err == nil {
				t.Error("non-strict Validate passed, want the schema/semantic error")
			}
		})
	}
	for _, f := range files {
		if name := strings.TrimSuffix(filepath.Base(f), ".yaml"); !seen[name] {
			t.Errorf("%s has no test case", f)
		}
	}
	if len(files) != len(cases) {
		t.Errorf("%d fixtures, %d cases", len(files), len(cases))
	}
}

func findFieldError(err error, substr string) *envoyconfig.FieldError {
	var all []error
	if j, ok := err.(interface{ Unwrap() []error }); ok { //nolint:errorlint // flattening errors.Join
		all = j.Unwrap()
	} else {
		all = []error{err}
	}
	for _, e := range all {
		var fe *envoyconfig.FieldError
		if errors.As(e, &fe) && strings.Contains(fe.Msg, substr) {
			return fe
		}
	}
	return nil
}

// TestShippedMutations: weakening any hardening flag of envoy/envoy.yaml, or
// misspelling one, makes the strict validation fail.
func TestShippedMutations(t *testing.T) {
	src, err := os.ReadFile(filepath.Join(repoRoot, "envoy", "envoy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct{ name, old, new, want string }{
		{"typo failure_mode_allow", "failure_mode_allow: false", "failure_mode_alow: false", `unknown field "failure_mode_alow"`},
		{"typo merge_slashes", "merge_slashes: true", "merge_slash: true", `unknown field "merge_slash"`},
		{"fail open", "failure_mode_allow: false", "failure_mode_allow: true", "failure_mode_allow must be false"},
		{"status 403", "code: ServiceUnavailable", "code: Forbidden", "status_on_error must be a 5xx"},
		{"no validate_mutations", "validate_mutations: true", "validate_mutations: false", "validate_mutations must be true"},
		{"no timeout", "                timeout: 0.25s\n", "", "grpc_service.timeout must be set"},
		{"transport V2", "transport_api_version: V3", "transport_api_version: V2", "V2 is rejected"},
		{"normalize_path off", "normalize_path: true", "normalize_path: false", "normalize_path must be true"},
		{"merge_slashes off", "merge_slashes: true", "merge_slashes: false", "merge_slashes must be true"},
		{"escaped slashes kept", "path_with_escaped_slashes_action: REJECT_REQUEST", "path_with_escaped_slashes_action: UNESCAPE_AND_FORWARD", "path_with_escaped_slashes_action must be"},
		{"remote address off", "use_remote_address: true", "use_remote_address: false", "use_remote_address must be true"},
		{"underscores allowed", "headers_with_underscores_action: REJECT_REQUEST", "headers_with_underscores_action: DROP_HEADER", "headers_with_underscores_action must be REJECT_REQUEST"},
		{"authz cluster typo", "envoy_grpc:\n                  cluster_name: extauthz", "envoy_grpc:\n                  cluster_name: ext_authz", `cluster "ext_authz" is not defined`},
		{"authz cluster HTTP/1", "http2_protocol_options: {}", "http_protocol_options: {}", "not configured for HTTP/2"},
		{"orders route unprotected", "                    check_settings:\n                      context_extensions:\n                        route: orders-read", "                    disabled: true\n                    check_settings:\n                      context_extensions:\n                        route: orders-read", ""},
		{"healthz prefix", "- match: {path: /healthz, headers:", "- match: {prefix: /healthz, headers:", "ext_authz disabled on a protected route"},
		// The generic FilterConfig disables any filter, ext_authz too.
		{"orders route FilterConfig disabled", perRouteOrders, "\"@type\": type.googleapis.com/envoy.config.route.v3.FilterConfig\n                    disabled: true", "ext_authz disabled on a protected route"},
		{"orders route FilterConfig wrapping disabled", perRouteOrders, "\"@type\": type.googleapis.com/envoy.config.route.v3.FilterConfig\n                    config:\n                      \"@type\": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute\n                      disabled: true", "ext_authz disabled on a protected route"},
		{"virtual host FilterConfig disabled", "\"@type\": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute\n                  check_settings:\n                    context_extensions: {profile: aidial}", "\"@type\": type.googleapis.com/envoy.config.route.v3.FilterConfig\n                  disabled: true", "ext_authz disabled at virtual_host level"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if !bytes.Contains(src, []byte(tc.old)) {
				t.Fatalf("envoy.yaml no longer contains %q; update the test", tc.old)
			}
			mutated := bytes.Replace(src, []byte(tc.old), []byte(tc.new), 1)
			_, err := envoyconfig.ValidateNamed("envoy.yaml", mutated, true)
			if err == nil {
				t.Fatal("mutated config passed strict validation")
			}
			if tc.want != "" && !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error does not contain %q:\n%v", tc.want, err)
			}
		})
	}
}

// perRouteOrders is the aidial orders route's ext_authz override.
const perRouteOrders = "\"@type\": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute\n                    check_settings:\n                      context_extensions:\n                        route: orders-read\n                        scopes: \"orders:read\""

var knownProfiles = []string{"default", "aidial", "dialektai", "aidelly", "lowercase", "aisafe", "problem", "google", "jsonapi"}

// TestShippedEnvoyContract pins what the sidecar and scripts/e2e-docker.sh
// rely on: listener, admin, one virtual host per seed API with its profile,
// the unauthenticated /healthz, the orders route's context_extensions, the
// body-forwarding route, the ext_authz settings and the cluster addresses.
func TestShippedEnvoyContract(t *testing.T) {
	for _, tc := range []struct {
		file                  string
		clusterType           clusterv3.Cluster_DiscoveryType
		authzHost, upstreamIP string
	}{
		{"envoy.yaml", clusterv3.Cluster_STRICT_DNS, "extauthz", "upstream"},
		{"envoy-sidecar.yaml", clusterv3.Cluster_STATIC, "127.0.0.1", "127.0.0.1"},
	} {
		t.Run(tc.file, func(t *testing.T) {
			b := parseFile(t, filepath.Join(repoRoot, "envoy", tc.file))
			if a := b.GetAdmin().GetAddress().GetSocketAddress(); a.GetAddress() != "127.0.0.1" || a.GetPortValue() != 9901 {
				t.Errorf("admin on %s:%d, want 127.0.0.1:9901", a.GetAddress(), a.GetPortValue())
			}
			ls := b.GetStaticResources().GetListeners()
			if len(ls) != 1 {
				t.Fatalf("%d listeners, want 1", len(ls))
			}
			if a := ls[0].GetAddress().GetSocketAddress(); a.GetAddress() != "0.0.0.0" || a.GetPortValue() != 8000 {
				t.Errorf("listener on %s:%d, want 0.0.0.0:8000", a.GetAddress(), a.GetPortValue())
			}
			hcm := &hcmv3.HttpConnectionManager{}
			if err := ls[0].GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(hcm); err != nil {
				t.Fatal(err)
			}
			if hcm.GetXffNumTrustedHops() != 0 {
				t.Errorf("xff_num_trusted_hops = %d, want 0 (the sidecar's --xff-trusted-hops default)", hcm.GetXffNumTrustedHops())
			}
			if g := hcm.GetGenerateRequestId(); g != nil && !g.GetValue() {
				t.Error("generate_request_id disabled")
			}
			checkFilters(t, hcm)
			checkVirtualHosts(t, hcm.GetRouteConfig())
			clusters := map[string]*clusterv3.Cluster{}
			for _, c := range b.GetStaticResources().GetClusters() {
				clusters[c.GetName()] = c
			}
			checkCluster(t, clusters["extauthz"], tc.clusterType, tc.authzHost, 9001)
			checkCluster(t, clusters["upstream"], tc.clusterType, tc.upstreamIP, 8080)
		})
	}
}

func parseFile(t *testing.T, path string) *bootstrapv3.Bootstrap {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := envoyconfig.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func checkFilters(t *testing.T, hcm *hcmv3.HttpConnectionManager) {
	t.Helper()
	fs := hcm.GetHttpFilters()
	if len(fs) != 2 || fs[0].GetName() != "envoy.filters.http.ext_authz" || fs[1].GetName() != "envoy.filters.http.router" {
		t.Fatalf("http_filters = %v, want [ext_authz router]", fs)
	}
	cfg := &extauthzv3.ExtAuthz{}
	if err := fs[0].GetTypedConfig().UnmarshalTo(cfg); err != nil {
		t.Fatal(err)
	}
	gs := cfg.GetGrpcService()
	if gs.GetEnvoyGrpc().GetClusterName() != "extauthz" {
		t.Errorf("ext_authz cluster %q, want extauthz", gs.GetEnvoyGrpc().GetClusterName())
	}
	if d := gs.GetTimeout().AsDuration(); d != 250*time.Millisecond {
		t.Errorf("ext_authz timeout %v, want 250ms", d)
	}
	if cfg.GetTransportApiVersion() != corev3.ApiVersion_V3 {
		t.Errorf("transport_api_version %v, want V3", cfg.GetTransportApiVersion())
	}
	if cfg.GetStatusOnError().GetCode() != typev3.StatusCode_ServiceUnavailable {
		t.Errorf("status_on_error %v, want ServiceUnavailable", cfg.GetStatusOnError().GetCode())
	}
	if cfg.GetIncludePeerCertificate() || cfg.GetWithRequestBody() != nil {
		t.Error("include_peer_certificate or filter-wide with_request_body set")
	}
}

func checkVirtualHosts(t *testing.T, rc *routev3.RouteConfiguration) {
	t.Helper()
	want := map[string]string{
		"aidial.localhost": "aidial", "dialektai.localhost": "dialektai", "aidelly.localhost": "aidelly",
		"lowercase.localhost": "lowercase", "aisafe.localhost": "aisafe", "*": "default",
		"problem.localhost": "problem", "google.localhost": "google", "jsonapi.localhost": "jsonapi",
	}
	got := map[string]string{}
	bodyRoutes := 0
	for _, vh := range rc.GetVirtualHosts() {
		profile := perRoute(t, vh.GetTypedPerFilterConfig()).GetCheckSettings().GetContextExtensions()["profile"]
		if !slices.Contains(knownProfiles, profile) {
			t.Errorf("vhost %s: profile %q is not one of %v", vh.GetName(), profile, knownProfiles)
		}
		for _, d := range vh.GetDomains() {
			got[d] = profile
		}
		routes := vh.GetRoutes()
		if len(routes) < 3 {
			t.Fatalf("vhost %s: %d routes", vh.GetName(), len(routes))
		}
		if routes[0].GetMatch().GetPath() != "/healthz" || !perRoute(t, routes[0].GetTypedPerFilterConfig()).GetDisabled() {
			t.Errorf("vhost %s: first route is not GET /healthz with ext_authz disabled", vh.GetName())
		}
		orders := routes[1]
		ext := perRoute(t, orders.GetTypedPerFilterConfig()).GetCheckSettings().GetContextExtensions()
		if orders.GetMatch().GetPath() != "/v1/orders" || ext["route"] != "orders-read" || ext["scopes"] != "orders:read" || ext["profile"] != "" {
			t.Errorf("vhost %s: orders route %v with context_extensions %v", vh.GetName(), orders.GetMatch(), ext)
		}
		if last := routes[len(routes)-1]; last.GetMatch().GetPrefix() != "/" || last.GetRoute().GetCluster() != "upstream" {
			t.Errorf("vhost %s: last route is not the / catch-all to upstream", vh.GetName())
		}
		for _, r := range routes {
			if wb := perRoute(t, r.GetTypedPerFilterConfig()).GetCheckSettings().GetWithRequestBody(); wb != nil {
				bodyRoutes++
				if wb.GetMaxRequestBytes() != 8192 || wb.GetAllowPartialMessage() {
					t.Errorf("with_request_body = %v, want 8192 bytes, no partial message", wb)
				}
			}
		}
	}
	if !mapsEqual(got, want) {
		t.Errorf("domain -> profile = %v\nwant %v", got, want)
	}
	if bodyRoutes != 1 {
		t.Errorf("%d routes with with_request_body, want 1", bodyRoutes)
	}
}

func perRoute(t *testing.T, m map[string]*anypb.Any) *extauthzv3.ExtAuthzPerRoute {
	t.Helper()
	per := &extauthzv3.ExtAuthzPerRoute{}
	if a := m["envoy.filters.http.ext_authz"]; a != nil {
		if err := a.UnmarshalTo(per); err != nil {
			t.Fatal(err)
		}
	}
	return per
}

func checkCluster(t *testing.T, c *clusterv3.Cluster, typ clusterv3.Cluster_DiscoveryType, host string, port uint32) {
	t.Helper()
	if c == nil {
		t.Fatalf("cluster for %s:%d missing", host, port)
	}
	a := c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
	if c.GetType() != typ || a.GetAddress() != host || a.GetPortValue() != port {
		t.Errorf("cluster %s: %v %s:%d, want %v %s:%d", c.GetName(), c.GetType(), a.GetAddress(), a.GetPortValue(), typ, host, port)
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestDeployEnvoyConfigs: every Envoy config under deploy/ (a standalone
// file, or embedded in a ConfigMap's data) passes the strict validation.
func TestDeployEnvoyConfigs(t *testing.T) {
	found := 0
	err := filepath.WalkDir(filepath.Join(repoRoot, "deploy"), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !(strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".yml")) {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for i, doc := range splitDocs(data) {
			for name, cfg := range envoyConfigsIn(t, path, i, doc) {
				found++
				warnings, err := envoyconfig.ValidateNamed(name, cfg, true)
				if err != nil {
					t.Errorf("%s:\n%v", name, err)
				}
				if len(warnings) > 0 {
					t.Errorf("%s: warnings:\n%s", name, strings.Join(warnings, "\n"))
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if found == 0 {
		t.Fatal("no Envoy config found under deploy/ (expected the ConfigMap in deploy/k8s/configmap-envoy.yaml)")
	}
}

// envoyConfigsIn returns the Envoy bootstraps in one YAML document: the
// document itself, or ConfigMap data entries that look like one.
func envoyConfigsIn(t *testing.T, path string, i int, doc []byte) map[string][]byte {
	var m map[string]any
	if err := yaml.Unmarshal(doc, &m); err != nil {
		t.Errorf("%s document %d: %v", path, i, err)
		return nil
	}
	out := map[string][]byte{}
	if _, ok := m["static_resources"]; ok {
		out[path] = doc
	}
	if m["kind"] == "ConfigMap" {
		data, _ := m["data"].(map[string]any)
		for k, v := range data {
			s, _ := v.(string)
			if strings.Contains(s, "static_resources:") {
				out[path+"#data["+k+"]"] = []byte(s)
			}
		}
	}
	return out
}

// splitDocs splits a multi-document YAML stream on "---" lines.
func splitDocs(data []byte) [][]byte {
	var docs [][]byte
	for _, d := range bytes.Split(append([]byte("\n"), data...), []byte("\n---")) {
		if len(bytes.TrimSpace(d)) > 0 {
			docs = append(docs, d)
		}
	}
	return docs
}

// TestConfigMapEnvoyInSync: deploy/k8s/configmap-envoy.yaml embeds
// envoy/envoy-sidecar.yaml verbatim. -update rewrites the ConfigMap.
func TestConfigMapEnvoyInSync(t *testing.T) {
	src, err := os.ReadFile(filepath.Join(repoRoot, "envoy", "envoy-sidecar.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cmPath := filepath.Join(repoRoot, "deploy", "k8s", "configmap-envoy.yaml")
	want := renderEnvoyConfigMap(src)
	if *update {
		if err := os.WriteFile(cmPath, want, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(cmPath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is out of date with envoy/envoy-sidecar.yaml; run:\n  go test ./internal/envoyconfig -run TestConfigMapEnvoyInSync -update", cmPath)
	}
	var cm struct {
		Kind     string
		Metadata struct{ Name string }
		Data     map[string]string
	}
	if err := yaml.Unmarshal(got, &cm); err != nil {
		t.Fatal(err)
	}
	if cm.Kind != "ConfigMap" || cm.Metadata.Name != "extauthz-envoy" || cm.Data["envoy.yaml"] != string(src) {
		t.Errorf("ConfigMap %s/%s does not carry envoy-sidecar.yaml as data[envoy.yaml]", cm.Kind, cm.Metadata.Name)
	}
}

const configMapHeader = `# Envoy configuration for the orders-api pod, mounted at /etc/envoy.
# GENERATED from envoy/envoy-sidecar.yaml: edit that file, then run
#   go test ./internal/envoyconfig -run TestConfigMapEnvoyInSync -update
# (the test fails while the two differ).
apiVersion: v1
kind: ConfigMap
metadata:
  name: extauthz-envoy
  labels:
    app.kubernetes.io/name: orders-api
data:
  envoy.yaml: |
`

func renderEnvoyConfigMap(src []byte) []byte {
	var b bytes.Buffer
	b.WriteString(configMapHeader)
	for _, line := range strings.SplitAfter(string(src), "\n") {
		switch {
		case line == "":
		case strings.TrimSpace(line) == "":
			b.WriteString("\n")
		default:
			b.WriteString("    " + line)
		}
	}
	return b.Bytes()
}

// TestParseAndCheckHardening exercises the lower-level API used by
// ValidateStrict.
func TestParseAndCheckHardening(t *testing.T) {
	b := parseFile(t, "testdata/good/minimal.yaml")
	if errs := envoyconfig.CheckHardening(b); len(errs) != 0 {
		t.Errorf("CheckHardening(good) = %v", errs)
	}
	b = parseFile(t, "testdata/bad/failure_mode_allow_true.yaml")
	errs := envoyconfig.CheckHardening(b)
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "failure_mode_allow must be false") {
		t.Errorf("CheckHardening(fail open) = %v", errs)
	}
}

func TestValidateMalformedInput(t *testing.T) {
	for _, tc := range []struct {
		name, src, want string
		line            int
	}{
		{"empty", "", "empty configuration", 0},
		{"not an object", "- a\n- b\n", "not a YAML/JSON object", 0},
		{"yaml syntax", "static_resources:\n  clusters: [\n  - name: x\n", "yaml:", 0},
		{"unknown top-level field", "admin: {}\nstatic_resource: {}\n", `unknown field "static_resource"`, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := envoyconfig.Validate([]byte(tc.src))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			var fe *envoyconfig.FieldError
			if tc.line > 0 && (!errors.As(err, &fe) || fe.Line != tc.line) {
				t.Errorf("error %v not at line %d", err, tc.line)
			}
		})
	}
	if _, err := envoyconfig.ValidateFile("testdata/does-not-exist.yaml"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: err = %v", err)
	}
}
