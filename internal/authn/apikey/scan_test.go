package apikey

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// dump is a store's content in order, for comparing two stores.
func dump(s *Store) string {
	if s == nil {
		return "<nil>"
	}
	var b strings.Builder
	for i := range uint32(s.n) {
		e := s.rec(i)
		fmt.Fprintf(&b, "%x st=%d exp=%v/%d/%d id=%q sub=%q plan=%q ten=%v sc=%q cidr=%q\n", e.digest, e.status, e.hasExp, e.expSec, e.expNsec,
			s.str(e.keyID), s.str(e.subject), s.str(e.plan), s.tenantSets[e.tenants], s.lists[e.scopes], s.lists[e.cidrs])
	}
	return b.String()
}

func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

// slow parses raw with encoding/json only.
func slow(raw []byte) (*Store, error) {
	b := newBuilder(0)
	if err := parseSlow(bytes.NewReader(raw), int64(len(raw)), b, &options{}); err != nil {
		return nil, err
	}
	return b.finish()
}

// compare checks that Parse (the scanner) gives what encoding/json gives.
func compare(t *testing.T, raw []byte) {
	t.Helper()
	if len(raw) == 0 || string(raw) == "null" {
		return
	}
	want, werr := slow(raw)
	// The default window holds these inputs whole; a window of a few bytes
	// is refilled inside every record; one smaller than a record leaves it
	// to encoding/json's streaming decoder.
	for _, w := range []struct{ chunk, window int }{{1 << 20, Window}, {1, Window}, {3, Window}, {7, 7}, {16, 32}} {
		got, gerr := ParseReader(func() io.Reader { return bytes.NewReader(raw) }, int64(len(raw)), func(o *options) { o.chunk, o.window = w.chunk, w.window })
		if errString(gerr) != errString(werr) {
			t.Fatalf("input %q, window %d..%d:\nscanner error:  %v\nencoding/json: %v", raw, w.chunk, w.window, gerr, werr)
		}
		if dump(got) != dump(want) {
			t.Fatalf("input %q, window %d..%d:\nscanner:\n%s\nencoding/json:\n%s", raw, w.chunk, w.window, dump(got), dump(want))
		}
	}
}

var scanSeeds = []string{
	`{}`, ` { } `, `[]`, `{"a":1}`, `{`, `{"` + Hash("a") + `":{"id":"a"}}`,
	`{"` + Hash("a") + `":{"id":"a","subject":"s","tenants":["42"],"scopes":["r","w"],"expires_at":"2030-01-01T00:00:00Z","status":"revoked","allowed_cidrs":["10.0.0.0/8"],"plan":"free"},
	  "` + Hash("b") + `":{"id":"b","tenants":{"workspace":["w1"],"brand":["b1",7]},"scopes":[]}}`,
	`{"` + Hash("a") + `":{"ID":"a"}}`,
	`{"` + Hash("a") + `":{"id":"a","id":"b"}}`,
	`{"` + Hash("a") + `":{"id":null}}`,
	`{"` + Hash("a") + `":{"id":"a","tenants":null}}`,
	`{"` + Hash("a") + `":{"id":"a","scopes":null}}`,
	`{"` + Hash("a") + `":{"id":"a","scopes":"x"}}`,
	`{"` + Hash("a") + `":{"id":1}}`,
	`{"` + Hash("a") + `":null}`,
	`{"` + Hash("a") + `":5}`,
	`{"` + Hash("a") + `":{"id":"a\u0041\n","subject":"caf\u00e9 \ud83d\ude00 \xff"}}`,
	`{"` + Hash("a") + `":{"id":"a","colour":"red"}}`,
	`{"` + Hash("a") + `":{"id":"a"}} x`,
	`{"` + Hash("a") + `":{"id":"a"},}`,
	`{"` + Hash("a") + `":{"id":"a",}}`,
	`{"` + Hash("a") + `":{"id":"a","tenants":[1e5,-0.5,01]}}`,
	`{"` + Hash("a") + `":{"id":"a","tenants":[tru]}}`,
	`{"` + Hash("a") + `":{"id":"a"},"` + Hash("a") + `":{"id":"b"}}`,
	`{"` + Hash("a") + `":{"id":"a"},"` + Hash("b") + `":{"id":"a"}}`,
	`{"plain":{"id":"a","status":"x","expires_at":"y","allowed_cidrs":["1.2.3.4/40"],"tenants":"7"}}`,
	`{"\u0041":{"id":"a"}}`,
	"{\"" + Hash("a") + "\":{\"id\":\"a\tb\"}}",
	"{\"" + Hash("a") + "\":{\"id\":\"a\",\"subject\":\"s\xff\"}}",
}

func TestScanMatchesEncodingJSON(t *testing.T) {
	for _, s := range scanSeeds {
		compare(t, []byte(s))
	}
	// Mutations of valid inputs: every byte deleted, duplicated, replaced.
	r := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte(`{}[]":,\ nult0123456789-+.eE/abfrsuxyz` + "\t\x00\x7f\xc3\xa9")
	for _, s := range scanSeeds {
		b := []byte(s)
		for i := range b {
			compare(t, slices.Delete(slices.Clone(b), i, i+1))
			compare(t, slices.Insert(slices.Clone(b), i, b[i]))
			m := slices.Clone(b)
			m[i] = alphabet[r.IntN(len(alphabet))]
			compare(t, m)
		}
	}
}

func FuzzScan(f *testing.F) {
	for _, s := range scanSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		compare(t, raw)
	})
}
