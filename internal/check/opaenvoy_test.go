package check

import (
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	gojwt "github.com/golang-jwt/jwt/v5"
	"github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/extauthz/extauthz/internal/engine"
	"github.com/extauthz/extauthz/internal/memo"
	"github.com/extauthz/extauthz/internal/policy"
)

// Policies in the style of the OPA-Envoy plugin's documentation, run
// unchanged in the compatibility mode (extauthz.settings.opa_envoy_path).

const envoyPathPolicy = `package envoy.authz

default allow := false

allow if {
	input.parsed_path[0] == "people"
	input.attributes.request.http.method == "GET"
}

allow if {
	input.parsed_path == ["people"]
	input.attributes.request.http.method == "POST"
	input.parsed_body.firstname == "Charlie"
}
`

// The plugin docs' classic example: a JWT decoded and verified in Rego.
const envoyJWTPolicy = `package envoy.authz

import input.attributes.request.http as http_request

default allow := false

token := {"valid": valid, "payload": payload} if {
	[_, encoded] := split(http_request.headers.authorization, " ")
	[valid, _, payload] := io.jwt.decode_verify(encoded, {"secret": "secret"})
}

claims := payload if {
	[_, encoded] := split(http_request.headers.authorization, " ")
	[_, payload, _] := io.jwt.decode(encoded)
}

allow if {
	is_token_valid
	action_allowed
}

is_token_valid if {
	token.valid
	now := time.now_ns() / 1000000000
	token.payload.nbf <= now
	now < token.payload.exp
}

action_allowed if {
	http_request.method == "GET"
	claims.role == "guest"
	glob.match("/people/*", ["/"], http_request.path)
}

action_allowed if {
	http_request.method == "GET"
	claims.role == "admin"
	glob.match("/people*", [], http_request.path)
}
`

const envoyObjectPolicy = `package envoy.authz

default allow := {
	"allowed": false,
	"headers": {"x-ext-auth-allow": "no"},
	"body": "Unauthorized Request",
	"http_status": 401,
}

allow := response if {
	input.attributes.request.http.headers["x-user"] == "alice"
	response := {
		"allowed": true,
		"headers": {"x-ext-auth-allow": "yes", "x-validated-by": ["security-checkpoint"]},
		"request_headers_to_remove": ["one-auth-header"],
		"response_headers_to_add": {"x-foo": "bar"},
		"query_parameters_to_set": {"tenant": "acme"},
		"query_parameters_to_remove": ["debug"],
		"dynamic_metadata": {"user": "alice", "level": 3},
	}
}

allow := {"allowed": false, "headers": {"x-why": "bob is not welcome"}} if {
	input.attributes.request.http.headers["x-user"] == "bob"
}

allow := {"allowed": false, "http_status": 429} if {
	input.attributes.request.http.headers["x-user"] == "carol"
}
`

// No default: a request it does not allow has no decision at all.
const envoyUndefinedPolicy = `package envoy.authz

allow if input.parsed_path == ["ok"]
`

func envoyEngine(t testing.TB, rego, settings string) *engine.Engine {
	t.Helper()
	fsys := fstest.MapFS{
		"policy.rego": {Data: []byte(rego)},
		"data.json":   {Data: []byte(`{"extauthz": {"settings": ` + settings + `}}`)},
	}
	src, err := policy.LoadFS(fsys, "envoytest")
	if err != nil {
		t.Fatal(err)
	}
	e, err := engine.Build(context.Background(), src, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Servable(); err != nil {
		t.Fatalf("an OPA-Envoy policy needs no routes or credentials: %v", err)
	}
	return e
}

func envoyServer(t testing.TB, rego string) *Server {
	t.Helper()
	s := newServer(t, envoyEngine(t, rego, `{"opa_envoy_path": "envoy/authz/allow"}`))
	s.Now = time.Now // the JWT policy reads the clock itself
	return s
}

func withBody(r *authv3.CheckRequest, body string, headers map[string]string) *authv3.CheckRequest {
	h := r.Attributes.Request.Http
	h.Body = body
	for k, v := range headers {
		h.Headers[k] = v
	}
	return r
}

func envelope(t *testing.T, resp *authv3.CheckResponse) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(resp.GetDeniedResponse().GetBody()), &m); err != nil {
		t.Fatalf("deny body is not JSON: %v: %q", err, resp.GetDeniedResponse().GetBody())
	}
	return m
}

