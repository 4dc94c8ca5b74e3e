package check

import (
	"maps"
	"slices"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/extauthz/extauthz/internal/decision"
	"github.com/extauthz/extauthz/internal/engine"
	"github.com/extauthz/extauthz/internal/policy"
	"github.com/extauthz/extauthz/internal/profile"
	"github.com/extauthz/extauthz/internal/route"
)

var (
	okStatus     = &rpcstatus.Status{Code: int32(codes.OK)}
	deniedStatus = &rpcstatus.Status{Code: int32(codes.PermissionDenied)}
	appendFalse  = wrapperspb.Bool(false)
)

// toCheckResponse is step three: an allow becomes an OkHttpResponse carrying
// identity headers; a deny becomes the profile's status, headers and body.
func (s *Server) toCheckResponse(eng *engine.Engine, r *request, d *decision.Decision, now time.Time) *authv3.CheckResponse {
	if r != nil && r.envoy != nil && (d.Reason == decision.OK || d.Reason == decision.PolicyDenied) {
		return s.envoyResponse(eng, r, d, now)
	}
	if d.Allow {
		return &authv3.CheckResponse{
			Status:          okStatus,
			HttpResponse:    &authv3.CheckResponse_OkResponse{OkResponse: okResponse(eng, r, d)},
			DynamicMetadata: s.metadata(r, d),
		}
	}
	return &authv3.CheckResponse{
		Status:          deniedStatus,
		HttpResponse:    s.deniedResponse(eng, r, d, now),
		DynamicMetadata: s.metadata(r, d),
	}
}

// bareDeny is a 500 deny without a body, for when no profile can render
// one.
func bareDeny(decisionID string) *authv3.CheckResponse {
	return &authv3.CheckResponse{
		Status:       deniedStatus,
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{Status: &typev3.HttpStatus{Code: typev3.StatusCode_InternalServerError}}},
		DynamicMetadata: &structpb.Struct{Fields: map[string]*structpb.Value{
			"reason":       structpb.NewStringValue(string(decision.InternalError)),
			metaDecisionID: structpb.NewStringValue(decisionID),
		}},
	}
}

// envoyResponse answers an OPA-Envoy policy's decision (opaenvoy.go): an
// allow as the policy says, a deny with the policy's body or status as it
// says, any other deny in the profile's envelope (policy_denied) with the
// policy's headers added.
func (s *Server) envoyResponse(eng *engine.Engine, r *request, d *decision.Decision, now time.Time) *authv3.CheckResponse {
	e := r.envoy
	if d.Allow != e.Allowed { // a deny the route shadows: allowed as it is
		e = &policy.Envoy{Allowed: d.Allow}
	}
	md := envoyMetadata(s.metadata(r, d), r)
	if d.Allow {
		return &authv3.CheckResponse{Status: okStatus, HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: envoyOK(r, e)}, DynamicMetadata: md}
	}
	if e.Custom() {
		return &authv3.CheckResponse{Status: deniedStatus, HttpResponse: envoyDenied(e), DynamicMetadata: md}
	}
	denied := s.deniedResponse(eng, r, d, now)
	denied.DeniedResponse.Headers = append(denied.DeniedResponse.Headers, headerOptions(e.Headers)...)
	return &authv3.CheckResponse{Status: deniedStatus, HttpResponse: denied, DynamicMetadata: md}
}

// deniedResponse is the profile's status, headers and body for d.
func (s *Server) deniedResponse(eng *engine.Engine, r *request, d *decision.Decision, now time.Time) *authv3.CheckResponse_DeniedResponse {
	p := denyProfile(eng, d)
	out := p.Render(d, now)
	headers := out.Headers
	if r != nil && len(r.quotaHeaders) > 0 {
		headers = append(headers, extraQuotaHeaders(headers, r.quotaHeaders)...)
	}
	hs := make([]*corev3.HeaderValueOption, len(headers))
	for i, h := range headers {
		hs[i] = header(h[0], h[1])
	}
	return &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
		Status:  &typev3.HttpStatus{Code: typev3.StatusCode(out.Status)},
		Headers: hs,
		Body:    string(out.Body),
	}}
}

// denyProfile picks the profile; with no engine at all it falls back to the
// built-in default so even "no policy loaded" is an enveloped 500.
func denyProfile(eng *engine.Engine, d *decision.Decision) *profile.Profile {
	if eng != nil {
		if p, ok := eng.Profiles.Get(d.Profile); ok {
			return p
		}
		if p, ok := eng.Profiles.Get(eng.Settings.DefaultProfile); ok {
			return p
		}
	}
	return fallbackProfile
}

var fallbackProfile = func() *profile.Profile {
	set, err := profile.NewSet(nil)
	if err != nil {
		panic("built-in profiles do not compile: " + err.Error())
	}
	p, _ := set.Get("default")
	return p
}()

func okResponse(eng *engine.Engine, r *request, d *decision.Decision) *authv3.OkHttpResponse {
	parts := okPartsFor(eng, r, d)
	var toClient []*corev3.HeaderValueOption
	for _, h := range r.quotaHeaders {
		toClient = append(toClient, header(strings.ToLower(h[0]), h[1]))
	}
	return &authv3.OkHttpResponse{Headers: parts.set, HeadersToRemove: parts.remove, ResponseHeadersToAdd: toClient}
}

