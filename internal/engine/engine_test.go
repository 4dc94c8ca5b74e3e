package engine

import (
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/extauthz/extauthz/internal/authn/apikey"
	"github.com/extauthz/extauthz/internal/policy"
	"github.com/extauthz/extauthz/policies"
)

// demoSource is the shipped policy with its data changed by edit (applied
// to policies/data.json decoded as plain JSON).
func demoSource(t *testing.T, edit func(x map[string]any)) *policy.Source {
	t.Helper()
	src, err := policy.LoadFS(policies.FS, "pol")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := fs.ReadFile(policies.FS, "data.json")
	var data map[string]any
	if err := json.Unmarshal(b, &data); err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		edit(data["extauthz"].(map[string]any))
	}
	b, _ = json.Marshal(data)
	fsys := map[string]string{"extauthz.rego": src.Modules["extauthz.rego"], "data.json": string(b)}
	return loadMap(t, fsys)
}

func loadMap(t *testing.T, files map[string]string) *policy.Source {
	t.Helper()
	m := fstest.MapFS{}
	for k, v := range files {
		m[k] = &fstest.MapFile{Data: []byte(v)}
	}
	src, err := policy.LoadFS(m, "pol")
	if err != nil {
		t.Fatal(err)
	}
	return src
}

func build(t *testing.T, src *policy.Source) (*Engine, error) {
	t.Helper()
	e, err := Build(context.Background(), src, Options{})
	if e != nil {
		t.Cleanup(e.Close)
	}
	return e, err
}

func routes(x map[string]any) []any { return x["routes"].([]any) }

func identityHeaders(x map[string]any) map[string]any {
	return x["settings"].(map[string]any)["identity_headers"].(map[string]any)
}

func routeAt(x map[string]any, i int) map[string]any { return routes(x)[i].(map[string]any) }

