package source

import (
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/extauthz/extauthz/internal/authn"
	"github.com/extauthz/extauthz/policies"
)

// A jwks_file is part of the version that read it, wherever it lives: in a
// subdirectory of the policy directory, or in another volume (a Kubernetes
// Secret, swapped atomically). A changed file loads a new version, so a
// signing key removed from it stops verifying tokens; an unchanged one
// loads nothing. It used to be read once: the directory's fingerprint saw
// only its top-level files, and the removed key kept verifying until a
// restart.
func TestJWKSFileChangesLoadANewVersion(t *testing.T) {
	raw, err := os.ReadFile("../../testdata/demo_jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	token, err := os.ReadFile("../../testdata/demo.jwt")
	if err != nil {
		t.Fatal(err)
	}
	rotated := strings.Replace(string(raw), `"demo-2026"`, `"rotated-2027"`, 1) // the demo key withdrawn
	if rotated == string(raw) {
		t.Fatal("demo_jwks.json has no kid demo-2026")
	}
	for _, layout := range []string{"subdirectory", "another volume"} {
		t.Run(layout, func(t *testing.T) {
			dir := t.TempDir()
			var ref string
			var put func(body string)
			switch layout {
			case "subdirectory":
				ref = "keys/jwks.json"
				if err := os.Mkdir(filepath.Join(dir, "keys"), 0o755); err != nil {
					t.Fatal(err)
				}
				put = func(body string) {
					if err := os.WriteFile(filepath.Join(dir, ref), []byte(body), 0o644); err != nil {
						t.Fatal(err)
					}
				}
			default:
				vol := &configMapVolume{t: t, dir: t.TempDir()}
				ref = filepath.Join(vol.dir, "jwks.json")
				put = func(body string) { vol.write(map[string]string{"jwks.json": body}) }
			}
			put(string(raw))
			writePolicyWithJWKSFile(t, dir, ref)

			r, h := newReloader(&Dir{Path: dir})
			ctx := context.Background()
			verify := func() authn.Status {
				st, _ := h.Current().Tokens.Verify(ctx, strings.TrimSpace(string(token)))
				return st
			}
			if err := r.Reload(ctx); err != nil {
				t.Fatal(err)
			}
			v1 := h.Current()
			if st := verify(); st != authn.Valid {
				t.Fatalf("demo token with the demo key published: %s", st)
			}
			if err := r.Reload(ctx); err != nil || h.Current() != v1 {
				t.Fatalf("nothing changed, yet a new version loaded (%v)", err)
			}
			put(rotated)
			if err := r.Reload(ctx); err != nil {
				t.Fatal(err)
			}
			if h.Current() == v1 {
				t.Fatal("the JWKS file changed and no new version loaded")
			}
			if st := verify(); st == authn.Valid {
				t.Fatal("a token signed by the withdrawn key still verifies")
			}
			v2 := h.Current()
			if err := r.Reload(ctx); err != nil || h.Current() != v2 {
				t.Fatalf("nothing changed after the new version, yet another loaded (%v)", err)
			}
			// Every key withdrawn: the file lists none. The version loads
			// and the issuer's tokens are refused as invalid, not as keys
			// unavailable (a 503 invites a retry). It was refused as
			// holding no usable key, and the withdrawn key kept verifying.
			put(string(raw))
			if err := r.Reload(ctx); err != nil || verify() != authn.Valid {
				t.Fatalf("demo key published again: %v %s", err, verify())
			}
			put(`{"keys": []}`)
			if err := r.Reload(ctx); err != nil {
				t.Fatalf("a JWKS file withdrawing every key: %v", err)
			}
			if st := verify(); st == authn.Valid || st == authn.Unavailable {
				t.Fatalf("a token after every key was withdrawn: %s; want it refused as invalid", st)
			}
			// A file that is not a key set is a mistake: refused, the last
			// good version keeps serving.
			v3 := h.Current()
			put(`{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}`)
			if err := r.Reload(ctx); err == nil || !strings.Contains(err.Error(), "jwks_file") || h.Current() != v3 {
				t.Fatalf("a JWKS file of no usable key: %v", err)
			}
			put(`{}`)
			if err := r.Reload(ctx); err == nil || h.Current() != v3 {
				t.Fatalf("a JWKS file without keys: %v", err)
			}
		})
	}
}

// writePolicyWithJWKSFile writes the shipped policy to dir with its issuer's
// keys read from jwksFile.
func writePolicyWithJWKSFile(t *testing.T, dir, jwksFile string) {
	t.Helper()
	ents, err := fs.ReadDir(policies.FS, ".")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if n := e.Name(); strings.HasSuffix(n, ".rego") && !strings.HasSuffix(n, "_test.rego") {
			b, _ := fs.ReadFile(policies.FS, n)
			if err := os.WriteFile(filepath.Join(dir, n), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	b, err := fs.ReadFile(policies.FS, "data.json")
	if err != nil {
		t.Fatal(err)
	}
	var data map[string]any
	if err := json.Unmarshal(b, &data); err != nil {
		t.Fatal(err)
	}
	is := data["extauthz"].(map[string]any)["jwt"].(map[string]any)["issuers"].([]any)[0].(map[string]any)
	delete(is, "jwks")
	is["jwks_file"] = jwksFile
	out, _ := json.Marshal(data)
	if err := os.WriteFile(filepath.Join(dir, "data.json"), out, 0o644); err != nil {
		t.Fatal(err)
	}
}
