package policy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// inMemory replaces every Section in d by a BytesSection of its bytes, so
// that a streamed document compares with one decoded in memory.
func inMemory(t *testing.T, d map[string]any) map[string]any {
	t.Helper()
	if root, ok := d["extauthz"].(map[string]any); ok {
		for k, v := range root {
			if s, ok := v.(*Section); ok {
				b, err := s.Bytes()
				if err != nil {
					t.Fatal(err)
				}
				if s.Digest != BytesSection(b).Digest {
					t.Fatalf("section %s: digest is not the SHA-256 of its bytes %q", k, b)
				}
				root[k] = BytesSection(b)
			}
		}
	}
	return d
}

// sameStream checks that the streaming pass takes exactly what the
// in-memory fast path takes, with the same result.
func sameStream(t *testing.T, b []byte) {
	t.Helper()
	got, ok := decodeDataStream(bytes.NewReader(b), int64(len(b)), nil)
	want, wok := decodeDataFast(b, nil)
	if ok != wok {
		t.Fatalf("decodeDataStream(%q): ok %v, decodeDataFast ok %v", b, ok, wok)
	}
	if ok && !reflect.DeepEqual(inMemory(t, got), inMemory(t, want)) {
		t.Fatalf("decodeDataStream(%q):\n%#v\nfast:\n%#v", b, got, want)
	}
}

func TestDecodeDataStreamMatchesFast(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	alphabet := []byte(`{}[]":,\ nult0123456789-.eaxz` + "\t\xc3\xa9")
	seeds := append(slices.Clone(dataSeeds),
		`{"extauthz": {"api_keys": {}}}`, `{"extauthz": {"api_keys": null}}`, `{"extauthz": {"api_keys": [1]}}`,
		`{"extauthz": {"api_keys": {"a": {"id": "x"}, "a": {"id": "y"}}, "api_keys": {"b": 1}}}`)
	for _, s := range seeds {
		b := []byte(s)
		sameStream(t, b)
		for i := range b {
			sameStream(t, slices.Delete(slices.Clone(b), i, i+1))
			m := slices.Clone(b)
			m[i] = alphabet[r.IntN(len(alphabet))]
			sameStream(t, m)
		}
	}
}

// A data.json on disk is streamed: its API keys stay in the file (read
// again through the Section, which counts them), and every other section
// is decoded as before.
func TestLoadDirLeavesKeysInTheFile(t *testing.T) {
	dir := t.TempDir()
	var keys strings.Builder
	keys.WriteString("{")
	for i := range 1000 {
		if i > 0 {
			keys.WriteString(",\n")
		}
		fmt.Fprintf(&keys, `"%064x": {"id": "k%d"}`, i, i)
	}
	keys.WriteString("}")
	data := `{"extauthz": {"routes": [{"id": "r", "path": "/r"}], "api_keys": ` + keys.String() + `}, "other": [1]}`
	write(t, dir, "p.rego", "package extauthz\n")
	write(t, dir, "data.json", data)
	src, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if src.data == nil {
		t.Fatal("data.json was not streamed (read whole)")
	}
	sec, ok := src.Data["extauthz"].(map[string]any)["api_keys"].(*Section)
	if !ok {
		t.Fatalf("api_keys is %T, not a *Section", src.Data["extauthz"].(map[string]any)["api_keys"])
	}
	if sec.Count != 1000 || sec.Size != int64(keys.Len()) {
		t.Errorf("section: %d entries, %d bytes; want 1000, %d", sec.Count, sec.Size, keys.Len())
	}
	if b, err := sec.Bytes(); err != nil || string(b) != keys.String() {
		t.Errorf("section bytes differ from the file's (%v)", err)
	}
	if _, ok := src.Data["other"].([]any); !ok {
		t.Errorf("other: %#v", src.Data["other"])
	}
}