// Typos in data that used to load and silently change behaviour are errors
// naming the file and the field path, with array indexes.
func TestTyposAreErrorsNamingFileAndField(t *testing.T) {
	readonly := apikey.Hash("xa_demo_readonly_K3n8Vb")
	cases := []struct {
		name string
		edit func(x map[string]any)
		want string
	}{
		{"unknown plan", func(x map[string]any) {
			x["api_keys"].(map[string]any)[readonly].(map[string]any)["plan"] = "startr"
		}, `pol: data.json: extauthz.api_keys["` + readonly[:12] + `…"].plan: unknown plan "startr" (extauthz.limits.plans: known: free, professional, starter)`},
		{"plan without limits", func(x map[string]any) { delete(x, "limits") },
			`.plan: unknown plan "starter" (extauthz.limits.plans: none defined)`},
		{"tenant CIDR", func(x map[string]any) {
			x["tenants"].(map[string]any)["7"].(map[string]any)["allowed_cidrs"] = []any{"10.0.0.0/8", "10.0.0.0/40"}
		}, `pol: data.json: extauthz.tenants["7"].allowed_cidrs[1]: not a CIDR: "10.0.0.0/40"`},
		{"tenant not an object", func(x map[string]any) { x["tenants"].(map[string]any)["9"] = "10.0.0.0/8" },
			`pol: data.json: extauthz.tenants["9"]: must be an object`},
		{"route method", func(x map[string]any) { routeAt(x, 3)["methods"] = []any{"GIT"} },
			`pol: data.json: extauthz.routes[3].methods[0]: unknown method "GIT"`},
		{"empty scope", func(x map[string]any) { routeAt(x, 1)["scopes"] = []any{"orders:read", ""} },
			`pol: data.json: extauthz.routes[1].scopes[1]: empty scope (route "orders-read")`},
		{"unknown route field", func(x map[string]any) { routeAt(x, 2)["scopse"] = []any{"x"} },
			`pol: data.json: extauthz.routes[2].scopse: unknown field (known: id, methods, path,`},
		{"unknown settings field", func(x map[string]any) { x["settings"].(map[string]any)["allow_emtpy"] = true },
			`pol: data.json: extauthz.settings.allow_emtpy: unknown field (known: default_profile, api_key_header,`},
		{"limits problem", func(x map[string]any) { x["limits"].(map[string]any)["headers"] = "nope" },
			`pol: data.json: extauthz.limits.headers: "nope" is not one of`},
		// Header names Envoy would act on, or could not set (a 500 on every allow).
		{"identity header a pseudo-header", func(x map[string]any) { identityHeaders(x)["subject"] = ":path" },
			`pol: data.json: extauthz.settings.identity_headers.subject: ":path" is a pseudo-header`},
		{"identity header host", func(x map[string]any) { identityHeaders(x)["kind"] = "Host" },
			`extauthz.settings.identity_headers.kind: "host" cannot be set on the upstream request`},
		{"identity header with a space", func(x map[string]any) { identityHeaders(x)["scopes"] = "X Sub" },
			`extauthz.settings.identity_headers.scopes: "x sub" is not a lower-case header name`},
		{"identity header twice", func(x map[string]any) { identityHeaders(x)["subject"] = "X-Auth-Tenant" },
			`extauthz.settings.identity_headers.tenant: "x-auth-tenant" is also identity_headers.subject`},
		{"identity header the API-key header", func(x map[string]any) { identityHeaders(x)["key_id"] = "x-api-key" },
			`extauthz.settings.identity_headers.key_id: "x-api-key" carries credentials`},
		{"API-key header with a space", func(x map[string]any) { x["settings"].(map[string]any)["api_key_header"] = "X API Key" },
			`extauthz.settings.api_key_header: "x api key" is not a header for API keys`},
		{"API-key header Authorization", func(x map[string]any) { x["settings"].(map[string]any)["api_key_header"] = "Authorization" },
			`extauthz.settings.api_key_header: "authorization" is not a header for API keys`},
		{"tenant header the API-key header", func(x map[string]any) {
			routeAt(x, 1)["tenant_headers"] = []any{map[string]any{"header": "X-API-Key"}}
		}, `extauthz.routes: route "orders-read": tenant_headers[0].header: "X-API-Key" is settings.api_key_header`},
		{"default_route tenant header the API-key header", func(x map[string]any) {
			x["default_route"] = map[string]any{"tenant_headers": []any{map[string]any{"header": "x-api-key"}}}
		}, `extauthz.routes: route "default": tenant_headers[0].header: "x-api-key" is settings.api_key_header`},
		{"tenant allowlist of a workspace written bare", func(x map[string]any) {
			x["tenants"].(map[string]any)["ws_1"] = map[string]any{"allowed_cidrs": []any{"10.0.0.0/8"}}
		}, `extauthz.tenants.ws_1: names tenant "ws_1" of dimension "tenant", which no key holds; keys hold it in dimension workspace: write "workspace:ws_1"`},
		{"tenant plan of a brand written bare", func(x map[string]any) {
			x["limits"].(map[string]any)["tenants"] = map[string]any{"br_1": "free"}
		}, `extauthz.limits.tenants.br_1: names tenant "br_1" of dimension "tenant", which no key holds; keys hold it in dimension brand: write "brand:br_1"`},
		{"tenant header Authorization", func(x map[string]any) {
			routeAt(x, 1)["tenant_headers"] = []any{map[string]any{"header": "Authorization"}}
		}, `extauthz.routes[1].tenant_headers[0].header: "Authorization" carries credentials`},
		{"scope with a space", func(x map[string]any) { routeAt(x, 1)["scopes"] = []any{"orders read"} },
			`extauthz.routes[1].scopes[0]: "orders read" is not a scope`},
		{"tenant dimension with a colon", func(x map[string]any) {
			routeAt(x, 1)["tenant_headers"] = []any{map[string]any{"header": "X-Tenant-Id", "dimension": "a:b"}}
		}, `extauthz.routes[1].tenant_headers[0].dimension: dimension "a:b": a dimension name must not contain ':'`},
		{"tenants key naming the default dimension", func(x map[string]any) { x["tenants"].(map[string]any)["tenant:42"] = map[string]any{} },
			`extauthz.tenants["tenant:42"]: "tenant:42": write a tenant of dimension "tenant" as its id alone: "42"`},
		{"limits.tenants key naming the default dimension", func(x map[string]any) {
			x["limits"].(map[string]any)["tenants"] = map[string]any{"tenant:42": "free"}
		}, `extauthz.limits.tenants["tenant:42"]: "tenant:42": write a tenant`},
		{"route path with a query", func(x map[string]any) { routeAt(x, 1)["path"] = "/v1/orders?x=1" },
			`extauthz.routes[1].path: segment "orders?x=1" has a character no canonical request path holds`},
		{"route path with a space", func(x map[string]any) { routeAt(x, 1)["path"] = "/v1/ord ers" },
			`segment "ord ers" has a character`},
		{"route path with a fragment", func(x map[string]any) { routeAt(x, 1)["path"] = "/v1/orders#x" },
			`segment "orders#x" has a character`},
		{"route quota for no route", func(x map[string]any) {
			x["limits"].(map[string]any)["routes"] = map[string]any{"orders-raed": map[string]any{"windows": []any{map[string]any{"limit": 1, "period": "second"}}}}
		}, `pol: data.json: extauthz.limits.routes.orders-raed: names no route in extauthz.routes`},
		{"jwt cache size", func(x map[string]any) { x["jwt"].(map[string]any)["cache_entries"] = 1e12 },
			`extauthz.jwt.cache_entries: 1000000000000 is outside [0, 1000000] (0: the default)`},
		{"jwt cache ttl", func(x map[string]any) { x["jwt"].(map[string]any)["cache_ttl_seconds"] = -1 },
			`extauthz.jwt.cache_ttl_seconds: -1 is outside [0, 86400]`},
		{"profile header with CR LF", func(x map[string]any) {
			x["profiles"] = map[string]any{"p": map[string]any{"extends": "default", "headers": map[string]any{"X-A": "a\r\nb"}}}
		}, `X-A: "a\r\nb" is not a valid header value`},
	}
	for _, c := range cases {
		_, err := build(t, demoSource(t, c.edit))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v\nwant %q", c.name, err, c.want)
		}
	}
	if _, err := build(t, demoSource(t, nil)); err != nil {
		t.Fatalf("shipped data: %v", err)
	}
}