func hval(hs []*corev3.HeaderValueOption, k string) (string, bool) {
	for _, h := range hs {
		if h.GetHeader().GetKey() == k {
			return h.GetHeader().GetValue(), true
		}
	}
	return "", false
}

func TestOPAEnvoyAllowByMethodAndPath(t *testing.T) {
	s := envoyServer(t, envoyPathPolicy)
	for _, c := range []struct {
		name   string
		r      *authv3.CheckRequest
		reason string
		status int
	}{
		{"GET /people", req("GET", "/people", nil), "ok", 200},
		{"GET /people/42 with a query", req("GET", "/people/42?x=1&x=2", nil), "ok", 200},
		{"DELETE /people/42", req("DELETE", "/people/42", nil), "policy_denied", 403},
		{"GET /admin", req("GET", "/admin", nil), "policy_denied", 403},
		{"POST /people as JSON", withBody(req("POST", "/people", nil), `{"firstname": "Charlie", "lastname": "Opa"}`, map[string]string{"content-type": "application/json"}), "ok", 200},
		{"POST /people, someone else", withBody(req("POST", "/people", nil), `{"firstname": "Eve"}`, map[string]string{"content-type": "application/json"}), "policy_denied", 403},
		{"POST /people, truncated body", withBody(req("POST", "/people", nil), `{"firstname": "Charlie"`, map[string]string{"content-type": "application/json", "x-envoy-auth-partial-body": "true"}), "policy_denied", 403},
		{"POST /people, body shorter than content-length", withBody(req("POST", "/people", nil), `{"firstname": "Charlie"}`, map[string]string{"content-type": "application/json", "content-length": "999"}), "policy_denied", 403},
		{"POST /people, JSON that does not parse", withBody(req("POST", "/people", nil), `{"firstname": `, map[string]string{"content-type": "application/json"}), "request_invalid", 400},
	} {
		t.Run(c.name, func(t *testing.T) {
			reason, status, resp := decide(t, s, c.r)
			if reason != c.reason || status != c.status {
				t.Fatalf("got %s %d, want %s %d: %v", reason, status, c.reason, c.status, resp)
			}
			if reason == "ok" {
				// The plugin's policy owns the headers: nothing of the sidecar's rulebook is added or stripped.
				ok := resp.GetOkResponse()
				if len(ok.GetHeaders()) != 0 || len(ok.GetHeadersToRemove()) != 0 {
					t.Fatalf("boolean allow changed headers: %v", ok)
				}
			}
			if reason == "policy_denied" {
				env := envelope(t, resp)
				if code := env["error"].(map[string]any)["code"]; code != "policy_denied" {
					t.Fatalf("envelope code %v, want policy_denied: %v", code, env)
				}
			}
		})
	}
}

