package openapi

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/extauthz/extauthz/internal/route"
)

// demoTable is the shipped demo policy's route table.
func demoTable(t *testing.T) *route.Table {
	t.Helper()
	b, err := os.ReadFile("../../policies/data.json")
	if err != nil {
		t.Fatal(err)
	}
	var data struct {
		Extauthz struct {
			Routes       json.RawMessage `json:"routes"`
			DefaultRoute json.RawMessage `json:"default_route"`
		} `json:"extauthz"`
	}
	if err := json.Unmarshal(b, &data); err != nil {
		t.Fatal(err)
	}
	tb, err := route.Parse(data.Extauthz.Routes, data.Extauthz.DefaultRoute, nil)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

func findings(fs []Finding) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.String())
	}
	return out
}

func demoSpec(t *testing.T, edit func(string) string) *Spec {
	t.Helper()
	b, err := os.ReadFile(testdata + "/demo.yaml")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	if edit != nil {
		doc = edit(doc)
		if doc == string(b) {
			t.Fatal("the edit changed nothing")
		}
	}
	return loadString(t, doc, Options{BearerAPIKeys: true})
}

// replaceOnce replaces old, which must be in the document once.
func replaceOnce(t *testing.T, old, new string) func(string) string {
	return func(doc string) string {
		if n := strings.Count(doc, old); n != 1 {
			t.Fatalf("%q is in the document %d times", old, n)
		}
		return strings.Replace(doc, old, new, 1)
	}
}

// The accurate demo spec passes against the shipped demo policy.
func TestCompareDemo(t *testing.T) {
	if f := Compare(demoTable(t), demoSpec(t, nil)); len(f) > 0 {
		t.Errorf("findings on the accurate spec:\n%s", strings.Join(findings(f), "\n"))
	}
}

// Without --bearer-api-keys the spec's bearer scheme is JWTs only: the
// posts routes accept API keys as bearer tokens, which it does not declare.
func TestCompareDemoBearerIsJWT(t *testing.T) {
	b, _ := os.ReadFile(testdata + "/demo.yaml")
	s := loadString(t, string(b), Options{})
	want := []string{
		`GET /v1/posts (listPosts): route "posts-read" accepts api_key_bearer, which the spec does not declare (the spec: jwt)`,
		`POST /v1/posts (createPost): route "posts-write" accepts api_key_bearer, which the spec does not declare (the spec: jwt)`,
	}
	if d := cmp.Diff(want, findings(Compare(demoTable(t), s))); d != "" {
		t.Errorf("findings (-want +got):\n%s", d)
	}
}

// Each change to the accurate spec is reported, and only it.
func TestCompareDemoFindings(t *testing.T) {
	cases := []struct {
		name string
		edit func(string) string
		want []string
	}{
		{
			name: "an extra secured operation",
			edit: replaceOnce(t, "  /v1/calls:\n", `  /v1/refunds:
    post:
      operationId: createRefund
      security:
        - oauth: [orders:write]
      responses:
        "201":
          description: created
  /v1/calls:
`),
			want: []string{`POST /v1/refunds (createRefund): no route: its requests are denied route_not_found`},
		},
		{
			name: "a stronger scope",
			edit: replaceOnce(t, "      operationId: getOrder\n      security:\n        - apiKey: []\n        - oauth: [orders:read]\n",
				"      operationId: getOrder\n      security:\n        - apiKey: []\n        - oauth: [orders:read, orders:pii]\n"),
			want: []string{`GET /v1/orders/{orderId} (getOrder): route "orders-read" does not require scopes orders:pii, which the spec requires`},
		},
		{
			name: "a secured health check",
			edit: replaceOnce(t, "      summary: Liveness\n      security: []\n", "      summary: Liveness\n"),
			want: []string{`GET /healthz (health): route "health" is public, but the spec secures the operation (auth api_key, jwt)`},
		},
		{
			name: "admin through API keys too",
			edit: replaceOnce(t, "      operationId: listTenants\n      security:\n        - oauth: [admin]\n",
				"      operationId: listTenants\n      security:\n        - apiKey: []\n        - oauth: [admin]\n"),
			want: nil, // the route is stronger (JWT only): fine
		},
		{
			name: "calls through JWTs only",
			edit: replaceOnce(t, "      operationId: listCalls\n      security:\n        - apiKey: []\n        - oauth: [calls:read]\n",
				"      operationId: listCalls\n      security:\n        - oauth: [calls:read]\n"),
			want: []string{`GET /v1/calls (listCalls): route "calls" accepts api_key, which the spec does not declare (the spec: jwt)`},
		},
		{
			name: "no posts in the spec",
			edit: func(doc string) string {
				i, j := strings.Index(doc, "  /v1/posts:\n"), strings.Index(doc, "components:\n")
				return doc[:i] + doc[j:]
			},
			want: []string{
				`route "posts-read": matches no operation of the spec`,
				`route "posts-write": matches no operation of the spec`,
			},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := findings(Compare(demoTable(t), demoSpec(t, c.edit)))
			if d := cmp.Diff(c.want, got); d != "" {
				t.Errorf("findings (-want +got):\n%s", d)
			}
		})
	}
}

// A literal route beats the {param} of a spec path only when it names the
// same literal; a default route answers what no route matches.
func TestCompareMatching(t *testing.T) {
	tb, err := route.Parse(json.RawMessage(`[
	  {"id": "one", "methods": ["GET"], "path": "/pets/{id}", "auth": ["jwt"], "scopes": ["read"]},
	  {"id": "mine", "methods": ["GET"], "path": "/pets/mine", "public": true}
	]`), json.RawMessage(`{"auth": ["api_key"]}`), nil)
	if err != nil {
		t.Fatal(err)
	}
	s := loadString(t, `openapi: 3.0.3
info: {title: t, version: '1'}
security: [{oauth: [read]}]
paths:
  /pets/{petId}:
    get: {operationId: getPet, responses: {'200': {description: ok}}}
  /toys:
    get: {operationId: listToys, responses: {'200': {description: ok}}}
components:
  securitySchemes:
    oauth: {type: openIdConnect, openIdConnectUrl: "https://idp.example/.well-known/openid-configuration"}
`, Options{})
	want := []string{
		`GET /toys (listToys): only the default route, which does not require scopes read, which the spec requires`,
		`GET /toys (listToys): only the default route, which accepts api_key, which the spec does not declare (the spec: jwt)`,
		`route "mine": matches no operation of the spec`,
	}
	if d := cmp.Diff(want, findings(Compare(tb, s))); d != "" {
		t.Errorf("findings (-want +got):\n%s", d)
	}
}

// Every spec's imported routes pass validation against that spec.
func TestImportThenCompare(t *testing.T) {
	for _, f := range []string{"petstore.yaml", "petstore-expanded.yaml", "petstore3.yaml", "non-oauth-scopes.yaml", "demo.yaml"} {
		for _, opts := range []Options{{}, {BearerAPIKeys: true}} {
			s := load(t, f, opts)
			b, err := MarshalRoutes(s.Routes())
			if err != nil {
				t.Fatal(err)
			}
			tb, err := route.Parse(b, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			if fs := Compare(tb, s); len(fs) > 0 {
				t.Errorf("%s %+v: findings on its own routes:\n%s", f, opts, strings.Join(findings(fs), "\n"))
			}
		}
	}
}
