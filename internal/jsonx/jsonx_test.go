package jsonx

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

type inner struct {
	Header   string `json:"header"`
	Required bool   `json:"required,omitempty"`
}

type Embedded struct {
	Scopes []string `json:"scopes"`
	Public bool     `json:"public"`
}

type outer struct {
	ID      string           `json:"id"`
	Limit   *int64           `json:"limit"`
	Small   int8             `json:"small"`
	Ratio   float64          `json:"ratio"`
	Count   uint             `json:"count"`
	Inners  []inner          `json:"inners"`
	ByName  map[string]inner `json:"by_name"`
	ByNum   map[int]string   `json:"by_num"`
	Body    json.RawMessage  `json:"body"`
	When    time.Time        `json:"when"`
	Skip    string           `json:"-"`
	private string           //lint:ignore U1000 an unexported field, to show it is not a JSON field
	Embedded
}

func TestStrictValid(t *testing.T) {
	var o outer
	err := Strict([]byte(`{"id": "a", "LIMIT": 3, "inners": [{"header": "x"}], "by_name": {"a b": {"required": true}},
		"by_num": {"7": "x"}, "body": {"any": [1, "thing"]}, "when": "2024-01-02T03:04:05Z", "scopes": ["r"], "public": null}`), &o)
	if err != nil {
		t.Fatal(err)
	}
	if o.ID != "a" || *o.Limit != 3 || o.Inners[0].Header != "x" || !o.ByName["a b"].Required || o.ByNum[7] != "x" || o.Scopes[0] != "r" || o.When.Year() != 2024 {
		t.Fatalf("decoded %+v", o)
	}
}

func TestStrictReportsEveryProblem(t *testing.T) {
	var o outer
	err := Strict([]byte(`{"id": 7, "limit": 1.5, "small": 300, "ratio": "x", "count": -1,
		"inners": [{"header": "x"}, {"hedaer": "y"}, 3], "by_name": {"a b": {"required": "yes"}},
		"by_num": {"x": "y"}, "skip": 1, "private": 2, "scopes": "r", "extra": {"a": 1}}`), &o)
	want := []string{
		`by_name["a b"].required: must be true or false, got "yes"`,
		`by_num.x: key must be an integer`,
		`count: must be a non-negative integer, got -1`,
		`extra: unknown field (known: id, limit, small, ratio, count, inners, by_name, by_num, body, when, scopes, public)`,
		`id: must be a string, got 7`,
		`inners[1].hedaer: unknown field (known: header, required)`,
		`inners[2]: must be an object, got 3`,
		`limit: must be an integer, got 1.5`,
		`private: unknown field (known: id, limit, small, ratio, count, inners, by_name, by_num, body, when, scopes, public)`,
		`ratio: must be a number, got "x"`,
		`scopes: must be an array, got "r"`,
		`skip: unknown field (known: id, limit, small, ratio, count, inners, by_name, by_num, body, when, scopes, public)`,
		`small: must be an integer, got 300`,
	}
	probs, ok := Problems(err)
	if !ok {
		t.Fatalf("err %v holds more than *Error", err)
	}
	var got []string
	for _, p := range probs {
		got = append(got, p.Error())
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if o.Inners[0].Header != "x" {
		t.Errorf("the valid part was not decoded: %+v", o)
	}
}

func TestStrictInvalidJSON(t *testing.T) {
	for raw, want := range map[string]string{
		`{"id": "a"} {}`: "invalid JSON: trailing data",
		`{"id": "a"} x`:  "invalid JSON: trailing data",
		`{"id": `:        "invalid JSON: unexpected EOF",
		`{"id" "a"}`:     "invalid JSON: invalid character '\"' after object key",
		` `:              "invalid JSON: no value",
	} {
		var o outer
		if err := Strict([]byte(raw), &o); err == nil || err.Error() != want {
			t.Errorf("%q: %v, want %q", raw, err, want)
		}
	}
}

type selfish struct{}

func (*selfish) UnmarshalJSON([]byte) error { return errors.New("json: selfish says no") }

func TestStrictUnmarshalerError(t *testing.T) {
	var v struct {
		A int     `json:"a"`
		S selfish `json:"s"`
	}
	if err := Strict([]byte(`{"s": 1}`), &v); err == nil || err.Error() != "selfish says no" {
		t.Fatalf("err = %v", err)
	}
	// Reported beside the problems Check finds.
	if err := Strict([]byte(`{"a": "x", "s": 1}`), &v); err == nil || err.Error() != "a: must be an integer, got \"x\"\nselfish says no" {
		t.Fatalf("err = %v", err)
	}
	var w struct {
		When time.Time `json:"when"`
	}
	if err := Strict([]byte(`{"when": "tomorrow"}`), &w); err == nil || !strings.Contains(err.Error(), `parsing time "tomorrow"`) {
		t.Fatalf("err = %v", err)
	}
}

func TestAt(t *testing.T) {
	err := errors.Join(&Error{Path: "x", Msg: "bad"}, &Error{Path: "[1].y", Msg: "worse"}, &Error{Msg: "root"}, errors.New("plain"))
	got := At("routes[2]", err).Error()
	want := "routes[2].x: bad\nroutes[2][1].y: worse\nroutes[2]: root\nroutes[2]: plain"
	if got != want {
		t.Fatalf("At:\n%s\nwant:\n%s", got, want)
	}
	if At("a", nil) != nil {
		t.Fatal("At(nil) != nil")
	}
	if _, ok := Problems(err); ok {
		t.Fatal("Problems: a plain error is not an *Error")
	}
}

func TestPaths(t *testing.T) {
	for _, c := range [][2]string{
		{Field("limits", "plans"), "limits.plans"},
		{Field("plans", "a b"), `plans["a b"]`},
		{Field("", "plans"), "plans"},
		{Field("", "a.b"), `["a.b"]`},
		{Index("windows", 1), "windows[1]"},
		{Join("", "a"), "a"},
		{Join("a", ""), "a"},
		{Join("a", `["x"]`), `a["x"]`},
	} {
		if c[0] != c[1] {
			t.Errorf("got %q, want %q", c[0], c[1])
		}
	}
}
