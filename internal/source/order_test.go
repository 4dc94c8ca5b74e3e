package source

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/extauthz/extauthz/internal/check"
	"github.com/extauthz/extauthz/internal/clientip"
	"github.com/extauthz/extauthz/policies"
)

// A profile written in data.json renders its body in the order written,
// byte for byte, as the README's example says, whichever way data.json is
// read (streamed from the file, or whole when the streaming pass gives up,
// or from a bundle):
// the data sections were re-encoded with json.Marshal, which sorted every
// object's members ({"correlation":…,"hint":…,"status":…}).
func TestProfileBodyKeepsMemberOrder(t *testing.T) {
	const profile = `{"acme": {
    "request_id_header": "X-Correlation-Id",
    "body": {"ok": false, "problem": {"type": "{{code}}", "title": "{{message}}", "status": "{{status}}", "correlation": "{{request_id}}", "hint": "{{hint}}"}},
    "reasons": {
      "credentials_missing": {"status": 401, "code": "urn:acme:auth", "message": "Log in first", "vars": {"hint": "send X-API-Key"}}
    }}}`
	const want = `{"ok":false,"problem":{"type":"urn:acme:auth","title":"Log in first","status":401,"correlation":"c-1","hint":"send X-API-Key"}}`
	raw, err := fs.ReadFile(policies.FS, "data.json")
	if err != nil {
		t.Fatal(err)
	}
	var top map[string]map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil {
		t.Fatal(err)
	}
	top["extauthz"]["profiles"] = json.RawMessage(profile)
	data, err := json.Marshal(top) // RawMessage kept as written
	if err != nil {
		t.Fatal(err)
	}
	bundleOf := func(data string) string { // a bundle file holding data.json as written
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		tw := tar.NewWriter(zw)
		rego, _ := fs.ReadFile(policies.FS, "extauthz.rego")
		for _, f := range []struct {
			name string
			b    []byte
		}{{"/data.json", []byte(data)}, {"/extauthz.rego", rego}} {
			if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.b))}); err != nil {
				t.Fatal(err)
			}
			tw.Write(f.b)
		}
		tw.Close()
		zw.Close()
		p := filepath.Join(t.TempDir(), "bundle.tar.gz")
		if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for name, body := range map[string]string{
		"bundle":                              "",
		"streamed":                            string(data),
		"read whole (a big top-level member)": `{"padding": "` + strings.Repeat("x", 65<<20) + `", ` + string(data)[1:],
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			rego, _ := fs.ReadFile(policies.FS, "extauthz.rego")
			if err := os.WriteFile(filepath.Join(dir, "extauthz.rego"), rego, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, "data.json"), []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
			var l Loader = &Dir{Path: dir}
			if name == "bundle" {
				l = &BundleFile{Path: bundleOf(string(data))}
			}
			r, h := newReloader(l)
			if err := r.Reload(context.Background()); err != nil {
				t.Fatal(err)
			}
			srv := check.NewServer(h, clientip.Resolver{})
			srv.Timeout = 5 * time.Second
			resp, err := srv.Check(context.Background(), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
				Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: "127.0.0.1"}}}},
				Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/v1/orders",
					Headers: map[string]string{":method": "GET", ":path": "/v1/orders", "x-request-id": "c-1", "x-tenant-id": "42"}}},
				ContextExtensions: map[string]string{"profile": "acme"},
			}})
			if err != nil {
				t.Fatal(err)
			}
			if got := resp.GetDeniedResponse().GetBody(); got != want {
				t.Fatalf("body\n got %s\nwant %s", got, want)
			}
		})
	}
}