// A typo in extauthz.jwt names the field under extauthz.jwt, as the other
// sections do.
func TestJWTTypoNamesTheField(t *testing.T) {
	for jwtSection, want := range map[string]string{
		`{"issuers": [{"issuer": "https://idp", "audiences": ["a"], "jwks_fil": "k.json"}]}`: `pol: data.json: extauthz.jwt.issuers[0].jwks_fil: unknown field (known: issuer, audiences, jwks_file,`,
		`{"issuers": {}}`: `pol: data.json: extauthz.jwt.issuers: must be an array, got an object`,
		`3`:               `pol: data.json: extauthz.jwt: must be an object, got 3`,
	} {
		src := demoSource(t, func(x map[string]any) {
			var v any
			_ = json.Unmarshal([]byte(jwtSection), &v)
			x["jwt"] = v
		})
		e, err := Build(context.Background(), src, Options{})
		if e != nil {
			e.Close()
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v\nwant %q", jwtSection, err, want)
		}
	}
}

// A version that would deny everything by mistake is refused unless
// settings.allow_empty says it is meant.
func TestServable(t *testing.T) {
	rego, _ := fs.ReadFile(policies.FS, "extauthz.rego")
	cases := []struct {
		name  string
		files map[string]string
		want  string // "" = servable
	}{
		{"shipped", nil, ""},
		{"no data.json", map[string]string{}, `pol: refused: no data.json`},
		{"empty object", map[string]string{"data.json": `{}`}, `pol: refused: no data.json`},
		{"empty extauthz", map[string]string{"data.json": `{"extauthz": {}}`}, `pol: data.json: refused: no routes (extauthz.routes is empty and there is no default_route) and no credentials`},
		{"no routes", map[string]string{"data.json": `{"extauthz": {"routes": [], "api_keys": {"` + apikey.Hash("k") + `": {"id": "k"}}}}`}, `refused: no routes`},
		{"default route only", map[string]string{"data.json": `{"extauthz": {"default_route": {"scopes": ["x"]}, "api_keys": {"` + apikey.Hash("k") + `": {"id": "k"}}}}`}, ""},
		{"no credentials", map[string]string{"data.json": `{"extauthz": {"routes": [{"id": "a", "path": "/a"}]}}`}, `refused: no credentials (no extauthz.api_keys and no extauthz.jwt.issuers)`},
		{"jwt only", map[string]string{"data.json": `{"extauthz": {"routes": [{"id": "a", "path": "/a"}], "jwt": {"issuers": [{"issuer": "x", "audiences": ["a"], "jwks": ` + demoJWKS + `}]}}}`}, ""},
		{"allowed empty", map[string]string{"data.json": `{"extauthz": {"settings": {"allow_empty": true}}}`}, ""},
	}
	for _, c := range cases {
		var src *policy.Source
		if c.files == nil {
			src = demoSource(t, nil)
		} else {
			c.files["extauthz.rego"] = string(rego)
			src = loadMap(t, c.files)
		}
		e, err := build(t, src)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		err = e.Servable()
		if (c.want == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
		if err != nil && c.want != `pol: refused: no data.json` && !strings.Contains(err.Error(), "allow_empty: true") {
			t.Errorf("%s: the error does not name the setting: %v", c.name, err)
		}
	}
}

// demoJWKS is the demo issuer's key set (testdata/demo_jwks.json).
var demoJWKS = func() string {
	b, err := os.ReadFile("../../testdata/demo_jwks.json")
	if err != nil {
		panic(err)
	}
	return string(b)
}()

// A reload whose API keys are byte for byte the same shares the serving
// engine's key store (one copy in memory, identities kept); other keys get
// their own. The progress callback sees every key.
func TestKeyStoreSharedAcrossIdenticalKeys(t *testing.T) {
	var seen int
	opts := Options{KeysProgress: func(keys, offset, total int) { seen = keys }}
	a, err := Build(context.Background(), demoSource(t, nil), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if seen != a.Keys.Len() || seen == 0 {
		t.Errorf("progress saw %d keys of %d", seen, a.Keys.Len())
	}
	b, err := Build(context.Background(), demoSource(t, func(x map[string]any) { routeAt(x, 0)["id"] = "renamed" }), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if a.Keys != b.Keys || a.Version == b.Version {
		t.Errorf("same keys, other routes: stores %p %p, versions %s %s", a.Keys, b.Keys, a.Version, b.Version)
	}
	c, err := Build(context.Background(), demoSource(t, func(x map[string]any) {
		x["api_keys"].(map[string]any)[apikey.Hash("new")] = map[string]any{"id": "new-key"}
	}), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Keys == a.Keys || c.Keys.Len() != a.Keys.Len()+1 {
		t.Errorf("other keys share the store: %d keys", c.Keys.Len())
	}
}

// settings.api_keys_store: checked with the rest of the data, each problem
// named; the Redis store refuses embedded keys beside it, takes the quotas'
// Redis address when it names none, and counts as credentials; versions
// with the same store share it.
func TestAPIKeysStoreSettings(t *testing.T) {
	_, err := build(t, demoSource(t, func(x map[string]any) {
		x["settings"].(map[string]any)["api_keys_store"] = map[string]any{"type": "redis", "timeout_ms": 0.5, "cache_size": -1, "prefix": "a b"}
	}))
	if err == nil {
		t.Fatal("a bad api_keys_store was accepted")
	}
	for _, want := range []string{"settings.api_keys_store.timeout_ms", "settings.api_keys_store.cache_size", "settings.api_keys_store.prefix", "settings.api_keys_store.addr: required", "extauthz.api_keys: must be absent"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	redisStore := func(x map[string]any) {
		delete(x, "api_keys")
		x["settings"].(map[string]any)["api_keys_store"] = map[string]any{"type": "redis"}
		x["limits"].(map[string]any)["backend"] = map[string]any{"type": "redis", "addr": "127.0.0.1:1"}
	}
	e, err := build(t, demoSource(t, redisStore))
	if err != nil {
		t.Fatal(err)
	}
	if e.Remote == nil || e.Remote.Config().Addr != "127.0.0.1:1" {
		t.Fatalf("remote store %+v", e.Remote)
	}
	if err := e.Servable(); err != nil {
		t.Errorf("a Redis key store is a credential source: %v", err)
	}
	e2, err := build(t, demoSource(t, redisStore))
	if err != nil {
		t.Fatal(err)
	}
	if e2.Remote != e.Remote {
		t.Error("two versions with the same api_keys_store do not share the store")
	}
	if e, err := build(t, demoSource(t, func(x map[string]any) {
		x["settings"].(map[string]any)["api_keys_store"] = map[string]any{"type": "embedded"}
	})); err != nil || e.Remote != nil || e.Keys.Len() == 0 {
		t.Errorf("embedded: %v", err)
	}
}

// settings.jwt_verify_cache: a size in [0, MaxJWTVerifyCache]; anything
// else refuses the version, naming the setting.
func TestJWTVerifyCacheSetting(t *testing.T) {
	for _, n := range []any{-1, MaxJWTVerifyCache + 1} {
		_, err := build(t, demoSource(t, func(x map[string]any) {
			x["settings"].(map[string]any)["jwt_verify_cache"] = n
		}))
		if err == nil || !strings.Contains(err.Error(), "settings.jwt_verify_cache") {
			t.Errorf("jwt_verify_cache %v: %v", n, err)
		}
	}
	e, err := build(t, demoSource(t, func(x map[string]any) {
		x["settings"].(map[string]any)["jwt_verify_cache"] = 1000
	}))
	if err != nil || e.Settings.JWTVerifyCache != 1000 {
		t.Errorf("jwt_verify_cache 1000: %v", err)
	}
}

// A route quota for default_route names it "default".
func TestDefaultRouteQuotaAccepted(t *testing.T) {
	src := demoSource(t, func(x map[string]any) {
		x["default_route"] = map[string]any{"scopes": []any{"orders:read"}}
		x["limits"].(map[string]any)["routes"] = map[string]any{"default": map[string]any{"windows": []any{map[string]any{"limit": 2, "period": "minute"}}}}
	})
	if _, err := build(t, src); err != nil {
		t.Fatal(err)
	}
}

// A JWKS fetched in plain http from another machine loads (a private
// network may serve one) but is named in the version's warnings; loopback
// and https are not.
func TestPlainHTTPJWKSURLIsAWarning(t *testing.T) {
	for url, warned := range map[string]bool{
		"http://idp.internal:8080/jwks": true,
		"http://10.1.2.3/jwks":          true,
		"HTTP://idp.example/jwks":       true,
		"https://idp.example/jwks":      false,
		"http://127.0.0.1:1/jwks":       false,
		"http://[::1]:1/jwks":           false,
		"http://localhost:1/jwks":       false,
	} {
		e, err := build(t, demoSource(t, func(x map[string]any) {
			is := x["jwt"].(map[string]any)["issuers"].([]any)[0].(map[string]any)
			delete(is, "jwks")
			is["jwks_url"] = url
		}))
		if err != nil {
			t.Fatalf("%s: %v", url, err)
		}
		want := "pol: data.json: extauthz.jwt.issuers[0].jwks_url: plain http to a host that is not loopback"
		if got := strings.Join(e.Warnings, "\n"); strings.Contains(got, want) != warned {
			t.Errorf("%s: warnings %q", url, got)
		}
	}
}

// A tenant header is checked in one dimension across the policy's routes:
// X-Workspace-Id verified as a tenant id on one route and as a workspace
// on another would reach the second's upstream as a verified workspace.
func TestTenantHeaderHasOneDimension(t *testing.T) {
	_, err := build(t, demoSource(t, func(x map[string]any) {
		routes := x["routes"].([]any)
		routes = append(routes, map[string]any{"id": "ws-as-tenant", "path": "/v1/ws", "auth": []any{"api_key"},
			"tenant_headers": []any{map[string]any{"header": "X-Workspace-Id"}}})
		x["routes"] = routes
	}))
	if err == nil || !strings.Contains(err.Error(), `route "ws-as-tenant": tenant_headers[0]: X-Workspace-Id is checked in dimension "tenant" here and "workspace" on another route`) {
		t.Errorf("one header, two dimensions: %v", err)
	}
}

// A tenant header cannot be an identity header: the client's value and the
// one the sidecar sets would share a name.
func TestTenantHeaderIsNotAnIdentityHeader(t *testing.T) {
	_, err := build(t, demoSource(t, func(x map[string]any) {
		x["routes"] = append(x["routes"].([]any), map[string]any{"id": "z", "path": "/v1/z", "auth": []any{"api_key"},
			"tenant_headers": []any{map[string]any{"header": "X-Auth-Tenant"}}})
	}))
	if err == nil || !strings.Contains(err.Error(), `route "z": tenant_headers[0].header: "X-Auth-Tenant" is an identity header`) {
		t.Errorf("x-auth-tenant as a tenant header: %v", err)
	}
}
