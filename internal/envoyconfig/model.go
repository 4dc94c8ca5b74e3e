package envoyconfig

import (
	"maps"
	"slices"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// The helpers below give the semantic and hardening checks typed access to
// the parts of a Bootstrap they care about, with field paths for messages.
// Any payloads that do not unpack are skipped here: the walk reports them.

// hcmRef is an HTTP connection manager found in a listener filter chain.
type hcmRef struct {
	path fieldPath // path of the network filter's typed_config
	hcm  *hcmv3.HttpConnectionManager
}

func httpConnectionManagers(b *bootstrapv3.Bootstrap) []hcmRef {
	var out []hcmRef
	for li, l := range b.GetStaticResources().GetListeners() {
		lp := fieldPath{"static_resources", "listeners"}.index(li)
		for ci, fc := range l.GetFilterChains() {
			out = appendHCMs(out, lp.field("filter_chains").index(ci), fc)
		}
		if fc := l.GetDefaultFilterChain(); fc != nil {
			out = appendHCMs(out, lp.field("default_filter_chain"), fc)
		}
	}
	return out
}

func appendHCMs(out []hcmRef, p fieldPath, fc *listenerv3.FilterChain) []hcmRef {
	for fi, f := range fc.GetFilters() {
		h := &hcmv3.HttpConnectionManager{}
		if unpack(f.GetTypedConfig(), h) {
			out = append(out, hcmRef{path: p.field("filters").index(fi).field("typed_config"), hcm: h})
		}
	}
	return out
}

// unpack reports whether a holds an m and, if so, unmarshals it into m.
func unpack(a *anypb.Any, m proto.Message) bool {
	return a != nil && a.MessageIs(m) && a.UnmarshalTo(m) == nil
}

// authzFilter is an ext_authz entry of an HCM's http_filters.
type authzFilter struct {
	path   fieldPath // path of the HttpFilter
	filter *hcmv3.HttpFilter
	cfg    *extauthzv3.ExtAuthz
}

func extAuthzFilters(r hcmRef) []authzFilter {
	var out []authzFilter
	for i, f := range r.hcm.GetHttpFilters() {
		cfg := &extauthzv3.ExtAuthz{}
		if unpack(f.GetTypedConfig(), cfg) {
			out = append(out, authzFilter{path: r.path.field("http_filters").index(i), filter: f, cfg: cfg})
		}
	}
	return out
}

// authzNames are the names of an HCM's ext_authz filters: the keys under
// which typed_per_filter_config overrides them.
func authzNames(authz []authzFilter) map[string]bool {
	m := map[string]bool{}
	for _, a := range authz {
		m[a.filter.GetName()] = true
	}
	return m
}

// authzOverride reads a typed_per_filter_config value as Envoy applies it
// to ext_authz: an ExtAuthzPerRoute, or the generic FilterConfig, which
// disables any filter (disabled: true) or wraps its own override. generic
// reports a FilterConfig, which means ext_authz only under an ext_authz
// filter's name; ok is false for anything else.
func authzOverride(a *anypb.Any) (per *extauthzv3.ExtAuthzPerRoute, generic, ok bool) {
	per = &extauthzv3.ExtAuthzPerRoute{}
	if unpack(a, per) {
		return per, false, true
	}
	fc := &routev3.FilterConfig{}
	if !unpack(a, fc) {
		return nil, false, false
	}
	if fc.GetDisabled() {
		return &extauthzv3.ExtAuthzPerRoute{Override: &extauthzv3.ExtAuthzPerRoute_Disabled{Disabled: true}}, true, true
	}
	per = &extauthzv3.ExtAuthzPerRoute{}
	if unpack(fc.GetConfig(), per) {
		return per, true, true
	}
	return nil, true, false
}

// overrideOf is the ext_authz override a typed_per_filter_config entry
// holds for an HCM whose ext_authz filters are named names (nil: none).
func overrideOf(name string, a *anypb.Any, names map[string]bool) *extauthzv3.ExtAuthzPerRoute {
	per, generic, ok := authzOverride(a)
	if !ok || generic && !names[name] {
		return nil
	}
	return per
}

func isRouter(f *hcmv3.HttpFilter) bool {
	return f.GetTypedConfig().MessageIs(&routerv3.Router{})
}

// perFilterConfig is one typed_per_filter_config entry, at any level of an
// inline route configuration.
type perFilterConfig struct {
	path  fieldPath // path of the map entry
	level string    // "route_config", "virtual_host", "route", "weighted_cluster"
	name  string    // the map key: the HTTP filter name it applies to
	cfg   *anypb.Any
	route *routev3.Route // for level "route" and "weighted_cluster"
}

func perFilterConfigs(rcPath fieldPath, rc *routev3.RouteConfiguration) []perFilterConfig {
	var out []perFilterConfig
	add := func(p fieldPath, level string, m map[string]*anypb.Any, rt *routev3.Route) {
		for _, k := range sortedKeys(m) {
			out = append(out, perFilterConfig{path: p.field("typed_per_filter_config").key(k), level: level, name: k, cfg: m[k], route: rt})
		}
	}
	add(rcPath, "route_config", rc.GetTypedPerFilterConfig(), nil)
	for vi, vh := range rc.GetVirtualHosts() {
		vp := rcPath.field("virtual_hosts").index(vi)
		add(vp, "virtual_host", vh.GetTypedPerFilterConfig(), nil)
		for ri, rt := range vh.GetRoutes() {
			rp := vp.field("routes").index(ri)
			add(rp, "route", rt.GetTypedPerFilterConfig(), rt)
			for wi, wc := range rt.GetRoute().GetWeightedClusters().GetClusters() {
				add(rp.field("route").field("weighted_clusters").field("clusters").index(wi), "weighted_cluster", wc.GetTypedPerFilterConfig(), rt)
			}
		}
	}
	return out
}

// staticClusters indexes static_resources.clusters by name.
func staticClusters(b *bootstrapv3.Bootstrap) map[string]*clusterv3.Cluster {
	m := map[string]*clusterv3.Cluster{}
	for _, c := range b.GetStaticResources().GetClusters() {
		m[c.GetName()] = c
	}
	return m
}

// speaksHTTP2 reports whether Envoy always uses HTTP/2 towards c, which
// gRPC requires. auto_config (ALPN) and use_downstream_protocol_config are
// not enough: a plaintext or HTTP/1.1 downstream would select HTTP/1.1.
func speaksHTTP2(c *clusterv3.Cluster) bool {
	for _, a := range c.GetTypedExtensionProtocolOptions() {
		o := &upstreamhttpv3.HttpProtocolOptions{}
		if unpack(a, o) && o.GetExplicitHttpConfig().GetHttp2ProtocolOptions() != nil {
			return true
		}
	}
	//lint:ignore SA1019 the deprecated field is still honoured by Envoy
	return c.GetHttp2ProtocolOptions() != nil
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
