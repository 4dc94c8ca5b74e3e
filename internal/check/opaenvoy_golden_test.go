package check

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	_ "google.golang.org/protobuf/types/known/wrapperspb" // an Any in a fixture holds a StringValue

	"github.com/extauthz/extauthz/internal/policy"
)

// The plugin's input, taken from the plugin itself.
//
// testdata/opaenvoy/NAME.request.json is a CheckRequest (protojson) and
// NAME.plugin-input.json the input document the OPA-Envoy plugin built for
// it: the deny body of pluginEchoPolicy, json.marshal(input), as the plugin
// answered it, indented. They were produced by TestOPAEnvoyPluginGoldens
// with the plugin built from its public source (opa-envoy-plugin
// v1.19.1-envoy plus two dependency bumps, commit 07a1fd15b; OPA 1.19.1),
// outside this repository:
//
//	go build -o /tmp/opa-envoy-plugin ./cmd/opa-envoy-plugin   # in the plugin's checkout
//	OPA_ENVOY_PLUGIN_BIN=/tmp/opa-envoy-plugin go test ./internal/check -run TestOPAEnvoyPluginGoldens -update-plugin-goldens
//
// Without -update-plugin-goldens that test checks the stored files against
// the plugin given; without OPA_ENVOY_PLUGIN_BIN it is skipped.
// TestOPAEnvoyInputMatchesPlugin always runs: extauthz must build the same
// document (plus input.extauthz, its own).

var updatePluginGoldens = flag.Bool("update-plugin-goldens", false, "rewrite testdata/opaenvoy/*.plugin-input.json from the plugin at $OPA_ENVOY_PLUGIN_BIN")

const pluginEchoPolicy = `package envoy.authz

allow := {"allowed": false, "http_status": 403, "body": json.marshal(input)}
`

type goldenCase struct {
	name string
	req  *authv3.CheckRequest
}

func goldenCases(t *testing.T) []goldenCase {
	t.Helper()
	files, err := filepath.Glob("testdata/opaenvoy/*.request.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	var out []goldenCase
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var r authv3.CheckRequest
		if err := protojson.Unmarshal(b, &r); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out = append(out, goldenCase{strings.TrimSuffix(filepath.Base(f), ".request.json"), &r})
	}
	return out
}

func goldenPath(name string) string {
	return filepath.Join("testdata", "opaenvoy", name+".plugin-input.json")
}

// canonicalJSON re-encodes a JSON document with sorted keys and number
// literals kept as they are.
func canonicalJSON(t *testing.T, b []byte) string {
	t.Helper()
	v, err := ast.ValueFromReader(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("not JSON: %v\n%s", err, b)
	}
	return valueJSON(t, v)
}

