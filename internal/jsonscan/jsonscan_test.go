package jsonscan

import (
	"encoding/json"
	"strings"
	"testing"
)

var seeds = []string{
	`{}`, `[]`, `""`, `0`, `-0.5e+10`, `01`, `1.`, `.5`, `-`, `1e`, `true`, `tru`, `nul`, `null `, ` {"a" : [1, "x", {"b": null}] } `,
	`{"a":1,}`, `[1,]`, `{"a"}`, `"\u12"`, `"\u12G4"`, `"\x"`, "\"a\tb\"", `"\ud800"`, "\"\xff\"", `{"a":1}{}`, `[` + strings.Repeat(`[`, 10001) + strings.Repeat(`]`, 10002),
	strings.Repeat(`[`, 10000) + strings.Repeat(`]`, 10000),
}

func TestValidMatchesEncodingJSON(t *testing.T) {
	for _, s := range seeds {
		if got, want := Valid([]byte(s)), json.Valid([]byte(s)); got != want {
			t.Errorf("Valid(%.40q) = %v, json.Valid = %v", s, got, want)
		}
	}
}

func FuzzValid(f *testing.F) {
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := Valid(b), json.Valid(b); got != want {
			t.Fatalf("Valid(%q) = %v, json.Valid = %v", b, got, want)
		}
	})
}
