package policy

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/open-policy-agent/opa/v1/ast"
)

func compile(t *testing.T, rego string) (*Engine, error) {
	t.Helper()
	src := &Source{Origin: "dir", Modules: map[string]string{"p.rego": rego}}
	return Compile(context.Background(), src, map[string]any{})
}

func TestPurity(t *testing.T) {
	cases := []struct {
		name, rego string
		pure       bool
		why        string
	}{
		{"facts only", "package extauthz\nimport input.extauthz as f\ndecision := {\"allow\": false, \"reason\": f.credential.status}", true, ""},
		{"data is fine", "package extauthz\ndecision := data.x", true, ""},
		{"raw headers", "package extauthz\ndecision := input.attributes.request.http.headers", false, "reads input.attributes"},
		{"request id", "package extauthz\ndecision := input.extauthz.request_id", false, "reads input.extauthz.request_id"},
		{"whole facts", "package extauthz\ndecision := input.extauthz", false, "reads input.extauthz"},
		{"dynamic field", "package extauthz\ndecision := input.extauthz[k] if some k", false, "reads input.extauthz["},
		{"time", "package extauthz\ndecision := time.now_ns()", false, "calls time.now_ns"},
		{"http.send", "package extauthz\ndecision := http.send({\"method\": \"get\", \"url\": \"http://127.0.0.1:1\"})", false, "calls http.send"},
		// input itself as a value reads every part of the request.
		{"json.marshal(input)", "package extauthz\ndecision := json.marshal(input)", false, "reads input"},
		{"object.get(input, ...)", "package extauthz\ndecision := object.get(input, [\"attributes\", \"request\"], {})", false, "reads input"},
		{"walk(input)", "package extauthz\ndecision := [p | walk(input, [p, _])]", false, "reads input"},
		{"x := input", "package extauthz\ndecision := x.attributes if x := input", false, "reads input"},
		{"some in input", "package extauthz\ndecision := [k | some k, _ in input]", false, "reads input"},
		{"every in input", "package extauthz\ndecision := true if every k, _ in input { k == \"extauthz\" }", false, "reads input"},
		{"object.keys(input)", "package extauthz\ndecision := object.keys(input)", false, "reads input"},
		{"data indexed by input", "package extauthz\ndecision := data.x[input]", false, "reads input"},
		{"input in a function", "package extauthz\nf(x) := object.get(x, \"parsed_path\", [])\ndecision := f(input)", false, "reads input"},
		{"object.get on the facts", "package extauthz\ndecision := object.get(input.extauthz, \"request_id\", \"\")", false, "reads input.extauthz"},
		{"with", "package extauthz\nx := input.extauthz.browser\ndecision := y if {\n\ty := x with input.extauthz.browser as true\n}", false, "uses with"},
	}
	for _, c := range cases {
		e, err := compile(t, c.rego)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		p := e.Purity()
		if p.Pure != c.pure || !strings.Contains(p.Why, c.why) {
			t.Errorf("%s: %+v, want pure=%v why~%q", c.name, p, c.pure, c.why)
		}
	}
	e, _ := compile(t, "package extauthz\ndecision := {\"p\": input.extauthz.path, \"m\": input.extauthz.method}")
	if p := e.Purity(); !p.Pure || !p.ReadsPath || !p.ReadsMethod {
		t.Errorf("path/method: %+v", p)
	}
}

func TestCompileErrorsNameFileAndLine(t *testing.T) {
	_, err := compile(t, "package extauthz\n\ndecision := {\"allow\": true\n")
	if err == nil || !strings.Contains(err.Error(), "dir/p.rego:") {
		t.Errorf("parse error: %v", err)
	}
	_, err = compile(t, "package extauthz\n\ndecision := undefined_thing\n")
	if err == nil || !strings.Contains(err.Error(), "dir/p.rego:3") || !strings.Contains(err.Error(), "undefined_thing") {
		t.Errorf("compile error: %v", err)
	}
}

func TestLoadFS(t *testing.T) {
	fsys := fstest.MapFS{
		"a.rego":      {Data: []byte("package extauthz\n")},
		"a_test.rego": {Data: []byte("package extauthz_test\n")},
		"data.json":   {Data: []byte("{\n  \"extauthz\": {\n    \"routes\": [1,]\n  }\n}")},
	}
	_, err := LoadFS(fsys, "pol")
	if err == nil || !strings.Contains(err.Error(), "pol/data.json: line 3") {
		t.Errorf("bad JSON: %v", err)
	}
	fsys["data.json"] = &fstest.MapFile{Data: []byte(`{"extauthz": {"n": 12345678901234567890}}`)}
	src, err := LoadFS(fsys, "pol")
	if err != nil || len(src.Modules) != 1 || len(src.Tests) != 1 {
		t.Fatalf("%v %+v", err, src)
	}
	if _, err := LoadFS(fstest.MapFS{}, "empty"); err == nil || !strings.Contains(err.Error(), "no .rego files") {
		t.Errorf("empty dir: %v", err)
	}
}

