package engine

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/authn/apikey"
	"github.com/extauthz/extauthz/internal/policy"
)

// dirSource writes a policy directory with data.json and loads it: the
// API keys are then streamed from the file.
func dirSource(t *testing.T, keys string) (*policy.Source, string) {
	t.Helper()
	dir := t.TempDir()
	rego := "package extauthz\ndecision := {\"allow\": false, \"reason\": \"x\"}\n"
	data := `{"extauthz": {"routes": [{"id": "a", "path": "/a"}], "api_keys": ` + keys + `}}`
	for name, s := range map[string]string{"p.rego": rego, "data.json": data} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	src, err := policy.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	return src, dir
}

// Bad API keys read from a file through the window: every error names
// the file and the record's field.
func TestStreamedKeysErrorsNameFileAndField(t *testing.T) {
	a, b := apikey.Hash("a"), apikey.Hash("b")
	huge := strings.Repeat("s", apikey.Window+1) // larger than the window: read by encoding/json
	for name, c := range map[string]struct{ keys, want string }{
		"duplicated digest": {`{"` + a + `": {"id": "a"}, "` + a + `": {"id": "b"}}`, `data.json: extauthz.api_keys["` + a[:12] + `…"]: listed twice`},
		"duplicated id":     {`{"` + a + `": {"id": "a"}, "` + b + `": {"id": "a"}}`, `data.json: extauthz.api_keys["` + b[:12] + `…"].id: "a" already used by`},
		"huge value":        {`{"` + a + `": {"id": "a", "subject": "` + huge + `", "status": "gone"}}`, `data.json: extauthz.api_keys["` + a[:12] + `…"].status: "gone" is not one of`},
		"wrong type":        {`{"` + a + `": {"id": 7}}`, `data.json: extauthz.api_keys["` + a[:12] + `…"]`},
	} {
		t.Run(name, func(t *testing.T) {
			src, dir := dirSource(t, c.keys)
			_, err := Build(context.Background(), src, Options{})
			if err == nil || !strings.Contains(err.Error(), dir+": "+c.want) {
				t.Fatalf("error %.300v\nwant it to contain %q", err, dir+": "+c.want)
			}
		})
	}
}

// A record larger than the window is still read (by encoding/json), with
// every field.
func TestStreamedHugeRecordLoads(t *testing.T) {
	a := apikey.Hash("a")
	n := apikey.Window/len(`"10.0.0.0/8",`) + 1 // a list of CIDRs larger than the window
	huge := strings.TrimSuffix(strings.Repeat(`"10.0.0.0/8",`, n), ",")
	src, _ := dirSource(t, `{"`+a+`": {"id": "a", "allowed_cidrs": [`+huge+`]}, "`+apikey.Hash("b")+`": {"id": "b"}}`)
	e, err := Build(context.Background(), src, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if r := e.Keys.Lookup("a", time.Now()); r.Identity == nil || len(r.Identity.AllowedCIDRs) != n {
		t.Fatalf("huge record not loaded whole: %+v", r.Status)
	}
	if e.Keys.Len() != 2 {
		t.Errorf("%d keys, want 2", e.Keys.Len())
	}
}

// data.json rewritten in place between the first pass and the indexing
// of its keys: refused (the next reload reads it again), never indexed
// under the first pass's digest.
func TestKeysChangedWhileReadAreRefused(t *testing.T) {
	src, dir := dirSource(t, `{"`+apikey.Hash("a")+`": {"id": "a"}}`)
	data := `{"extauthz": {"routes": [{"id": "a", "path": "/a"}], "api_keys": {"` + apikey.Hash("b") + `": {"id": "b"}}}}`
	f, err := os.OpenFile(filepath.Join(dir, "data.json"), os.O_WRONLY, 0) // the same file, in place
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(data); err != nil {
		t.Fatal(err)
	}
	f.Close()
	_, err = Build(context.Background(), src, Options{})
	if err == nil || !strings.Contains(err.Error(), "data.json changed while it was read") {
		t.Fatalf("error %v; want the file's change noticed", err)
	}
}