func hs256(t *testing.T, claims gojwt.MapClaims) string {
	t.Helper()
	tok, err := gojwt.NewWithClaims(gojwt.SigningMethodHS256, claims).SignedString([]byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestOPAEnvoyJWTInRego(t *testing.T) {
	s := envoyServer(t, envoyJWTPolicy)
	now := time.Now().Unix()
	claims := func(role string, exp int64) gojwt.MapClaims {
		return gojwt.MapClaims{"role": role, "sub": "alice", "nbf": now - 60, "exp": exp}
	}
	bearer := func(tok string) map[string]string { return map[string]string{"authorization": "Bearer " + tok} }
	guest, admin := hs256(t, claims("guest", now+3600)), hs256(t, claims("admin", now+3600))
	expired := hs256(t, claims("guest", now-10))
	forged, _ := gojwt.NewWithClaims(gojwt.SigningMethodHS256, claims("admin", now+3600)).SignedString([]byte("not-the-secret"))
	for _, c := range []struct {
		name, method, path string
		headers            map[string]string
		reason             string
	}{
		{"guest reads a person", "GET", "/people/1", bearer(guest), "ok"},
		{"guest lists people", "GET", "/people", bearer(guest), "policy_denied"},
		{"admin lists people", "GET", "/people", bearer(admin), "ok"},
		{"guest writes", "POST", "/people/1", bearer(guest), "policy_denied"},
		{"expired token", "GET", "/people/1", bearer(expired), "policy_denied"},
		{"forged signature", "GET", "/people", bearer(forged), "policy_denied"},
		{"no token", "GET", "/people/1", nil, "policy_denied"},
	} {
		t.Run(c.name, func(t *testing.T) {
			reason, _, resp := decide(t, s, req(c.method, c.path, c.headers))
			if reason != c.reason {
				t.Fatalf("got %s, want %s: %v", reason, c.reason, resp)
			}
			if reason == "ok" && len(resp.GetOkResponse().GetHeadersToRemove()) != 0 {
				t.Fatalf("the Authorization header must reach the upstream as with the plugin: %v", resp.GetOkResponse())
			}
		})
	}
}

func TestOPAEnvoyObjectResult(t *testing.T) {
	s := envoyServer(t, envoyObjectPolicy)

	t.Run("allow with headers, query and metadata", func(t *testing.T) {
		reason, _, resp := decide(t, s, req("GET", "/anything?debug=1", map[string]string{"x-user": "alice"}))
		ok := resp.GetOkResponse()
		if reason != "ok" || ok == nil {
			t.Fatalf("got %s: %v", reason, resp)
		}
		for k, want := range map[string]string{"x-ext-auth-allow": "yes", "x-validated-by": "security-checkpoint"} {
			if v, _ := hval(ok.GetHeaders(), k); v != want {
				t.Errorf("upstream header %s = %q, want %q", k, v, want)
			}
		}
		for _, h := range ok.GetHeaders() {
			//lint:ignore SA1019 the field the sidecar sets
			if h.GetAppend().GetValue() {
				t.Errorf("header %s appends; want it set (append false)", h.GetHeader().GetKey())
			}
		}
		if got := strings.Join(ok.GetHeadersToRemove(), ","); got != "one-auth-header" {
			t.Errorf("headers to remove %q", got)
		}
		if v, _ := hval(ok.GetResponseHeadersToAdd(), "x-foo"); v != "bar" {
			t.Errorf("response header x-foo = %q", v)
		}
		if q := ok.GetQueryParametersToSet(); len(q) != 1 || q[0].GetKey() != "tenant" || q[0].GetValue() != "acme" {
			t.Errorf("query parameters to set %v", q)
		}
		if q := ok.GetQueryParametersToRemove(); len(q) != 1 || q[0] != "debug" {
			t.Errorf("query parameters to remove %v", q)
		}
		md := resp.GetDynamicMetadata().GetFields()
		if md["user"].GetStringValue() != "alice" || md["level"].GetNumberValue() != 3 || md["decision_id"].GetStringValue() == "" || md["reason"].GetStringValue() != "ok" {
			t.Errorf("metadata %v: want the policy's merged with the sidecar's", md)
		}
	})

	t.Run("deny with status, body and headers", func(t *testing.T) {
		reason, status, resp := decide(t, s, req("GET", "/anything", nil))
		d := resp.GetDeniedResponse()
		if reason != "policy_denied" || status != 401 || d.GetBody() != "Unauthorized Request" {
			t.Fatalf("got %s %d %q", reason, status, d.GetBody())
		}
		if v, _ := hval(d.GetHeaders(), "x-ext-auth-allow"); v != "no" {
			t.Errorf("deny header x-ext-auth-allow = %q", v)
		}
		if _, ok := hval(d.GetHeaders(), "content-type"); ok {
			t.Errorf("the plugin adds no content-type; got %v", d.GetHeaders())
		}
	})

	t.Run("deny with a status only", func(t *testing.T) {
		reason, status, resp := decide(t, s, req("GET", "/anything", map[string]string{"x-user": "carol"}))
		if reason != "policy_denied" || status != 429 || resp.GetDeniedResponse().GetBody() != "" {
			t.Fatalf("got %s %d %v", reason, status, resp)
		}
	})

	t.Run("deny without body: the profile's envelope", func(t *testing.T) {
		for _, prof := range []string{"default", "problem"} {
			r := req("GET", "/anything", map[string]string{"x-user": "bob"})
			r.Attributes.ContextExtensions = map[string]string{"profile": prof}
			reason, status, resp := decide(t, s, r)
			d := resp.GetDeniedResponse()
			if reason != "policy_denied" || status != 403 {
				t.Fatalf("%s: got %s %d", prof, reason, status)
			}
			env := envelope(t, resp)
			code := env["code"]
			if e, ok := env["error"].(map[string]any); ok {
				code = e["code"]
			}
			if code != "policy_denied" {
				t.Fatalf("%s: envelope %v", prof, env)
			}
			if v, _ := hval(d.GetHeaders(), "x-why"); v != "bob is not welcome" {
				t.Errorf("%s: the policy's headers are added to the envelope: %v", prof, d.GetHeaders())
			}
			if ct, _ := hval(d.GetHeaders(), "content-type"); !strings.Contains(ct, "json") {
				t.Errorf("%s: envelope content-type %q", prof, ct)
			}
		}
	})
}

func TestOPAEnvoyUndefinedFailsClosed(t *testing.T) {
	s := envoyServer(t, envoyUndefinedPolicy)
	if reason, _, _ := decide(t, s, req("GET", "/ok", nil)); reason != "ok" {
		t.Fatalf("allowed path: %s", reason)
	}
	reason, status, _ := decide(t, s, req("GET", "/other", nil))
	if reason != "internal_error" || status != 500 {
		t.Fatalf("undefined decision: got %s %d, want internal_error 500 (fail closed)", reason, status)
	}
}

func TestOPAEnvoyMalformedDecisionFailsClosed(t *testing.T) {
	for _, rego := range []string{
		`package envoy.authz
allow := {"headers": {"a": "b"}}`, // no allowed
		`package envoy.authz
allow := {"allowed": "yes"}`,
		`package envoy.authz
allow := {"allowed": false, "http_status": 999}`,
		`package envoy.authz
allow := {"allowed": true, "headers": {"a": 1}}`,
		`package envoy.authz
allow := "yes"`,
		// headers Envoy could not apply (it would answer a bare 500) or
		// that would change the request decided on
		`package envoy.authz
allow := {"allowed": true, "headers": {"x-a": "a\r\nx-injected: 1"}}`,
		`package envoy.authz
allow := {"allowed": true, "headers": {"x bad": "v"}}`,
		`package envoy.authz
allow := {"allowed": true, "headers": {":path": "/admin"}}`,
		`package envoy.authz
allow := {"allowed": true, "headers": [{"host": "evil"}]}`,
		`package envoy.authz
allow := {"allowed": false, "response_headers_to_add": {"x-a": "b\u0000"}}`,
		`package envoy.authz
allow := {"allowed": true, "request_headers_to_remove": [":authority"]}`,
	} {
		s := envoyServer(t, rego)
		if reason, status, _ := decide(t, s, req("GET", "/", nil)); reason != "internal_error" || status != 500 {
			t.Errorf("%s\ngot %s %d, want internal_error 500", rego, reason, status)
		}
	}
}

// A policy that copies a decoded client value (input.parsed_query, from
// %ff) into what the response carries still gets a CheckResponse gRPC can
// encode: a header or query parameter that is not UTF-8 is internal_error,
// a body keeps its status with each invalid sequence sent as U+FFFD.
func TestPolicyOutputNotUTF8(t *testing.T) {
	r := func() *authv3.CheckRequest { return req("GET", "/pub?q=%ff", nil) }
	for _, c := range []struct {
		name, rego string
		status     int
		body       string
	}{
		{"allow header", `package envoy.authz
allow := {"allowed": true, "headers": {"x-q": input.parsed_query.q[0]}}`, 500, ""},
		{"deny header", `package envoy.authz
allow := {"allowed": false, "response_headers_to_add": {"x-q": input.parsed_query.q[0]}}`, 500, ""},
		{"query parameter", `package envoy.authz
allow := {"allowed": true, "query_parameters_to_set": {"q": input.parsed_query.q[0]}}`, 500, ""},
		{"query parameter name", `package envoy.authz
allow := {"allowed": true, "query_parameters_to_remove": [input.parsed_query.q[0]]}`, 500, ""},
		{"body", `package envoy.authz
allow := {"allowed": false, "http_status": 403, "body": sprintf("user %s is not allowed", [input.parsed_query.q[0]])}`, 403, "user \uFFFD is not allowed"},
	} {
		resp := wireCheck(t, envoyServer(t, c.rego), r())
		d := resp.GetDeniedResponse()
		if int(d.GetStatus().GetCode()) != c.status || c.body != "" && d.GetBody() != c.body {
			t.Errorf("%s: %d %q, want %d %q", c.name, d.GetStatus().GetCode(), d.GetBody(), c.status, c.body)
		}
	}
	// The main mode: a rule setting an upstream header.
	fsys := fstest.MapFS{
		"policy.rego": {Data: []byte(`package extauthz
decision := {"allow": true, "reason": "ok", "headers": {"x-q": input.parsed_query.q[0]}}`)},
		"data.json": {Data: []byte(`{"extauthz": {"settings": {"allow_empty": true}, "routes": [{"id": "pub", "path": "/pub", "public": true}]}}`)},
	}
	src, err := policy.LoadFS(fsys, "utf8test")
	if err != nil {
		t.Fatal(err)
	}
	e, err := engine.Build(context.Background(), src, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	if reason := wireCheck(t, newServer(t, e), r()).GetDynamicMetadata().GetFields()["reason"].GetStringValue(); reason != "internal_error" {
		t.Errorf("main mode header: %s, want internal_error", reason)
	}
}

func TestOPAEnvoySetting(t *testing.T) {
	rego := `package custom.authz
decide := true
`
	for _, c := range []struct{ setting, query string }{
		{`{"opa_envoy_path": "custom/authz/decide"}`, "data.custom.authz.decide"},
		{`{"opa_envoy_path": "/custom/authz/decide"}`, "data.custom.authz.decide"},
		{`{"opa_envoy_path": true}`, "data.envoy.authz.allow"},
		{`{"opa_envoy_path": ""}`, "data.envoy.authz.allow"},
	} {
		e := envoyEngine(t, rego, c.setting)
		if !e.OPAEnvoy() || e.Policy.Query() != c.query {
			t.Errorf("%s: query %s, want %s", c.setting, e.Policy.Query(), c.query)
		}
	}
	// Off: the sidecar's own query.
	fsys := fstest.MapFS{"policy.rego": {Data: []byte(rego)}, "data.json": {Data: []byte(`{"extauthz": {"settings": {"opa_envoy_path": false, "allow_empty": true}}}`)}}
	src, _ := policy.LoadFS(fsys, "off")
	if e, err := engine.Build(context.Background(), src, engine.Options{}); err != nil || e.OPAEnvoy() || e.Policy.Query() != policy.Query {
		t.Errorf("opa_envoy_path false: %v", err)
	}
	fsys["data.json"] = &fstest.MapFile{Data: []byte(`{"extauthz": {"settings": {"opa_envoy_path": 3}}}`)}
	src, _ = policy.LoadFS(fsys, "bad")
	if _, err := engine.Build(context.Background(), src, engine.Options{}); err == nil || !strings.Contains(err.Error(), "opa_envoy_path") {
		t.Errorf("opa_envoy_path 3: want an error naming the setting, got %v", err)
	}
}

// The memo never applies: the plugin's policies read the request itself.
func TestOPAEnvoyNotMemoized(t *testing.T) {
	for name, rego := range map[string]string{"path": envoyPathPolicy, "jwt": envoyJWTPolicy, "object": envoyObjectPolicy, "constant": "package envoy.authz\nallow := true\n"} {
		e := envoyEngine(t, rego, `{"opa_envoy_path": "envoy/authz/allow"}`)
		if _, plain := e.Decider.(memo.Plain); !plain {
			t.Errorf("%s: decider %T, want memo.Plain", name, e.Decider)
		}
		if p := e.Policy.Purity(); p.Pure {
			t.Errorf("%s: purity says pure", name)
		} else {
			t.Logf("%s: impure: %s", name, p.Why)
		}
	}
}

// The input is the plugin's: the CheckRequest's attributes under their
// JSON names (see also TestOPAEnvoyInputMatchesPlugin), the whole of it
// when the policy can read all of it.
func TestOPAEnvoyInput(t *testing.T) {
	e := envoyEngine(t, envoyPathPolicy, `{"opa_envoy_path": "envoy/authz/allow"}`)
	s := newServer(t, e)
	r := withBody(req("POST", "/people/a%20b?q=1&q=2&x=", nil), `{"n": 1}`, map[string]string{"content-type": "application/json"})
	r.Attributes.ContextExtensions = map[string]string{"virtual_host": "vh"}
	r.Attributes.Destination = &authv3.AttributeContext_Peer{Principal: "spiffe://cluster.local/ns/default/sa/app"}
	var rq request
	s.requestToInput(context.Background(), e, r, time.Now(), "d1", &rq)
	in, reason, err := envoyInput(r, &rq, policy.AllInput())
	if err != nil || reason != "" {
		t.Fatal(reason, err)
	}
	for path, want := range map[string]string{
		"attributes.source.address.socketAddress.address":   `"127.0.0.1"`,
		"attributes.source.address.socketAddress.portValue": `40000`,
		"attributes.destination.principal":                  `"spiffe://cluster.local/ns/default/sa/app"`,
		"attributes.request.http.method":                    `"POST"`,
		"attributes.request.http.path":                      `"/people/a%20b?q=1&q=2&x="`,
		"attributes.request.http.host":                      `"api.example.com"`,
		"attributes.request.http.body":                      `"{\"n\": 1}"`,
		"attributes.request.http.headers[\"content-type\"]": `"application/json"`,
		"attributes.contextExtensions.virtual_host":         `"vh"`,
		"parsed_path":    `["people", "a b"]`,
		"parsed_query":   `{"q": ["1", "2"], "x": [""]}`,
		"parsed_body":    `{"n": 1}`,
		"truncated_body": `false`,
		"version":        `{"encoding": "protojson", "ext_authz": "v3"}`,
		"extauthz.path":  `"/people/a%20b"`,
	} {
		ref := ast.MustParseRef("x." + path)[1:]
		got, err := in.(ast.Object).Find(ref)
		if err != nil {
			t.Errorf("input.%s: missing", path)
			continue
		}
		if w := ast.MustParseTerm(want).Value; got.Compare(w) != 0 {
			t.Errorf("input.%s = %v, want %v", path, got, w)
		}
	}
}

// Through the sidecar over gRPC, as Envoy calls it.
func TestOPAEnvoyOverGRPC(t *testing.T) {
	s := envoyServer(t, envoyObjectPolicy)
	g := grpc.NewServer()
	authv3.RegisterAuthorizationServer(g, s)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(lis) }()
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := authv3.NewAuthorizationClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	resp, err := c.Check(ctx, req("GET", "/x", map[string]string{"x-user": "alice"}))
	if err != nil || resp.GetOkResponse() == nil {
		t.Fatalf("alice: %v %v", resp, err)
	}
	if v, _ := hval(resp.GetOkResponse().GetHeaders(), "x-ext-auth-allow"); v != "yes" {
		t.Errorf("alice: upstream header %q", v)
	}
	resp, err = c.Check(ctx, req("GET", "/x", nil))
	if err != nil || resp.GetDeniedResponse().GetStatus().GetCode() != 401 || resp.GetDeniedResponse().GetBody() != "Unauthorized Request" {
		t.Fatalf("anonymous: %v %v", resp, err)
	}
	resp, err = c.Check(ctx, req("GET", "/x", map[string]string{"x-user": "bob"}))
	if err != nil || resp.GetDeniedResponse().GetStatus().GetCode() != 403 || !strings.Contains(resp.GetDeniedResponse().GetBody(), `"policy_denied"`) {
		t.Fatalf("bob: %v %v", resp, err)
	}
}

// An OPA-Envoy policy that overruns its time is denied internal_error,
// as in the main mode (TestFailClosedEvaluationBudget): past the
// evaluation budget, and past the caller's deadline (--check-timeout) when
// that comes first. The policy would allow after hours of work (10^10
// steps), so the test only returns if the deadline stops it.
func TestOPAEnvoyFailsClosedAtTheDeadline(t *testing.T) {
	const slow = `package envoy.authz

default allow := false

allow if count([1 | some x in numbers.range(1, 100000); some y in numbers.range(1, 100000); x > y]) > 0
`
	s := envoyServer(t, slow)
	s.Timeout = 20 * time.Millisecond
	if reason, status, _ := decide(t, s, req("GET", "/people", nil)); reason != "internal_error" || status != 500 {
		t.Errorf("evaluation budget: got %s/%d, want internal_error/500", reason, status)
	}

	s.Timeout = time.Hour
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	resp, err := s.Check(ctx, req("GET", "/people", nil))
	if err != nil {
		t.Fatal(err)
	}
	if reason := resp.GetDynamicMetadata().GetFields()["reason"].GetStringValue(); reason != "internal_error" || resp.GetDeniedResponse().GetStatus().GetCode() != 500 {
		t.Errorf("caller's deadline: got %s/%v, want internal_error/500", reason, resp.GetDeniedResponse().GetStatus().GetCode())
	}
}

// A policy that reads only the method is given only the method, yet a
// path, query or body the plugin would refuse is refused all the same
// (decoded, not built): never an allow.
func TestOPAEnvoyUnreadPartsStillDecoded(t *testing.T) {
	const methodOnly = `package envoy.authz

default allow := false

allow if input.attributes.request.http.method == "GET"
`
	s := envoyServer(t, methodOnly)
	for _, c := range []struct {
		name   string
		r      *authv3.CheckRequest
		reason string
	}{
		{"a good request", req("GET", "/people?x=1", nil), "ok"},
		{"a query that does not decode", req("GET", "/people?x=%zz", nil), "path_invalid"},
		{"a query with a semicolon", req("GET", "/people?x=1;y=2", nil), "path_invalid"},
		{"a path that does not decode", req("GET", "/people/%zz", nil), "path_invalid"},
		{"JSON that does not parse", withBody(req("GET", "/people", nil), `{"a": `, map[string]string{"content-type": "application/json"}), "request_invalid"},
		{"a form that does not decode", withBody(req("GET", "/people", nil), `a=%zz`, map[string]string{"content-type": "application/x-www-form-urlencoded"}), "request_invalid"},
	} {
		if reason, _, resp := decide(t, s, c.r); reason != c.reason {
			t.Errorf("%s: %s, want %s: %v", c.name, reason, c.reason, resp)
		}
	}
	// What was built: the method, nothing else.
	r := withBody(req("GET", "/people?x=1", nil), `{"a": 1}`, map[string]string{"content-type": "application/json"})
	var rq request
	e := s.Engines.Current()
	s.requestToInput(context.Background(), e, r, time.Now(), "d1", &rq)
	in, reason, err := envoyInput(r, &rq, e.Policy.InputPaths())
	if err != nil || reason != "" {
		t.Fatal(reason, err)
	}
	if got, want := in.String(), `{"attributes": {"request": {"http": {"method": "GET"}}}}`; got != want {
		t.Errorf("input %s, want %s", got, want)
	}
}
