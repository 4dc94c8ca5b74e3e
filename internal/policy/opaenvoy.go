package policy

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"unicode/utf8"

	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"

	"github.com/extauthz/extauthz/internal/httpheader"
)

// DefaultOPAEnvoyPath is the OPA-Envoy plugin's default decision path, used
// when the compatibility mode is switched on without a path.
const DefaultOPAEnvoyPath = "envoy/authz/allow"

// OPAEnvoyQuery is the query for an OPA-Envoy plugin decision path
// ("envoy/authz/allow" or "/envoy/authz/allow" → data.envoy.authz.allow).
func OPAEnvoyQuery(path string) (string, error) {
	p := strings.Trim(path, "/")
	if p == "" {
		p = DefaultOPAEnvoyPath
	}
	ref := ast.Ref{ast.DefaultRootDocument}
	for _, seg := range strings.Split(p, "/") {
		if seg == "" {
			return "", fmt.Errorf("opa_envoy_path %q has an empty segment", path)
		}
		ref = append(ref, ast.StringTerm(seg))
	}
	return ref.String(), nil
}

// Envoy is the decision of an OPA-Envoy compatible policy: its boolean, or
// the fields of its object the plugin documents.
type Envoy struct {
	Allowed bool
	// Object: the policy returned an object, not a boolean.
	Object bool
	// Headers: request headers set upstream on allow, response headers on
	// deny. Several values for one name are kept in order.
	Headers             [][2]string
	ResponseHeaders     [][2]string // response_headers_to_add (allow)
	RemoveHeaders       []string    // request_headers_to_remove (allow)
	Body                string
	HasBody             bool
	HTTPStatus          int // 0: not given (403 on deny)
	DynamicMetadata     map[string]any
	QueryParamsToSet    [][2]string
	QueryParamsToRemove []string
}

// Custom reports whether a deny is answered with the policy's own response
// (it gave a body or a status) rather than the profile's envelope.
func (e *Envoy) Custom() bool { return e.HasBody || e.HTTPStatus != 0 }

// parseEnvoyOutput reads a decision as the OPA-Envoy plugin does. A value
// it would reject (allowed missing or not a boolean, a field of the wrong
// type, an HTTP status Envoy does not know) is an ErrShape error.
func parseEnvoyOutput(v any) (Output, error) {
	e := &Envoy{}
	switch v := v.(type) {
	case bool:
		e.Allowed = v
	case map[string]any:
		e.Object = true
		if err := e.fromObject(v); err != nil {
			return Output{}, fmt.Errorf("%w: %w", ErrShape, err)
		}
	default:
		return Output{}, fmt.Errorf("%w: the decision is neither a boolean nor an object", ErrShape)
	}
	out := Output{Allow: e.Allowed, Reason: "ok", Envoy: e}
	if !e.Allowed {
		out.Reason = "policy_denied"
	}
	return out, nil
}

// envoyFields are the fields of a decision object the plugin reads.
var envoyFields = func() []*ast.Term {
	var ts []*ast.Term
	for _, f := range []string{"allowed", "headers", "response_headers_to_add", "request_headers_to_remove",
		"query_parameters_to_remove", "body", "http_status", "dynamic_metadata", "query_parameters_to_set"} {
		ts = append(ts, ast.StringTerm(f))
	}
	return ts
}()

// keepTerm is the evaluation's result as is (rego.EvalGenerateJSON): the
// decision is read by parseEnvoyValue.
func keepTerm(t *ast.Term, _ *rego.EvalContext) (any, error) { return t, nil }

// parseEnvoyValue is parseEnvoyOutput of the decision's OPA value: a
// boolean is read as it is; of an object only the fields the plugin reads
// are converted to Go values (a large value under another name is never
// copied).
func parseEnvoyValue(v ast.Value) (Output, error) {
	switch v := v.(type) {
	case ast.Boolean:
		return parseEnvoyOutput(bool(v))
	case ast.Object:
		m := make(map[string]any, len(envoyFields))
		for _, k := range envoyFields {
			t := v.Get(k)
			if t == nil {
				continue
			}
			x, err := ast.JSON(t.Value)
			if err != nil {
				return Output{}, fmt.Errorf("%w: %s: %w", ErrShape, k.Value.(ast.String), err)
			}
			m[string(k.Value.(ast.String))] = x
		}
		return parseEnvoyOutput(m)
	}
	return parseEnvoyOutput(nil)
}

