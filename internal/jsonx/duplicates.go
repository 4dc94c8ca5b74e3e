package jsonx

import (
	"bytes"
	"encoding/json"
	"strings"

	"github.com/extauthz/extauthz/internal/jsonscan"
)

// Duplicates reports a name given twice in one object of the JSON value
// raw, as an *Error at the second one's path; nil when there is none (or
// raw is not valid JSON: decoding says so). encoding/json keeps the last
// value silently, so {"status": "revoked", "status": "active"} would be an
// active key; in configuration that is a mistake to refuse, not a choice.
// With fold, names are compared as encoding/json matches struct fields
// (case-insensitively: "Status" is "status" again).
func Duplicates(raw []byte, fold bool) error {
	if !jsonscan.Valid(raw) {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if e := duplicates(dec, "", fold); e != nil {
		return e
	}
	return nil
}

func duplicates(dec *json.Decoder, path string, fold bool) *Error {
	tok, err := dec.Token()
	if err != nil {
		return nil
	}
	switch tok {
	case json.Delim('{'):
		var seen map[string]bool
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return nil
			}
			k, _ := kt.(string)
			n := k
			if fold {
				n = strings.ToLower(k)
			}
			if seen[n] {
				return &Error{Path: Field(path, k), Msg: "given twice in one object (the second would silently replace the first)"}
			}
			if seen == nil {
				seen = map[string]bool{}
			}
			seen[n] = true
			if e := duplicates(dec, Field(path, k), fold); e != nil {
				return e
			}
		}
		_, _ = dec.Token()
	case json.Delim('['):
		for i := 0; dec.More(); i++ {
			if e := duplicates(dec, Index(path, i), fold); e != nil {
				return e
			}
		}
		_, _ = dec.Token()
	}
	return nil
}