// okPartsFor returns the parts of r's OK response: the memoized decision's,
// built on first use, or fresh ones when r was evaluated without the memo.
func okPartsFor(eng *engine.Engine, r *request, d *decision.Decision) *okParts {
	if r.entry == nil {
		return buildOKParts(eng, r, d)
	}
	rp := renderedFor(r.entry)
	parts := rp.ok.Load()
	if parts == nil {
		parts = buildOKParts(eng, r, d)
		parts.encode()
		rp.ok.Store(parts)
	}
	return parts
}

// buildOKParts builds the headers an allow sets and removes upstream. They
// depend only on what the memo key holds (identity, route, tenant values,
// policy output), so a memoized decision builds them once.
func buildOKParts(eng *engine.Engine, r *request, d *decision.Decision) *okParts {
	ih := eng.Settings.IdentityHeaders
	id := r.f.Identity()
	var set []*corev3.HeaderValueOption
	var remove []string
	put := func(name, value string) {
		if name == "" {
			return
		}
		if value == "" {
			remove = append(remove, name) // a client-supplied copy must not survive
			return
		}
		set = append(set, header(name, value))
	}
	if id != nil {
		put(ih.Subject, id.Subject)
		put(ih.KeyID, id.KeyID)
		put(ih.Kind, id.Kind)
		put(ih.Scopes, strings.Join(id.Scopes, " "))
		put(ih.Tenant, r.tenant)
	} else {
		for _, n := range []string{ih.Subject, ih.KeyID, ih.Kind, ih.Scopes, ih.Tenant} {
			put(n, "")
		}
	}
	for _, k := range slices.Sorted(maps.Keys(d.UpstreamHeaders)) {
		set = append(set, header(strings.ToLower(k), d.UpstreamHeaders[k]))
	}
	if !eng.Settings.KeepCredentials {
		remove = append(remove, "authorization", eng.Settings.APIKeyHeader)
	}
	// A tenant header names a tenant nobody checked, and the upstream does
	// not get it (x-auth-tenant says the verified one), when this route
	// does not verify it, or when its value is not one the verified
	// identity holds: an anonymous caller's on a public route, a shadowed
	// tenant denial's, a repeated header's.
	var ownBuf [route.MaxTenantHeaders]string
	own := ownBuf[:0]
	if rt := r.f.Route; rt != nil {
		for i, th := range rt.Req.TenantHeaders {
			own = append(own, th.Key)
			_, sent := r.f.Tenants.Get(i)
			if _, ok := r.f.VerifiedTenant(i); sent && !ok && !slices.Contains(remove, th.Key) {
				remove = append(remove, th.Key)
			}
		}
	}
	for _, k := range eng.TenantHeaders {
		if !slices.Contains(own, k) {
			remove = append(remove, k)
		}
	}
	return &okParts{set: set, remove: remove}
}

func header(k, v string) *corev3.HeaderValueOption {
	//lint:ignore SA1019 append: false is the one overwrite every Envoy version reads alike (append_action's default changed meaning in 2026)
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v}, Append: appendFalse}
}

// metadata goes to Envoy's dynamic metadata (namespace
// envoy.filters.http.ext_authz) for access logs and rate-limit descriptors.
func (s *Server) metadata(r *request, d *decision.Decision) *structpb.Struct {
	f := metadataFields(r, d, s.FullMetadata)
	f[metaDecisionID] = structpb.NewStringValue(d.ID)
	return &structpb.Struct{Fields: f}
}

// metaDecisionID is the one metadata field that differs per check.
const metaDecisionID = "decision_id"

// metadataFields are the metadata fields but the decision id: for an allow
// they depend only on what the memo key holds.
//
// By default they are the fields an access log line needs to say what
// happened and to find the decision log record (which holds everything
// else under the same decision_id): reason and, for a shadowed deny,
// shadow_reason. An allow's identity also reaches the upstream (and Envoy's
// later filters) as the identity headers. With full (--reply-metadata=full)
// they add policy_version, profile, route and the verified identity
// (subject, key_id, tenant, plan), for access-log formats and rate-limit
// descriptors that read them from the metadata. Envoy logs x-request-id
// itself, and allowed follows from reason ("ok").
func metadataFields(r *request, d *decision.Decision, full bool) map[string]*structpb.Value {
	f := make(map[string]*structpb.Value, 9)
	f["reason"] = structpb.NewStringValue(string(d.Reason))
	if d.Shadow != nil {
		f["shadow_reason"] = structpb.NewStringValue(string(d.Shadow.Reason))
	}
	if !full {
		return f
	}
	if d.PolicyVersion != "" {
		f["policy_version"] = structpb.NewStringValue(d.PolicyVersion)
	}
	if d.Profile != "" {
		f["profile"] = structpb.NewStringValue(d.Profile)
	}
	if d.Route != "" {
		f["route"] = structpb.NewStringValue(d.Route)
	}
	if r == nil {
		return f
	}
	if id := r.f.Identity(); id != nil {
		f["subject"] = structpb.NewStringValue(id.Subject)
		if id.KeyID != "" {
			f["key_id"] = structpb.NewStringValue(id.KeyID)
		}
		if r.tenant != "" {
			f["tenant"] = structpb.NewStringValue(r.tenant)
		}
		if id.Plan != "" {
			f["plan"] = structpb.NewStringValue(id.Plan)
		}
	}
	return f
}