func (e *Envoy) fromObject(m map[string]any) error {
	a, ok := m["allowed"]
	if !ok {
		return errors.New(`the decision object has no "allowed"`)
	}
	if e.Allowed, ok = a.(bool); !ok {
		return errors.New("allowed is not a boolean")
	}
	var err error
	if e.Headers, err = envoyHeaders(m, "headers"); err != nil {
		return err
	}
	if e.ResponseHeaders, err = envoyHeaders(m, "response_headers_to_add"); err != nil {
		return err
	}
	if e.RemoveHeaders, err = envoyStrings(m, "request_headers_to_remove"); err != nil {
		return err
	}
	for _, h := range e.RemoveHeaders {
		if err := checkHeader("request_headers_to_remove", h); err != nil {
			return err
		}
	}
	if e.QueryParamsToRemove, err = envoyStrings(m, "query_parameters_to_remove"); err != nil {
		return err
	}
	for _, q := range e.QueryParamsToRemove {
		if !utf8.ValidString(q) {
			return errors.New("query_parameters_to_remove: a name is not valid UTF-8")
		}
	}
	if b, ok := m["body"]; ok {
		if e.Body, ok = b.(string); !ok {
			return errors.New("body is not a string")
		}
		// A body echoing a decoded client value (input.parsed_query) may
		// hold bytes that are not UTF-8, which a CheckResponse cannot
		// carry: each run of invalid bytes is sent as one U+FFFD, the deny
		// as it is.
		e.Body = strings.ToValidUTF8(e.Body, "\uFFFD")
		e.HasBody = true
	}
	if s, ok := m["http_status"]; ok {
		n, ok := s.(json.Number)
		if !ok {
			return errors.New("http_status is not a number")
		}
		code, err := n.Int64()
		if err != nil || code < 100 || code > 599 || !envoyKnownStatus(int(code)) {
			return fmt.Errorf("http_status %s is not an HTTP status Envoy knows", n)
		}
		e.HTTPStatus = int(code)
	}
	if d, ok := m["dynamic_metadata"]; ok {
		if e.DynamicMetadata, ok = d.(map[string]any); !ok {
			return errors.New("dynamic_metadata is not an object")
		}
		numbersToFloats(e.DynamicMetadata)
	}
	if q, ok := m["query_parameters_to_set"]; ok {
		qm, ok := q.(map[string]any)
		if !ok {
			return errors.New("query_parameters_to_set is not an object")
		}
		for _, k := range slices.Sorted(maps.Keys(qm)) {
			vals, err := stringOrStrings(qm[k])
			if err != nil {
				return fmt.Errorf("query_parameters_to_set.%s: %w", k, err)
			}
			for _, v := range vals {
				if !utf8.ValidString(k) || !utf8.ValidString(v) {
					return fmt.Errorf("query_parameters_to_set.%s: not valid UTF-8", strings.ToValidUTF8(k, "\uFFFD"))
				}
				e.QueryParamsToSet = append(e.QueryParamsToSet, [2]string{k, v})
			}
		}
	}
	return nil
}

// envoyHeaders reads a headers field: an object of name → string or array
// of strings, or an array of such objects.
func envoyHeaders(m map[string]any, field string) ([][2]string, error) {
	v, ok := m[field]
	if !ok {
		return nil, nil
	}
	var objs []map[string]any
	switch v := v.(type) {
	case map[string]any:
		objs = []map[string]any{v}
	case []any:
		for _, o := range v {
			om, ok := o.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("%s: an element is not an object", field)
			}
			objs = append(objs, om)
		}
	default:
		return nil, fmt.Errorf("%s is not an object", field)
	}
	var out [][2]string
	for _, o := range objs {
		for _, k := range slices.Sorted(maps.Keys(o)) {
			vals, err := stringOrStrings(o[k])
			if err != nil {
				return nil, fmt.Errorf("%s.%s: %w", field, k, err)
			}
			if err := checkHeader(field, k, vals...); err != nil {
				return nil, err
			}
			for _, v := range vals {
				out = append(out, [2]string{k, v})
			}
		}
	}
	return out, nil
}

// checkHeader refuses a header a decision may not set (or remove):
// Envoy would answer the check with a bare 500 (a name that is not a
// token, a value with CR, LF or NUL), or the upstream would get another
// request than the one decided on (a pseudo-header, host, content-length,
// a hop-by-hop header). The plugin passes them on; here the decision is a
// deny, internal_error.
func checkHeader(field, name string, vals ...string) error {
	if err := httpheader.Upstream(strings.ToLower(name)); err != nil {
		return fmt.Errorf("%s: %w", field, err)
	}
	for _, v := range vals {
		if !httpheader.Value(v) {
			return fmt.Errorf("%s.%s: the value has a control character or is not valid UTF-8", field, name)
		}
	}
	return nil
}

func stringOrStrings(v any) ([]string, error) {
	switch v := v.(type) {
	case string:
		return []string{v}, nil
	case []any:
		out := make([]string, len(v))
		for i, x := range v {
			s, ok := x.(string)
			if !ok {
				return nil, errors.New("not a string or an array of strings")
			}
			out[i] = s
		}
		return out, nil
	}
	return nil, errors.New("not a string or an array of strings")
}

func envoyStrings(m map[string]any, field string) ([]string, error) {
	v, ok := m[field]
	if !ok {
		return nil, nil
	}
	a, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("%s is not an array", field)
	}
	out := make([]string, len(a))
	for i, x := range a {
		if out[i], ok = x.(string); !ok {
			return nil, fmt.Errorf("%s[%d] is not a string", field, i)
		}
	}
	return out, nil
}

// envoyKnownStatus: Envoy's HttpStatus takes only the codes it names.
func envoyKnownStatus(code int) bool {
	_, ok := typev3.StatusCode_name[int32(code)]
	return ok
}

// numbersToFloats turns the JSON numbers of a decoded value into float64s,
// as google.protobuf.Struct (dynamic metadata) holds them.
func numbersToFloats(v any) any {
	switch v := v.(type) {
	case json.Number:
		f, _ := v.Float64()
		return f
	case map[string]any:
		for k, x := range v {
			v[k] = numbersToFloats(x)
		}
	case []any:
		for i, x := range v {
			v[i] = numbersToFloats(x)
		}
	}
	return v
}
