package openapi

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.yaml.in/yaml/v3"

	"github.com/extauthz/extauthz/internal/route"
)

const testdata = "../../testdata/openapi"

func load(t *testing.T, file string, opts Options) *Spec {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(testdata, file))
	if err != nil {
		t.Fatal(err)
	}
	s, err := Load(b, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func loadString(t *testing.T, doc string, opts Options) *Spec {
	t.Helper()
	s, err := Load([]byte(doc), opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// routesJSON is the imported route table as MarshalRoutes prints it,
// decoded for comparison.
func routesJSON(t *testing.T, s *Spec) []map[string]any {
	t.Helper()
	b, err := MarshalRoutes(s.Routes())
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func decode(t *testing.T, s string) []map[string]any {
	t.Helper()
	var out []map[string]any
	if err := json.Unmarshal([]byte(s), &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func hasWarning(s *Spec, substr string) bool {
	return slices.ContainsFunc(s.Warnings, func(w string) bool { return strings.Contains(w, substr) })
}

// The classic petstore.yaml (OpenAPI 3.0): no security, a server base path.
func TestPetstore(t *testing.T) {
	s := load(t, "petstore.yaml", Options{})
	if s.Version != "3.0.0" || s.BasePath != "/v1" {
		t.Fatalf("version %q base path %q", s.Version, s.BasePath)
	}
	want := decode(t, `[
	  {"id": "v1-pets", "methods": ["GET", "POST"], "path": "/v1/pets", "public": true},
	  {"id": "show-pet-by-id", "methods": ["GET"], "path": "/v1/pets/{petId}", "public": true}
	]`)
	if d := cmp.Diff(want, routesJSON(t, s)); d != "" {
		t.Errorf("routes (-want +got):\n%s", d)
	}
	if !hasWarning(s, "declares no security") {
		t.Errorf("no warning that the spec declares no security: %q", s.Warnings)
	}
	// --base-path overrides the servers.
	none := ""
	s = load(t, "petstore.yaml", Options{BasePath: &none})
	if got := routesJSON(t, s)[1]["path"]; got != "/pets/{petId}" {
		t.Errorf("with base path \"\": %v", got)
	}
}

// The same document as JSON gives the same routes.
func TestPetstoreJSON(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(testdata, "petstore.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	js, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	fromJSON, err := Load(js, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(routesJSON(t, load(t, "petstore.yaml", Options{})), routesJSON(t, fromJSON)); d != "" {
		t.Errorf("JSON differs from YAML (-yaml +json):\n%s", d)
	}
}

func TestPetstoreExpanded(t *testing.T) {
	s := load(t, "petstore-expanded.yaml", Options{})
	want := decode(t, `[
	  {"id": "v2-pets", "methods": ["GET", "POST"], "path": "/v2/pets", "public": true},
	  {"id": "v2-pets-id", "methods": ["GET", "DELETE"], "path": "/v2/pets/{id}", "public": true}
	]`)
	if d := cmp.Diff(want, routesJSON(t, s)); d != "" {
		t.Errorf("routes (-want +got):\n%s", d)
	}
}

// The Swagger Petstore for OpenAPI 3.0: OAuth2 scopes, an API key in a
// header, alternatives, public store and user operations.
func TestPetstore3(t *testing.T) {
	s := load(t, "petstore3.yaml", Options{})
	got := routesJSON(t, s)
	byID := map[string]map[string]any{}
	for _, r := range got {
		byID[r["id"].(string)] = r
	}
	pets := `"auth": ["jwt"], "scopes": ["read:pets", "write:pets"]`
	want := decode(t, `[
	  {"id": "api-v3-pet", "methods": ["POST", "PUT"], "path": "/api/v3/pet", `+pets+`},
	  {"id": "find-pets-by-status", "methods": ["GET"], "path": "/api/v3/pet/findByStatus", `+pets+`},
	  {"id": "find-pets-by-tags", "methods": ["GET"], "path": "/api/v3/pet/findByTags", `+pets+`},
	  {"id": "get-pet-by-id", "methods": ["GET"], "path": "/api/v3/pet/{petId}", "auth": ["api_key", "jwt"], "scopes": ["read:pets", "write:pets"]},
	  {"id": "api-v3-pet-pet-id-post-delete", "methods": ["POST", "DELETE"], "path": "/api/v3/pet/{petId}", `+pets+`},
	  {"id": "upload-file", "methods": ["POST"], "path": "/api/v3/pet/{petId}/uploadImage", `+pets+`},
	  {"id": "get-inventory", "methods": ["GET"], "path": "/api/v3/store/inventory", "auth": ["api_key"]},
	  {"id": "place-order", "methods": ["POST"], "path": "/api/v3/store/order", "public": true},
	  {"id": "api-v3-store-order-order-id", "methods": ["GET", "DELETE"], "path": "/api/v3/store/order/{orderId}", "public": true},
	  {"id": "create-user", "methods": ["POST"], "path": "/api/v3/user", "public": true},
	  {"id": "create-users-with-list-input", "methods": ["POST"], "path": "/api/v3/user/createWithList", "public": true},
	  {"id": "login-user", "methods": ["GET"], "path": "/api/v3/user/login", "public": true},
	  {"id": "logout-user", "methods": ["GET"], "path": "/api/v3/user/logout", "public": true},
	  {"id": "api-v3-user-username", "methods": ["GET", "PUT", "DELETE"], "path": "/api/v3/user/{username}", "public": true}
	]`)
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("routes (-want +got):\n%s", d)
	}
	if len(s.Warnings) > 0 {
		t.Errorf("warnings: %q", s.Warnings)
	}
	// Its API keys travel in header api_key.
	if !slices.Equal(s.APIKeyHeaders, []string{"api_key"}) {
		t.Errorf("API-key headers: %q", s.APIKeyHeaders)
	}
	if w := s.APIKeyHeaderWarnings("x-api-key"); len(w) != 1 || !strings.Contains(w[0], `header "api_key", but the policy reads them from "x-api-key"`) {
		t.Errorf("header warnings: %q", w)
	}
	if w := s.APIKeyHeaderWarnings("API_KEY"); len(w) != 0 {
		t.Errorf("header warnings: %q", w)
	}
}

// OpenAPI 3.1 examples: scopes on a non-OAuth scheme; a document of
// webhooks only.
func TestOpenAPI31Examples(t *testing.T) {
	for _, bearerKeys := range []bool{false, true} {
		// bearerFormat jwt: a JWT even when bearer tokens may be API keys.
		s := load(t, "non-oauth-scopes.yaml", Options{BearerAPIKeys: bearerKeys})
		if s.Version != "3.1.0" {
			t.Fatalf("version %q", s.Version)
		}
		want := decode(t, `[{"id": "users", "methods": ["GET"], "path": "/users", "auth": ["jwt"], "scopes": ["public", "read:users"]}]`)
		if d := cmp.Diff(want, routesJSON(t, s)); d != "" {
			t.Errorf("bearer API keys %v: routes (-want +got):\n%s", bearerKeys, d)
		}
	}
	s := load(t, "webhook-example.yaml", Options{})
	if len(s.Ops) != 0 || len(routesJSON(t, s)) != 0 {
		t.Errorf("webhooks made routes: %+v", s.Ops)
	}
	if !hasWarning(s, "webhooks ignored (1)") {
		t.Errorf("warnings: %q", s.Warnings)
	}
}

// The demo API spec, with tenant headers and bearer API keys, imports to
// the demo policy's requirements (the policy routes whole prefixes, the
// import one route per path and requirement).
func TestDemoImport(t *testing.T) {
	s := load(t, "demo.yaml", Options{BearerAPIKeys: true, TenantHeaders: regexp.MustCompile(DefaultTenantHeaderPattern)})
	tenant := `"tenant_headers": [{"header": "X-Tenant-Id", "format": "positive_integer", "required": true}]`
	posts := `"tenant_headers": [{"header": "X-Workspace-Id", "dimension": "workspace", "required": true}, {"header": "X-Brand-Id", "dimension": "brand"}]`
	want := decode(t, `[
	  {"id": "health", "methods": ["GET"], "path": "/healthz", "public": true},
	  {"id": "list-tenants", "methods": ["GET"], "path": "/v1/admin/tenants", "auth": ["jwt"], "scopes": ["admin"]},
	  {"id": "delete-tenant", "methods": ["DELETE"], "path": "/v1/admin/tenants/{tenantId}", "auth": ["jwt"], "scopes": ["admin"]},
	  {"id": "list-calls", "methods": ["GET"], "path": "/v1/calls", "auth": ["api_key", "jwt"], "scopes": ["calls:read"]},
	  {"id": "get-call", "methods": ["GET"], "path": "/v1/calls/{callId}", "auth": ["api_key", "jwt"], "scopes": ["calls:read"]},
	  {"id": "list-orders", "methods": ["GET"], "path": "/v1/orders", "auth": ["api_key", "jwt"], "scopes": ["orders:read"], `+tenant+`},
	  {"id": "create-order", "methods": ["POST"], "path": "/v1/orders", "auth": ["api_key", "jwt"], "scopes": ["orders:write"], "idempotency_key": true, `+tenant+`},
	  {"id": "get-order", "methods": ["GET"], "path": "/v1/orders/{orderId}", "auth": ["api_key", "jwt"], "scopes": ["orders:read"], `+tenant+`},
	  {"id": "v1-orders-order-id-patch-delete", "methods": ["PATCH", "DELETE"], "path": "/v1/orders/{orderId}", "auth": ["api_key", "jwt"], "scopes": ["orders:write"], "idempotency_key": true, `+tenant+`},
	  {"id": "list-posts", "methods": ["GET"], "path": "/v1/posts", "auth": ["api_key_bearer", "jwt"], "scopes": ["posts:read"], `+posts+`},
	  {"id": "create-post", "methods": ["POST"], "path": "/v1/posts", "auth": ["api_key_bearer", "jwt"], "scopes": ["posts:write"], "idempotency_key": true, `+posts+`}
	]`)
	if d := cmp.Diff(want, routesJSON(t, s)); d != "" {
		t.Errorf("routes (-want +got):\n%s", d)
	}
	if len(s.Warnings) > 0 {
		t.Errorf("warnings: %q", s.Warnings)
	}
	if !slices.Equal(s.APIKeyHeaders, []string{"X-API-Key"}) || len(s.APIKeyHeaderWarnings("x-api-key")) != 0 {
		t.Errorf("API-key headers: %q", s.APIKeyHeaders)
	}
	// Without the flag, tenant headers stay out.
	s = load(t, "demo.yaml", Options{})
	for _, o := range s.Ops {
		if len(o.TenantHeaders) > 0 {
			t.Errorf("%s: tenant headers without the option", o.Name())
		}
	}
}

const schemes = `
components:
  securitySchemes:
    key: {type: apiKey, in: header, name: X-API-Key}
    queryKey: {type: apiKey, in: query, name: api_key}
    bearer: {type: http, scheme: bearer}
    jwtBearer: {type: http, scheme: bearer, bearerFormat: JWT}
    basic: {type: http, scheme: basic}
    oauth:
      type: oauth2
      flows: {clientCredentials: {tokenUrl: "https://idp.example/token", scopes: {a: a, b: b, c: c}}}
    oidc: {type: openIdConnect, openIdConnectUrl: "https://idp.example/.well-known/openid-configuration"}
    keysAsBearer: {type: http, scheme: bearer, x-extauthz-auth: [api_key_bearer]}
`

// doc is a 3.1 document with one GET /x operation whose security is sec
// ("" for none) under top-level security top ("" for none).
func doc(top, sec string) string {
	d := "openapi: 3.1.0\ninfo: {title: t, version: '1'}\n"
	if top != "" {
		d += "security: " + top + "\n"
	}
	d += "paths:\n  /x:\n    get:\n      operationId: getX\n"
	if sec != "" {
		d += "      security: " + sec + "\n"
	}
	d += "      responses: {'200': {description: ok}}\n" + schemes
	return d
}

func TestSecurityMapping(t *testing.T) {
	cases := []struct {
		name, top, sec string
		opts           Options
		public         bool
		auth, scopes   []string
		warn           string
	}{
		{name: "no security at all", public: true, warn: "declares no security"},
		{name: "security: [] is public", top: "[{key: []}]", sec: "[]", public: true},
		{name: "{} among the alternatives is public", sec: "[{key: []}, {}]", public: true},
		{name: "top-level is the default", top: "[{oauth: [a]}]", auth: []string{"jwt"}, scopes: []string{"a"}},
		{name: "the operation's own wins", top: "[{oauth: [a]}]", sec: "[{key: []}]", auth: []string{"api_key"}},
		{name: "api key in a header", sec: "[{key: []}]", auth: []string{"api_key"}},
		{name: "bearer is jwt", sec: "[{bearer: []}]", auth: []string{"jwt"}},
		{name: "bearer may carry API keys", sec: "[{bearer: []}]", opts: Options{BearerAPIKeys: true}, auth: []string{"api_key_bearer", "jwt"}},
		{name: "bearerFormat JWT stays jwt", sec: "[{jwtBearer: []}]", opts: Options{BearerAPIKeys: true}, auth: []string{"jwt"}},
		{name: "openIdConnect", sec: "[{oidc: [openid, b]}]", auth: []string{"jwt"}, scopes: []string{"b", "openid"}},
		{name: "x-extauthz-auth", sec: "[{keysAsBearer: [p]}]", auth: []string{"api_key_bearer"}, scopes: []string{"p"}},
		{name: "alternatives: kinds and scopes united", sec: "[{key: []}, {oauth: [b, a]}]", auth: []string{"api_key", "jwt"}, scopes: []string{"a", "b"}},
		{name: "alternatives with different scopes", sec: "[{oauth: [a]}, {oidc: [b]}]", auth: []string{"jwt"}, scopes: []string{"a", "b"}, warn: "ask different scopes"},
		{name: "schemes together", sec: "[{key: [], oauth: [a]}]", auth: []string{"api_key", "jwt"}, scopes: []string{"a"}, warn: "needs key and oauth together"},
		{name: "query API key is not checked", sec: "[{queryKey: []}, {oauth: [a]}]", auth: []string{"jwt"}, scopes: []string{"a"}, warn: `"queryKey" (apiKey in query) cannot be checked`},
		{name: "basic only", sec: "[{basic: []}]", warn: "no security scheme of this operation can be checked"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := loadString(t, doc(c.top, c.sec), c.opts)
			if len(s.Ops) != 1 {
				t.Fatalf("ops: %+v", s.Ops)
			}
			o := s.Ops[0]
			if o.Secured == c.public || !slices.Equal(o.Auth, c.auth) || !slices.Equal(o.Scopes, c.scopes) {
				t.Errorf("got secured=%v auth=%q scopes=%q; want public=%v auth=%q scopes=%q", o.Secured, o.Auth, o.Scopes, c.public, c.auth, c.scopes)
			}
			if c.warn != "" && !hasWarning(s, c.warn) {
				t.Errorf("no warning %q in %q", c.warn, s.Warnings)
			}
			if c.warn == "" && len(s.Warnings) > 0 {
				t.Errorf("warnings: %q", s.Warnings)
			}
		})
	}
}

// An operation no credential extauthz checks gets no route (its requests
// are denied route_not_found), and a warning says so.
func TestUncheckableGetsNoRoute(t *testing.T) {
	s := loadString(t, doc("", "[{basic: []}]"), Options{})
	if defs := s.Routes(); len(defs) != 0 {
		t.Errorf("routes: %+v", defs)
	}
	if !hasWarning(s, "no route emitted") {
		t.Errorf("warnings: %q", s.Warnings)
	}
}

func TestSecurityErrors(t *testing.T) {
	for sec, want := range map[string]string{
		"[{nosuch: []}]":  `security scheme "nosuch" is not in components.securitySchemes`,
		"[{badExt: []}]":  "x-extauthz-auth must list some of",
		"[{badExt2: []}]": "x-extauthz-auth must list some of",
	} {
		d := doc("", sec) + "    badExt: {type: http, scheme: bearer, x-extauthz-auth: [password]}\n" +
			"    badExt2: {type: http, scheme: bearer, x-extauthz-auth: api_key}\n"
		_, err := Load([]byte(d), Options{})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want %q", sec, err, want)
		}
	}
	if _, err := Load([]byte("swagger: '2.0'\ninfo: {title: t, version: '1'}\npaths: {}\n"), Options{}); err == nil {
		t.Error("a Swagger 2.0 document was read")
	}
	if _, err := Load([]byte("{not yaml"), Options{}); err == nil {
		t.Error("garbage was read")
	}
}

func TestTenantHeaders(t *testing.T) {
	d := `openapi: 3.0.3
info: {title: t, version: '1'}
security: [{key: []}]
paths:
  /a:
    parameters:
      - {name: X-Tenant-Id, in: header, required: false, schema: {type: string, format: uuid}}
      - {name: X-Org-Id, in: header, required: true, schema: {type: integer}}
      - {name: X-Request-Id, in: header, required: true, schema: {type: string}}
      - {name: X-Tenant-Id, in: query, required: true, schema: {type: string}}
    get:
      parameters:
        - {name: x-tenant-id, in: header, required: true, schema: {type: string, format: uuid}}
      responses: {'200': {description: ok}}
components:
  securitySchemes:
    key: {type: apiKey, in: header, name: X-API-Key}
`
	s := loadString(t, d, Options{TenantHeaders: regexp.MustCompile(DefaultTenantHeaderPattern)})
	want := []route.TenantHeader{
		{Header: "x-tenant-id", Dimension: "tenant", Format: "uuid", Required: true},
		{Header: "X-Org-Id", Dimension: "org", Format: "positive_integer", Required: true},
	}
	if d := cmp.Diff(want, s.Ops[0].TenantHeaders); d != "" {
		t.Errorf("tenant headers (-want +got):\n%s", d)
	}
	// Another pattern.
	s = loadString(t, d, Options{TenantHeaders: regexp.MustCompile(`^X-Request-Id$`)})
	if got := s.Ops[0].TenantHeaders; len(got) != 1 || got[0].Header != "X-Request-Id" || got[0].Dimension != "request" {
		t.Errorf("tenant headers: %+v", got)
	}
}

func TestPathsAndIDs(t *testing.T) {
	d := `openapi: 3.1.0
info: {title: t, version: '1'}
servers:
  - url: "https://{host}/api/{version}/"
    variables:
      host: {default: api.example}
      version: {default: v2}
paths:
  /:
    get: {operationId: root, responses: {'200': {description: ok}}}
  /files/{name}.json:
    get: {operationId: getHTTPFile, responses: {'200': {description: ok}}}
  /a:
    get: {operationId: "list things!", responses: {'200': {description: ok}}}
  /b:
    get: {operationId: default, responses: {'200': {description: ok}}}
  /c:
    get: {operationId: list_things, responses: {'200': {description: ok}}}
    post: {operationId: create, security: [{key: []}], responses: {'200': {description: ok}}}
  /d:
    get: {operationId: list-things, responses: {'200': {description: ok}}}
components:
  securitySchemes:
    key: {type: apiKey, in: header, name: X-API-Key}
`
	s := loadString(t, d, Options{})
	var got []string
	for _, r := range s.Routes() {
		got = append(got, r.ID+" "+strings.Join(r.Methods, ",")+" "+r.Path)
	}
	want := []string{
		"root GET /api/v2",
		"list-things GET /api/v2/a",
		"default-2 GET /api/v2/b",
		"list_things GET /api/v2/c",
		"create POST /api/v2/c",
		"list-things-2 GET /api/v2/d",
		"get-http-file GET /api/v2/files/{name}",
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("routes (-want +got):\n%s", d)
	}
	if !hasWarning(s, `segment "{name}.json" is partly templated`) {
		t.Errorf("warnings: %q", s.Warnings)
	}
}

func TestSanitize(t *testing.T) {
	for in, want := range map[string]string{
		"listPets":       "list-pets",
		"showPetById":    "show-pet-by-id",
		"getHTTPStatus":  "get-http-status",
		"find pet by id": "find-pet-by-id",
		"/v1/orders/id":  "v1-orders-id",
		"pets.list":      "pets.list",
		"--x--":          "x",
		"Ünïcode":        "n-code",
		"v2Beta":         "v2-beta",
	} {
		if got := sanitize(in); got != want {
			t.Errorf("sanitize(%q) = %q, want %q", in, got, want)
		}
	}
}
