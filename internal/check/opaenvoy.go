package check

import (
	"errors"
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/extauthz/extauthz/internal/decision"
	"github.com/extauthz/extauthz/internal/policy"
)

// OPA-Envoy compatibility mode (extauthz.settings.opa_envoy_path): the
// policy is one written for the OPA-Envoy plugin. Its input is the plugin's
// (envoyInput), its decision the plugin's boolean or object
// (policy.Envoy), rendered the plugin's way (envoyOK, envoyDenied); a deny
// without a body or a status gets the profile's envelope, policy_denied.

var (
	kVersion       = ast.StringTerm("version")
	kParsedBody    = ast.StringTerm("parsed_body")
	kTruncatedBody = ast.StringTerm("truncated_body")
	// kSourcePrincipal: the plugin copies attributes.source.principal to
	// the top level when it is set.
	kSourcePrincipal = ast.StringTerm("source_principal")
	envoyVersion     = ast.ObjectTerm(
		ast.Item(ast.StringTerm("encoding"), ast.StringTerm("protojson")),
		ast.Item(ast.StringTerm("ext_authz"), ast.StringTerm("v3")),
	)
	errEnvoyBody = errors.New("the request body is not valid for its content-type")
)

// envoyInput builds the OPA-Envoy plugin's input: attributes, the
// CheckRequest's as the plugin converts it (protoValue, JSON field names),
// version, parsed_path, parsed_query, parsed_body, truncated_body and,
// when the source peer has one, source_principal; plus input.extauthz, the
// sidecar's facts. It is built as an OPA value directly, once per check,
// and only the parts the policy can read (sel): the path, query and body
// are always decoded, as the plugin fails a check whose path or body does
// not decode, but made into OPA values only when read. Constant parts
// (version, an empty query, a null body) are shared between inputs.
// A path or query that does not decode is path_invalid, a body that does
// not parse as its content-type says is request_invalid (the plugin fails
// the check).
func envoyInput(req *authv3.CheckRequest, r *request, sel *policy.InputPaths) (ast.Value, decision.Reason, error) {
	h := req.GetAttributes().GetRequest().GetHttp()
	rawPath, rawQuery, _ := strings.Cut(h.GetPath(), "?")
	p, err := url.PathUnescape(rawPath)
	if err != nil {
		return nil, decision.PathInvalid, err
	}
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return nil, decision.PathInvalid, err
	}
	body, truncated, err := envoyBody(h)
	if err != nil {
		return nil, decision.RequestInvalid, err
	}
	items := make([][2]*ast.Term, 0, 8)
	if a, as := req.GetAttributes(), sel.Child("attributes"); a != nil && as != nil {
		items = append(items, [2]*ast.Term{kAttributes, ast.NewTerm(protoValueOf(a.ProtoReflect(), as))})
	}
	if sel.Child("version") != nil {
		items = append(items, [2]*ast.Term{kVersion, envoyVersion})
	}
	if sel.Child("parsed_path") != nil {
		segs := strings.Split(strings.TrimLeft(p, "/"), "/")
		pp := make([]*ast.Term, len(segs))
		for i, s := range segs {
			pp[i] = ast.StringTerm(s)
		}
		items = append(items, [2]*ast.Term{kParsedPath, ast.ArrayTerm(pp...)})
	}
	if sel.Child("parsed_query") != nil {
		items = append(items, [2]*ast.Term{kParsedQuery, stringsObject(q)})
	}
	if sel.Child("parsed_body") != nil {
		items = append(items, [2]*ast.Term{kParsedBody, body})
	}
	if sel.Child("truncated_body") != nil {
		items = append(items, [2]*ast.Term{kTruncatedBody, ast.InternedTerm(truncated)})
	}
	if sel.Child("extauthz") != nil {
		items = append(items, [2]*ast.Term{kExtauthz, ast.NewTerm(r.f.Value())})
	}
	if sp := req.GetAttributes().GetSource().GetPrincipal(); sp != "" && sel.Child("source_principal") != nil {
		items = append(items, [2]*ast.Term{kSourcePrincipal, ast.StringTerm(sp)})
	}
	return ast.NewObject(items...), "", nil
}

