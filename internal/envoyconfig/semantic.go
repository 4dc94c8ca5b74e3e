package envoyconfig

import (
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
)

// semantic runs the cross-field checks PGV cannot express.
type semanticCtx struct {
	*validator
	clusters map[string]*clusterv3.Cluster
	// dynamicClusters: CDS may define clusters this file does not, so an
	// unknown cluster name is only a warning.
	dynamicClusters bool
}

func (v *validator) semantic(b *bootstrapv3.Bootstrap) {
	s := &semanticCtx{
		validator:       v,
		clusters:        staticClusters(b),
		dynamicClusters: b.GetDynamicResources().GetCdsConfig() != nil || b.GetDynamicResources().GetCdsResourcesLocator() != "",
	}
	seen := map[string]bool{}
	for i, c := range b.GetStaticResources().GetClusters() {
		if seen[c.GetName()] {
			v.errorf(fieldPath{"static_resources", "clusters"}.index(i).field("name"), "duplicate cluster name %q", c.GetName())
		}
		seen[c.GetName()] = true
	}
	for _, r := range httpConnectionManagers(b) {
		s.hcm(r)
	}
}

func (s *semanticCtx) hcm(r hcmRef) {
	filters := r.hcm.GetHttpFilters()
	names := map[string]bool{}
	authzNames := map[string]bool{}
	for i, f := range filters {
		p := r.path.field("http_filters").index(i)
		names[f.GetName()] = true
		if f.GetConfigDiscovery() != nil {
			s.warnf(p, "filter %q is configured by ECDS; not checked", f.GetName())
		}
		if isRouter(f) && i != len(filters)-1 {
			s.errorf(p, "router must be the last HTTP filter (found at position %d of %d)", i+1, len(filters))
		}
	}
	if !hasRouter(r) {
		s.errorf(r.path.field("http_filters"), "no envoy.filters.http.router filter: requests would never be forwarded")
	}
	authz := extAuthzFilters(r)
	if len(authz) == 0 {
		s.warnf(r.path, "HTTP connection manager has no ext_authz filter: its requests bypass authorization")
	}
	for _, a := range authz {
		authzNames[a.filter.GetName()] = true
		s.extAuthz(a.path.field("typed_config"), a.cfg)
	}

	switch {
	case r.hcm.GetRds() != nil:
		s.warnf(r.path.field("rds"), "routes come from RDS; route checks skipped")
	case r.hcm.GetScopedRoutes() != nil:
		s.warnf(r.path.field("scoped_routes"), "scoped routes; route checks skipped")
	case r.hcm.GetRouteConfig() != nil:
		rcPath := r.path.field("route_config")
		s.routes(rcPath, r.hcm.GetRouteConfig())
		for _, pf := range perFilterConfigs(rcPath, r.hcm.GetRouteConfig()) {
			if !names[pf.name] {
				s.warnf(pf.path, "no HTTP filter named %q in this connection manager; the override is ignored", pf.name)
			}
			per := &extauthzv3.ExtAuthzPerRoute{}
			if authzNames[pf.name] && unpack(pf.cfg, per) {
				s.extAuthzPerRoute(pf.path, per)
			}
		}
	}
}

func hasRouter(r hcmRef) bool {
	for _, f := range r.hcm.GetHttpFilters() {
		if isRouter(f) {
			return true
		}
	}
	return false
}

func (s *semanticCtx) extAuthz(p fieldPath, cfg *extauthzv3.ExtAuthz) {
	switch cfg.GetTransportApiVersion() {
	//lint:ignore SA1019 detecting the deprecated value is the point
	case corev3.ApiVersion_V2:
		s.errorf(p.field("transport_api_version"), "transport_api_version V2 is rejected by Envoy; use V3")
	case corev3.ApiVersion_AUTO:
		s.warnf(p.field("transport_api_version"), "transport_api_version unset (AUTO): fine on Envoy >= 1.31, set V3 for older releases")
	}
	switch {
	case cfg.GetGrpcService() != nil:
		s.grpcService(p.field("grpc_service"), cfg.GetGrpcService())
	case cfg.GetHttpService() != nil:
		s.cluster(p.field("http_service").field("server_uri").field("cluster"), cfg.GetHttpService().GetServerUri().GetCluster())
	default:
		s.errorf(p, "ext_authz needs grpc_service or http_service")
	}
}

func (s *semanticCtx) extAuthzPerRoute(p fieldPath, per *extauthzv3.ExtAuthzPerRoute) {
	cs := per.GetCheckSettings()
	if cs == nil {
		return
	}
	cp := p.field("check_settings")
	if cs.GetWithRequestBody() != nil && cs.GetDisableRequestBodyBuffering() {
		s.errorf(cp, "with_request_body and disable_request_body_buffering are mutually exclusive (Envoy rejects the config)")
	}
	if gs := cs.GetGrpcService(); gs != nil {
		s.grpcService(cp.field("grpc_service"), gs)
	}
	if hs := cs.GetHttpService(); hs != nil {
		s.cluster(cp.field("http_service").field("server_uri").field("cluster"), hs.GetServerUri().GetCluster())
	}
}

func (s *semanticCtx) grpcService(p fieldPath, gs *corev3.GrpcService) {
	if eg := gs.GetEnvoyGrpc(); eg != nil {
		cp := p.field("envoy_grpc").field("cluster_name")
		if c := s.cluster(cp, eg.GetClusterName()); c != nil && !speaksHTTP2(c) {
			s.errorf(cp, "cluster %q is not configured for HTTP/2, which gRPC requires "+
				"(typed_extension_protocol_options[envoy.extensions.upstreams.http.v3.HttpProtocolOptions].explicit_http_config.http2_protocol_options)",
				eg.GetClusterName())
		}
	} else if gs.GetGoogleGrpc() != nil {
		s.warnf(p.field("google_grpc"), "google_grpc target not checked")
	}
	if gs.GetTimeout() == nil {
		s.warnf(p.field("timeout"), "timeout unset: Envoy uses 200ms; set it explicitly")
	}
}

// cluster checks that name is a defined cluster and returns it (nil when
// unknown or dynamic).
func (s *semanticCtx) cluster(p fieldPath, name string) *clusterv3.Cluster {
	if c, ok := s.clusters[name]; ok {
		return c
	}
	if s.dynamicClusters {
		s.warnf(p, "cluster %q is not a static cluster; assuming CDS provides it", name)
	} else {
		s.errorf(p, "cluster %q is not defined in static_resources.clusters", name)
	}
	return nil
}

func (s *semanticCtx) routes(rcPath fieldPath, rc *routev3.RouteConfiguration) {
	for vi, vh := range rc.GetVirtualHosts() {
		vp := rcPath.field("virtual_hosts").index(vi)
		for ri, rt := range vh.GetRoutes() {
			ap := vp.field("routes").index(ri).field("route")
			act := rt.GetRoute()
			if act == nil {
				continue
			}
			if c := act.GetCluster(); c != "" {
				s.cluster(ap.field("cluster"), c)
			}
			for wi, wc := range act.GetWeightedClusters().GetClusters() {
				if wc.GetName() == "" {
					continue // cluster_header
				}
				s.cluster(ap.field("weighted_clusters").field("clusters").index(wi).field("name"), wc.GetName())
			}
			for mi, m := range act.GetRequestMirrorPolicies() {
				s.cluster(ap.field("request_mirror_policies").index(mi).field("cluster"), m.GetCluster())
			}
		}
	}
}