func TestEvalShapes(t *testing.T) {
	cases := map[string]string{
		"package extauthz\n":              "undefined",
		"package extauthz\ndecision := 1": "not an object",
		"package extauthz\ndecision := {\"allow\": 1, \"reason\": \"ok\"}":                               "allow is not a boolean",
		"package extauthz\ndecision := {\"allow\": true}":                                                "reason is not a string",
		"package extauthz\ndecision := {\"allow\": true, \"reason\": \"ok\", \"details\": {\"a\": [1]}}": "details.a is not a string",
		// headers Envoy could not set (a bare 500) or that would change the request decided on
		"package extauthz\ndecision := {\"allow\": true, \"reason\": \"ok\", \"headers\": {\"x-a\": \"a\\r\\nx-injected: 1\"}}": "control character",
		"package extauthz\ndecision := {\"allow\": true, \"reason\": \"ok\", \"headers\": {\"x bad\": \"v\"}}":                  "not a lower-case header name",
		"package extauthz\ndecision := {\"allow\": true, \"reason\": \"ok\", \"headers\": {\":path\": \"/admin\"}}":             "pseudo-header",
		"package extauthz\ndecision := {\"allow\": true, \"reason\": \"ok\", \"headers\": {\"Host\": \"evil\"}}":                "cannot be set",
	}
	for rego, want := range cases {
		e, err := compile(t, rego)
		if err != nil {
			t.Fatal(err)
		}
		_, err = e.Eval(context.Background(), ast.NewObject())
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", rego, err, want)
		}
	}
	e, _ := compile(t, "package extauthz\ndecision := {\"allow\": false, \"reason\": \"scope_missing\", \"variant\": \"v\", \"details\": {\"scope\": \"a b\", \"n\": 3}}")
	out, err := e.Eval(context.Background(), ast.NewObject())
	if err != nil || out.Reason != "scope_missing" || out.Variant != "v" || out.Details["scope"] != "a b" || out.Details["n"] != "3" {
		t.Errorf("%+v %v", out, err)
	}
}

// A Kubernetes ConfigMap volume: dot-entries skipped, file symlinks
// followed, everything read from the directory ..data points at.
func TestLoadDirConfigMapLayout(t *testing.T) {
	dir := t.TempDir()
	ts := filepath.Join(dir, "..2026_12_04_10_00_00.1")
	if err := os.Mkdir(ts, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(ts, "p.rego"), []byte("package extauthz\ndecision := 1\n"), 0o644)
	os.WriteFile(filepath.Join(ts, "data.json"), []byte(`{"extauthz": {"routes": []}}`), 0o644)
	os.Symlink(filepath.Base(ts), filepath.Join(dir, "..data"))
	for _, n := range []string{"p.rego", "data.json"} {
		os.Symlink(filepath.Join("..data", n), filepath.Join(dir, n))
	}
	os.WriteFile(filepath.Join(dir, ".editor.rego"), []byte("not rego"), 0o644)
	os.Symlink("..data", filepath.Join(dir, "sub.rego")) // a symlink to a directory is skipped
	src, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(src.Modules) != 1 || src.Modules["p.rego"] == "" || src.Data["extauthz"] == nil || src.Origin != dir {
		t.Errorf("loaded %+v", src)
	}
	// Without ..data: through the file symlinks.
	plain := t.TempDir()
	for _, n := range []string{"p.rego", "data.json"} {
		os.Symlink(filepath.Join(ts, n), filepath.Join(plain, n))
	}
	os.Symlink(ts, filepath.Join(plain, "..2026_dir"))
	if src, err := LoadDir(plain); err != nil || len(src.Modules) != 1 || src.Data["extauthz"] == nil {
		t.Errorf("symlinked files: %+v, %v", src, err)
	}
}

// A builtin that fails fails the evaluation (a deny), never just its
// expression: under OPA's default the failing deny rule below would be
// undefined and the default allow would stand.
func TestBuiltinErrorsFailTheEvaluation(t *testing.T) {
	for _, cond := range []string{
		`net.cidr_contains(data.blocked, "127.0.0.1")`,
		`extauthz.client_in([data.blocked], "127.0.0.1")`,
		`to_number(data.blocked) > 0`,
		`regex.match("(", data.blocked)`,
		`json.unmarshal(data.blocked).x`,
	} {
		rego := "package extauthz\ndefault decision := {\"allow\": true, \"reason\": \"ok\"}\ndecision := {\"allow\": false, \"reason\": \"ip_not_allowed\"} if " + cond + "\n"
		e := compileWith(t, rego, map[string]any{"blocked": "127.0.0.0/88"})
		out, err := e.Eval(context.Background(), ast.NewObject())
		if err == nil {
			t.Errorf("%s with a bad argument: %+v, want an evaluation error", cond, out)
		}
	}
	e, err := CompileOPAEnvoy(context.Background(), &Source{Origin: "dir", Modules: map[string]string{"p.rego": "package envoy.authz\ndefault allow := false\nallow if not deny\ndeny if net.cidr_contains(data.blocked, \"127.0.0.1\")\n"}},
		map[string]any{"blocked": "127.0.0.1"}, "envoy/authz/allow")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := e.Eval(context.Background(), ast.NewObject()); err == nil {
		t.Errorf("OPA-Envoy policy whose deny rule fails: %+v, want an evaluation error", out)
	}
}
