package jsonx

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"

	"github.com/extauthz/extauthz/internal/jsonscan"
)

// Duplicates reports a name given twice in one object of the JSON value
// raw, as an *Error at the second one's path; nil when there is none (or
// raw is not valid JSON: decoding says so). encoding/json keeps the last
// value silently, so {"status": "revoked", "status": "active"} would be an
// active key; in configuration that is a mistake to refuse, not a choice.
// Names are compared exactly (see DuplicatesOf for struct targets).
func Duplicates(raw []byte) error { return DuplicatesOf(raw, nil) }

// DuplicatesOf is Duplicates for raw decoded into a value of type t: the
// members of an object decoded into a struct are compared as encoding/json
// matches struct fields, case-insensitively ("Status" is "status" again);
// those of a map, or of anything untyped, exactly.
func DuplicatesOf(raw []byte, t reflect.Type) error {
	if !jsonscan.Valid(raw) {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if e := duplicates(dec, t); e != nil {
		return e
	}
	return nil
}

const dupMsg = "given twice in one object (the second would silently replace the first)"

// duplicates checks the value dec is at; the path of a duplicate is built
// on the way back up (nothing is formatted unless one is found).
func duplicates(dec *json.Decoder, t reflect.Type) *Error {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t != nil && (t.Implements(unmarshalerType) || reflect.PointerTo(t).Implements(unmarshalerType)) {
		t = nil // it decodes itself: its members are compared exactly
	}
	tok, err := dec.Token()
	if err != nil {
		return nil
	}
	switch tok {
	case json.Delim('{'):
		var fs *fields
		var elem reflect.Type
		if t != nil {
			switch t.Kind() {
			case reflect.Struct:
				fs = fieldsOf(t)
			case reflect.Map:
				elem = t.Elem()
			}
		}
		var seen map[string]bool
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return nil
			}
			k, _ := kt.(string)
			n, child := k, elem
			if fs != nil {
				n, child = strings.ToLower(k), nil
				if f := fs.match(k); f != nil {
					child = f.typ
				}
			}
			if seen[n] {
				return &Error{Path: Field("", k), Msg: dupMsg}
			}
			if seen == nil {
				seen = map[string]bool{}
			}
			seen[n] = true
			if e := duplicates(dec, child); e != nil {
				e.Path = Join(Field("", k), e.Path)
				return e
			}
		}
		_, _ = dec.Token()
	case json.Delim('['):
		var elem reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			elem = t.Elem()
		}
		for i := 0; dec.More(); i++ {
			if e := duplicates(dec, elem); e != nil {
				e.Path = Join(Index("", i), e.Path)
				return e
			}
		}
		_, _ = dec.Token()
	}
	return nil
}