// Broken data.json on disk: the error names the file and, for a syntax
// error, its line and column, as when the file was read whole.
func TestLoadDirBadDataNamesFileAndLine(t *testing.T) {
	for name, data := range map[string]string{
		"truncated":       `{"extauthz": {"api_keys": {"` + strings.Repeat("a", 64) + `": {"id": "x"`,
		"trailing comma":  "{\"extauthz\": {\"api_keys\": {\n\"a\": {\"id\": \"x\"},\n}}}",
		"garbage after":   `{"extauthz": {"api_keys": {}}} x`,
		"unclosed string": `{"extauthz": {"api_keys": {"a": {"id": "x}}}}`,
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			write(t, dir, "p.rego", "package extauthz\n")
			write(t, dir, "data.json", data)
			_, err := LoadDir(dir)
			if err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "data.json")+": line ") {
				t.Fatalf("error %v; want one naming %s and a line", err, filepath.Join(dir, "data.json"))
			}
		})
	}
}

func write(t *testing.T, dir, name, s string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// A streamed section marshals as the file's JSON.
func TestSectionMarshalsAsItsJSON(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "p.rego", "package extauthz\n")
	write(t, dir, "data.json", `{"extauthz": {"api_keys": {"a": {"id": "x"}}}}`)
	src, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	b, err := json.Marshal(src.Data)
	if err != nil || string(b) != `{"extauthz":{"api_keys":{"a":{"id":"x"}}}}` {
		t.Fatalf("marshalled %s, %v", b, err)
	}
}

// A name given twice in one object of data.json is refused, naming where,
// on every decoding path (streamed from the file, in memory, slow): JSON
// would take the second silently, and a revoked key or a private route
// would not be what its first line says.
func TestLoadDirRefusesRepeatedNames(t *testing.T) {
	digest := strings.Repeat("a", 64)
	for data, want := range map[string]string{
		`{"extauthz": {"routes": [{"id": "admin", "path": "/a", "public": false, "public": true}]}}`: "extauthz.routes[0].public: given twice",
		`{"extauthz": {"tenants": {"7": {"allowed_cidrs": ["10.0.0.0/8"], "allowed_cidrs": []}}}}`:   "extauthz.tenants.7.allowed_cidrs: given twice",
		`{"extauthz": {"settings": {}, "settings": {"default_profile": "x"}}}`:                       "extauthz.settings: given twice",
		`{"extauthz": {"routes": []}, "extauthz": {"routes": []}}`:                                   "extauthz: given twice",
		`{"extauthz": {}, "other": {"a": 1, "a": 2}}`:                                                "other.a: given twice",
		`{"extauthz": {"api_keys": {"` + digest + `": {}}, "api_keys": {}}}`:                         "extauthz.api_keys: given twice",
	} {
		dir := t.TempDir()
		write(t, dir, "p.rego", "package extauthz\n")
		write(t, dir, "data.json", data)
		_, err := LoadDir(dir) // streamed from the file
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want %q", data, err, want)
		}
		if _, err := decodeData([]byte(data), nil); err == nil || !strings.Contains(err.Error(), want) { // in memory
			t.Errorf("decodeData(%s): error %v, want %q", data, err, want)
		}
	}
}

// Bytes that are not UTF-8 are refused, with the line: encoding/json would
// read them as U+FFFD, so a route id or a tenant would not be the file's.
func TestLoadDirRefusesInvalidUTF8(t *testing.T) {
	for _, data := range []string{
		"{\"extauthz\": {\"routes\": [\n{\"id\": \"r\xff\", \"path\": \"/a\"}]}}",
		"{\"extauthz\": {\"tenants\": {\"7\xc3\": {}}}}",
		"{\"x\xff\": 1, \"extauthz\": {}}",
	} {
		dir := t.TempDir()
		write(t, dir, "p.rego", "package extauthz\n")
		write(t, dir, "data.json", data)
		if _, err := LoadDir(dir); err == nil || !strings.Contains(err.Error(), "not valid UTF-8") || !strings.Contains(err.Error(), "line ") {
			t.Errorf("%q: error %v, want one naming the line and invalid UTF-8", data, err)
		}
	}
}