func valueJSON(t *testing.T, v ast.Value) string {
	t.Helper()
	x, err := ast.JSON(v)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(x); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

// extauthz builds, for every fixture, exactly the input document the plugin
// built, input.extauthz aside.
func TestOPAEnvoyInputMatchesPlugin(t *testing.T) {
	e := envoyEngine(t, pluginEchoPolicy, `{"opa_envoy_path": "envoy/authz/allow"}`)
	s := newServer(t, e)
	for _, c := range goldenCases(t) {
		t.Run(c.name, func(t *testing.T) {
			want, err := os.ReadFile(goldenPath(c.name))
			if err != nil {
				t.Fatal(err)
			}
			var rq request
			s.requestToInput(context.Background(), e, c.req, testNow, "d1", &rq)
			in, reason, err := envoyInput(c.req, &rq, e.Policy.InputPaths())
			if err != nil || reason != "" {
				t.Fatalf("input refused: %s %v", reason, err)
			}
			obj, ok := in.(ast.Object)
			if !ok {
				t.Fatalf("input is a %T", in)
			}
			if obj.Get(kExtauthz) == nil {
				t.Error("input.extauthz is missing")
			}
			plugin := ast.NewObject()
			obj.Foreach(func(k, v *ast.Term) {
				if !k.Equal(kExtauthz) {
					plugin.Insert(k, v)
				}
			})
			if got, want := valueJSON(t, plugin), canonicalJSON(t, want); got != want {
				t.Errorf("input differs from the plugin's\n--- extauthz\n%s\n--- plugin\n%s", got, want)
			}
		})
	}
}

// TestOPAEnvoyPluginGoldens runs the plugin binary at $OPA_ENVOY_PLUGIN_BIN
// with pluginEchoPolicy and checks (or, with -update-plugin-goldens,
// rewrites) the stored input documents.
func TestOPAEnvoyPluginGoldens(t *testing.T) {
	bin := os.Getenv("OPA_ENVOY_PLUGIN_BIN")
	if bin == "" {
		t.Skip("OPA_ENVOY_PLUGIN_BIN is not set: the plugin is built outside the repository")
	}
	dir := t.TempDir()
	pol := filepath.Join(dir, "echo.rego")
	if err := os.WriteFile(pol, []byte(pluginEchoPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "run", "--server", "--addr", freeAddr(t),
		"--set", "plugins.envoy_ext_authz_grpc.addr="+addr,
		"--set", "plugins.envoy_ext_authz_grpc.path=envoy/authz/allow",
		"--set", "decision_logs.console=false", pol)
	var stderr bytes.Buffer
	cmd.Stderr, cmd.Stdout = &stderr, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := authv3.NewAuthorizationClient(conn)
	check := func(r *authv3.CheckRequest) (*authv3.CheckResponse, error) {
		return c.Check(ctx, r, grpc.WaitForReady(true))
	}
	for _, gc := range goldenCases(t) {
		resp, err := check(gc.req)
		if err != nil {
			t.Fatalf("%s: %v\nplugin output:\n%s", gc.name, err, stderr.String())
		}
		body := resp.GetDeniedResponse().GetBody()
		if body == "" {
			t.Fatalf("%s: the plugin answered no input: %v", gc.name, resp)
		}
		var indented bytes.Buffer
		if err := json.Indent(&indented, []byte(body), "", "  "); err != nil {
			t.Fatalf("%s: %v", gc.name, err)
		}
		indented.WriteByte('\n')
		if *updatePluginGoldens {
			if err := os.WriteFile(goldenPath(gc.name), indented.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(goldenPath(gc.name))
		if err != nil {
			t.Fatal(err)
		}
		if got, want := canonicalJSON(t, indented.Bytes()), canonicalJSON(t, want); got != want {
			t.Errorf("%s: the plugin's input differs from the stored one\n--- plugin\n%s\n--- stored\n%s", gc.name, got, want)
		}
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return fmt.Sprint(l.Addr())
}

// Only the parts of the input a policy can read are built
// (policy.InputPaths): a policy that echoes what it reads gets the same
// answer from that input as from the whole one, for every fixture.
func TestOPAEnvoyInputOnlyWhatIsRead(t *testing.T) {
	const echo = `package envoy.authz

import input.attributes.request.http as http_request

read := {
	"method": http_request.method,
	"user": [x | x := http_request.headers["x-user"]],
	"ct": [x | x := http_request.headers["content-type"]],
	"path": input.parsed_path,
	"query": input.parsed_query,
	"body": input.parsed_body,
	"time": [x | x := input.attributes.request.time],
	"port": [x | x := input.attributes.source.address.socketAddress.portValue],
	"sub": [x | x := input.attributes.metadataContext.filterMetadata["envoy.filters.http.jwt_authn"].payload.sub],
	"route": [x | x := input.attributes.routeMetadataContext.filterMetadata.route],
	"raw": [x | x := input.attributes.request.http.headerMap.headers[_].key],
	"ce": [x | x := input.attributes.contextExtensions],
	"sp": [x | x := input.source_principal],
}

allow := {"allowed": false, "body": json.marshal(read)}
`
	e := envoyEngine(t, echo, `{"opa_envoy_path": "envoy/authz/allow"}`)
	if e.Policy.InputPaths().All() {
		t.Fatal("the policy reads parts of input, not all of it")
	}
	s := newServer(t, e)
	for _, c := range goldenCases(t) {
		var rq request
		s.requestToInput(context.Background(), e, c.req, testNow, "d1", &rq)
		var bodies [2]string
		for i, sel := range []*policy.InputPaths{e.Policy.InputPaths(), policy.AllInput()} {
			in, reason, err := envoyInput(c.req, &rq, sel)
			if err != nil || reason != "" {
				t.Fatalf("%s: input refused: %s %v", c.name, reason, err)
			}
			out, err := e.Policy.Eval(context.Background(), in)
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			bodies[i] = out.Envoy.Body
		}
		if bodies[0] != bodies[1] {
			t.Errorf("%s: the policy read\n%s\nfrom the built parts, and\n%s\nfrom the whole input", c.name, bodies[0], bodies[1])
		} else {
			t.Logf("%s: %s", c.name, bodies[0])
		}
	}
}