// envoyBody is parsed_body and truncated_body as the plugin makes them. It
// reads the headers map only (not header_map, as the plugin): a body Envoy
// cut (x-envoy-auth-partial-body: true, or shorter than its
// content-length) is truncated and not parsed; a JSON body is parsed as
// JSON (the whole body: nothing may follow the value), a form body as a
// map of arrays; anything else is null.
func envoyBody(h *authv3.AttributeContext_HttpRequest) (*ast.Term, bool, error) {
	headers := h.GetHeaders()
	if headers["x-envoy-auth-partial-body"] == "true" {
		return ast.InternedNullTerm, true, nil
	}
	ct := headers["content-type"]
	json := strings.Contains(ct, "application/json")
	form := !json && strings.Contains(ct, "application/x-www-form-urlencoded")
	if !json && !form {
		return ast.InternedNullTerm, false, nil
	}
	body := h.GetBody()
	if body == "" {
		body = string(h.GetRawBody())
	}
	if body == "" {
		return ast.InternedNullTerm, false, nil
	}
	if cl, ok := headers["content-length"]; ok {
		n, err := strconv.ParseInt(cl, 10, 64)
		if err != nil {
			return nil, false, errEnvoyBody
		}
		if n > int64(len(body)) {
			return ast.InternedNullTerm, true, nil
		}
	}
	if form {
		q, err := url.ParseQuery(body)
		if err != nil {
			return nil, false, errEnvoyBody
		}
		return stringsObject(q), false, nil
	}
	var x any
	if err := util.UnmarshalJSON([]byte(body), &x); err != nil {
		return nil, false, errEnvoyBody
	}
	v, err := ast.InterfaceToValue(x)
	if err != nil {
		return nil, false, errEnvoyBody
	}
	return ast.NewTerm(v), false, nil
}

func stringsObject(m map[string][]string) *ast.Term {
	if len(m) == 0 {
		return ast.InternedEmptyObject
	}
	o := ast.NewObject()
	for _, k := range slices.Sorted(maps.Keys(m)) {
		vs := make([]*ast.Term, len(m[k]))
		for i, v := range m[k] {
			vs[i] = ast.StringTerm(v)
		}
		o.Insert(ast.StringTerm(k), ast.ArrayTerm(vs...))
	}
	return ast.NewTerm(o)
}

func headerOptions(hs [][2]string) []*corev3.HeaderValueOption {
	if len(hs) == 0 {
		return nil
	}
	out := make([]*corev3.HeaderValueOption, len(hs))
	for i, h := range hs {
		out[i] = header(strings.ToLower(h[0]), h[1])
	}
	return out
}

// envoyOK is the allow of an OPA-Envoy policy: its headers set upstream
// (append false: they replace the client's), the headers it removes, the
// response headers it adds and the query parameters it sets and removes.
// The sidecar adds only its quota headers, if a quota applies.
func envoyOK(r *request, e *policy.Envoy) *authv3.OkHttpResponse {
	ok := &authv3.OkHttpResponse{
		Headers:                 headerOptions(e.Headers),
		HeadersToRemove:         e.RemoveHeaders,
		ResponseHeadersToAdd:    headerOptions(e.ResponseHeaders),
		QueryParametersToRemove: e.QueryParamsToRemove,
	}
	for _, q := range e.QueryParamsToSet {
		ok.QueryParametersToSet = append(ok.QueryParametersToSet, &corev3.QueryParameter{Key: q[0], Value: q[1]})
	}
	for _, h := range r.quotaHeaders {
		ok.ResponseHeadersToAdd = append(ok.ResponseHeadersToAdd, header(strings.ToLower(h[0]), h[1]))
	}
	return ok
}

// envoyDenied is a deny with the policy's own body and/or status (403 when
// it gives none) and its headers, exactly as the plugin sends it: no
// content-type is added.
func envoyDenied(e *policy.Envoy) *authv3.CheckResponse_DeniedResponse {
	status := e.HTTPStatus
	if status == 0 {
		status = 403
	}
	return &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
		Status:  &typev3.HttpStatus{Code: typev3.StatusCode(status)},
		Headers: headerOptions(e.Headers),
		Body:    e.Body,
	}}
}

// envoyMetadata merges the policy's dynamic_metadata (r.envoyMeta) under
// the sidecar's own fields (decision_id, reason, ...), which win a name
// they share.
func envoyMetadata(md *structpb.Struct, r *request) *structpb.Struct {
	if r == nil || r.envoyMeta == nil {
		return md
	}
	for k, v := range md.GetFields() {
		r.envoyMeta.Fields[k] = v
	}
	return r.envoyMeta
}
