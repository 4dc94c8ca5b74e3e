package jsonx

import (
	"errors"
	"reflect"
	"testing"
)

func TestDuplicates(t *testing.T) {
	for _, c := range []struct {
		js   string
		fold bool
		path string // "" = none
	}{
		{`{"a": 1, "b": 2}`, false, ""},
		{`{"status": "revoked", "status": "active"}`, false, "status"},
		{`{"status": "revoked", "Status": "active"}`, true, "Status"},
		{`{"status": "revoked", "Status": "active"}`, false, ""},
		{`{"a": "x", "\u0061": "y"}`, false, "a"},
		{`{"routes": [{"id": "a"}, {"id": "b", "public": false, "public": true}]}`, false, "routes[1].public"},
		{`{"tenants": {"7": {"allowed_cidrs": ["10.0.0.0/8"], "allowed_cidrs": []}}}`, false, "tenants.7.allowed_cidrs"},
		{`[{"a": 1}, {"a": 2}]`, false, ""},
		{`{"a": {"b": 1}, "c": {"b": 2}}`, false, ""},
		{`{"a": 1, "a"`, false, ""}, // not JSON: decoding says so
	} {
		var typ reflect.Type
		if c.fold {
			typ = reflect.TypeFor[struct{ Status string }]()
		}
		err := DuplicatesOf([]byte(c.js), typ)
		var e *Error
		switch {
		case c.path == "" && err != nil:
			t.Errorf("Duplicates(%s) = %v, want nil", c.js, err)
		case c.path != "" && (!errors.As(err, &e) || e.Path != c.path):
			t.Errorf("Duplicates(%s) = %v, want one at %s", c.js, err, c.path)
		}
	}
}

// Strict refuses a repeated field, case-insensitively as it matches them.
func TestStrictRefusesDuplicates(t *testing.T) {
	var v struct {
		Status string `json:"status"`
	}
	if err := Strict([]byte(`{"status": "revoked", "STATUS": "active"}`), &v); err == nil {
		t.Errorf("Strict took a repeated field: %+v", v)
	}
}

// Folding follows the target type: struct fields case-insensitively, map
// keys exactly ("Free" and "free" are two plans).
func TestDuplicatesOfFollowsTheType(t *testing.T) {
	type plan struct{ Limit int }
	type cfg struct {
		Plans  map[string]plan
		Routes []struct{ Public bool }
	}
	typ := reflect.TypeFor[cfg]()
	for js, path := range map[string]string{
		`{"plans": {"Free": {"limit": 1}, "free": {"limit": 2}}}`:            "",
		`{"plans": {"free": {"limit": 1, "LIMIT": 2}}}`:                      "plans.free.LIMIT",
		`{"plans": {}, "Plans": {}}`:                                         "Plans",
		`{"routes": [{"public": false}, {"public": false, "Public": true}]}`: "routes[1].Public",
	} {
		err := DuplicatesOf([]byte(js), typ)
		var e *Error
		if path == "" && err != nil || path != "" && (!errors.As(err, &e) || e.Path != path) {
			t.Errorf("%s: %v, want a duplicate at %q", js, err, path)
		}
	}
}
