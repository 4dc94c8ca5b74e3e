package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/extauthz/extauthz/internal/route"
)

const specs = "../../testdata/openapi/"

func TestRoutesImport(t *testing.T) {
	code, out, errOut := run(t, "", "routes", "import", specs+"petstore.yaml")
	if code != 0 {
		t.Fatalf("import (%d): %s", code, errOut)
	}
	if _, err := route.Parse(json.RawMessage(out), nil, nil); err != nil {
		t.Errorf("the output is not a route table: %v\n%s", err, out)
	}
	if !strings.Contains(out, `"path": "/v1/pets/{petId}"`) || !strings.Contains(errOut, "warning: the document declares no security") {
		t.Errorf("import:\n%s\n%s", out, errOut)
	}
	// Flags before and after the spec.
	code, out, errOut = run(t, "", "routes", "import", "--tenant-headers", specs+"demo.yaml", "--bearer-api-keys", "--base-path", "/api")
	var defs []route.Def
	if code != 0 || json.Unmarshal([]byte(out), &defs) != nil || errOut != "" {
		t.Fatalf("import with flags (%d):\n%s\n%s", code, out, errOut)
	}
	if d := defs[len(defs)-1]; d.ID != "create-post" || d.Path != "/api/v1/posts" || len(d.TenantHeaders) != 2 || strings.Join(d.Auth, ",") != "api_key_bearer,jwt" || !d.IdempotencyKey {
		t.Errorf("last route: %+v", d)
	}
	for _, c := range []struct {
		args []string
		code int
		err  string
	}{
		{[]string{"routes"}, 2, "Usage: extauthz routes import"},
		{[]string{"routes", "export"}, 2, `unknown subcommand "export"`},
		{[]string{"routes", "import"}, 2, "one SPEC file, got 0"},
		{[]string{"routes", "import", "a.yaml", "b.yaml"}, 2, "one SPEC file, got 2"},
		{[]string{"routes", "import", "--nope", specs + "petstore.yaml"}, 2, "flag provided but not defined: -nope"},
		{[]string{"routes", "import", "--tenant-headers", "--tenant-header-pattern", "(", specs + "demo.yaml"}, 1, "--tenant-header-pattern: error parsing regexp"},
		{[]string{"routes", "import", specs + "missing.yaml"}, 1, "no such file"},
		{[]string{"routes", "import", "../../policies/extauthz.rego"}, 1, "extauthz routes: ../../policies/extauthz.rego: openapi:"},
	} {
		code, _, errOut := run(t, "", c.args...)
		if code != c.code || !strings.Contains(errOut, c.err) {
			t.Errorf("%q: %d %s; want %d and %q", c.args, code, errOut, c.code, c.err)
		}
	}
	if code, out, _ := run(t, "", "help", "routes"); code != 0 || !strings.Contains(out, "--bearer-api-keys") {
		t.Errorf("help routes: %d %s", code, out)
	}
}

// validate --openapi against the embedded demo policy: the accurate demo
// spec passes; each difference is reported, and only it.
func TestValidateOpenAPI(t *testing.T) {
	code, out, _ := run(t, "", "validate", "--openapi", specs+"demo.yaml", "--bearer-api-keys")
	if code != 0 || !strings.Contains(out, "openapi "+specs+"demo.yaml: ok (12 operations") {
		t.Fatalf("accurate spec (%d):\n%s", code, out)
	}
	// Bearer tokens are JWTs unless --bearer-api-keys says otherwise.
	code, out, _ = run(t, "", "validate", "--openapi="+specs+"demo.yaml")
	if code != 1 || !strings.Contains(out, "FAIL (2 findings)") || !strings.Contains(out, `route "posts-read" accepts api_key_bearer, which the spec does not declare`) {
		t.Errorf("without --bearer-api-keys (%d):\n%s", code, out)
	}
	b, err := os.ReadFile(specs + "demo.yaml")
	if err != nil {
		t.Fatal(err)
	}
	doc := strings.Replace(string(b), "  /v1/calls:\n", "  /v1/refunds:\n    post:\n      operationId: createRefund\n      responses:\n        \"201\":\n          description: created\n  /v1/calls:\n", 1)
	doc = strings.Replace(doc, "        - oauth: [calls:read]\n", "        - oauth: [calls:read, calls:audio]\n", 1)
	spec := filepath.Join(t.TempDir(), "demo.json")
	if err := os.WriteFile(spec, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, _ = run(t, "", "validate", "--openapi", spec, "--bearer-api-keys")
	want := "openapi " + spec + ": FAIL (2 findings)\n" +
		"  GET /v1/calls (listCalls): route \"calls\" does not require scopes calls:audio, which the spec requires\n" +
		"  POST /v1/refunds (createRefund): no route: its requests are denied route_not_found\n"
	if code != 1 || !strings.Contains(out, want) {
		t.Errorf("extra operation and stronger scope (%d), want\n%s\ngot\n%s", code, want, out)
	}
	code, out, _ = run(t, "", "validate", "--openapi", specs+"missing.yaml")
	if code != 1 || !strings.Contains(out, "openapi "+specs+"missing.yaml: FAIL") {
		t.Errorf("missing spec (%d):\n%s", code, out)
	}
	if code, out, _ := run(t, "", "validate", "--openapi"); code != 1 || !strings.Contains(out, "config: FAIL") || !strings.Contains(out, "--openapi needs a value") {
		t.Errorf("--openapi without a value (%d):\n%s", code, out)
	}
}

// The routes imported from a spec, pasted into a policy, validate against
// that spec.
func TestImportedRoutesValidate(t *testing.T) {
	code, routes, errOut := run(t, "", "routes", "import", specs+"petstore3.yaml")
	if code != 0 {
		t.Fatalf("import (%d): %s", code, errOut)
	}
	b, err := os.ReadFile("../../policies/data.json")
	if err != nil {
		t.Fatal(err)
	}
	var data map[string]map[string]json.RawMessage
	if err := json.Unmarshal(b, &data); err != nil {
		t.Fatal(err)
	}
	data["extauthz"]["routes"] = json.RawMessage(routes)
	dir := t.TempDir()
	b, _ = json.Marshal(data)
	rego, err := os.ReadFile("../../policies/extauthz.rego")
	if err != nil {
		t.Fatal(err)
	}
	if os.WriteFile(filepath.Join(dir, "data.json"), b, 0o644) != nil || os.WriteFile(filepath.Join(dir, "extauthz.rego"), rego, 0o644) != nil {
		t.Fatal("writing the policy")
	}
	if !strings.Contains(errOut, "warning: the spec sends API keys in header api_key; the sidecar reads one header, extauthz.settings.api_key_header") {
		t.Errorf("no API-key header warning: %s", errOut)
	}
	code, out, _ := run(t, "", "validate", "--policy-dir", dir, "--openapi", specs+"petstore3.yaml")
	if code != 0 || !strings.Contains(out, "policy: ok") || !strings.Contains(out, ": ok (19 operations") ||
		!strings.Contains(out, `warning: the spec sends API keys in header "api_key", but the policy reads them from "x-api-key"`) {
		t.Errorf("validate (%d):\n%s", code, out)
	}
	// The demo policy's routes match none of the petstore's operations.
	code, out, _ = run(t, "", "validate", "--openapi", specs+"petstore3.yaml")
	if code != 1 || !strings.Contains(out, "FAIL (26 findings)") || !strings.Contains(out, `route "admin": matches no operation of the spec`) {
		t.Errorf("demo policy (%d):\n%s", code, out)
	}
}
