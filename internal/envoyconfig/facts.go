package envoyconfig

import (
	"maps"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// Facts are the parts of an Envoy bootstrap that must agree with the
// sidecar's own settings and policy; `extauthz validate --envoy` checks them.
type Facts struct {
	// XFFHops: each HTTP connection manager's xff_num_trusted_hops, which
	// must equal the sidecar's --xff-trusted-hops.
	XFFHops []XFFHops
	// Contexts: for each route checked by ext_authz, the context_extensions
	// Envoy sends (route configuration, virtual host and route levels
	// merged, the more specific winning). Routes with none are left out.
	Contexts []RouteContext
	// Unchecked: the routes to an upstream on which ext_authz is disabled,
	// with the request headers Envoy removes there (every level merged).
	Unchecked []UncheckedRoute
}

// UncheckedRoute is a route Envoy serves without a Check call.
type UncheckedRoute struct {
	Path    string          // field path of the route
	Removed map[string]bool // request_headers_to_remove, lower-cased
}

// XFFHops is one HTTP connection manager's setting.
type XFFHops struct {
	Path string // field path of xff_num_trusted_hops
	Hops uint32
}

// RouteContext is the context_extensions one Envoy route sends.
type RouteContext struct {
	Path       string            // field path of the route
	Extensions map[string]string // merged context_extensions
}

// FactsOf reads Facts from an Envoy bootstrap given as YAML (or JSON).
func FactsOf(yamlBytes []byte) (Facts, error) {
	b, err := Parse(yamlBytes)
	if err != nil {
		return Facts{}, err
	}
	var f Facts
	for _, r := range httpConnectionManagers(b) {
		if len(extAuthzFilters(r)) == 0 {
			continue
		}
		f.XFFHops = append(f.XFFHops, XFFHops{Path: r.path.field("xff_num_trusted_hops").String(), Hops: r.hcm.GetXffNumTrustedHops()})
		rc := r.hcm.GetRouteConfig()
		if rc == nil {
			continue
		}
		rcPath := r.path.field("route_config")
		names := authzNames(extAuthzFilters(r))
		base := contextOf(rc.GetTypedPerFilterConfig(), nil, names)
		for vi, vh := range rc.GetVirtualHosts() {
			vp := rcPath.field("virtual_hosts").index(vi)
			vctx := contextOf(vh.GetTypedPerFilterConfig(), base, names)
			for ri, rt := range vh.GetRoutes() {
				rctx, disabled := routeContext(rt, vctx, names)
				if disabled && rt.GetDirectResponse() == nil && rt.GetRedirect() == nil { // one that reaches an upstream
					removed := map[string]bool{}
					for _, l := range [][]string{rc.GetRequestHeadersToRemove(), vh.GetRequestHeadersToRemove(), rt.GetRequestHeadersToRemove()} {
						for _, h := range l {
							removed[strings.ToLower(h)] = true
						}
					}
					f.Unchecked = append(f.Unchecked, UncheckedRoute{Path: vp.field("routes").index(ri).String(), Removed: removed})
				}
				if disabled || len(rctx) == 0 {
					continue
				}
				f.Contexts = append(f.Contexts, RouteContext{Path: vp.field("routes").index(ri).String(), Extensions: rctx})
			}
		}
	}
	return f, nil
}

// routeContext merges a route's ext_authz override over the inherited
// context; disabled reports ext_authz switched off for the route.
func routeContext(rt *routev3.Route, inherited map[string]string, names map[string]bool) (map[string]string, bool) {
	for k, a := range rt.GetTypedPerFilterConfig() {
		if per := overrideOf(k, a, names); per.GetDisabled() {
			return nil, true
		}
	}
	return contextOf(rt.GetTypedPerFilterConfig(), inherited, names), false
}

// contextOf is inherited overlaid with the context_extensions of every
// ext_authz override in m.
func contextOf(m map[string]*anypb.Any, inherited map[string]string, names map[string]bool) map[string]string {
	out := maps.Clone(inherited)
	for _, k := range sortedKeys(m) {
		ce := overrideOf(k, m[k], names).GetCheckSettings().GetContextExtensions()
		if len(ce) == 0 {
			continue
		}
		if out == nil {
			out = map[string]string{}
		}
		maps.Copy(out, ce)
	}
	return out
}
