// Package jsonx decodes configuration JSON strictly and says where a problem
// is. It is the one way the sidecar reads a JSON section of policy data into
// typed structs:
//
//	var s Section
//	if err := jsonx.Strict(raw, &s); err != nil {
//		return jsonx.At("settings", err) // settings.allow_emtpy: unknown field (known: ...)
//	}
//
// Strict decodes like encoding/json (field names match case-insensitively,
// null leaves a value unset, json.Unmarshaler types decode themselves) but
// rejects unknown object fields, a field given twice (Duplicates) and trailing
// data, and reports every unknown
// field and type mismatch, each as an *Error naming its path.
package jsonx

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Error is one problem at a path inside the decoded value:
// plans.free.windows[1].limit. An empty Path is the value itself.
type Error struct {
	Path string
	Msg  string
}

func (e *Error) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}

// Strict decodes exactly one JSON value from raw into v, which must be a
// non-nil pointer. Unknown object fields, type mismatches and trailing data
// are errors. The error joins one *Error per problem, in path order (use At
// to place them under a prefix); on error v holds what could be decoded.
func Strict(raw []byte, v any) error {
	if err := DuplicatesOf(raw, reflect.TypeOf(v)); err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	var se *json.SyntaxError
	switch {
	case errors.Is(err, io.EOF):
		return &Error{Msg: "invalid JSON: no value"}
	case errors.As(err, &se), errors.Is(err, io.ErrUnexpectedEOF):
		return &Error{Msg: "invalid JSON: " + trim(err)}
	}
	if _, terr := dec.Token(); terr != io.EOF {
		return &Error{Msg: "invalid JSON: trailing data"}
	}
	if err == nil {
		return nil
	}
	var errs []error
	for _, p := range Check(raw, reflect.TypeOf(v)) {
		errs = append(errs, p)
	}
	var te *json.UnmarshalTypeError
	if len(errs) == 0 || !errors.As(err, &te) && !strings.HasPrefix(err.Error(), "json: unknown field ") {
		// Not something Check sees: a json.Unmarshaler's own error (which
		// stopped decoding there). Say what encoding/json said.
		errs = append(errs, &Error{Msg: trim(err)})
	}
	return errors.Join(errs...)
}

// trim drops encoding/json's "json: " from an error.
func trim(err error) string {
	msg, _ := strings.CutPrefix(err.Error(), "json: ")
	return msg
}

// At places the problems in err under where: an *Error's path is joined to
// it (At("routes[2]", scopse: ...) is routes[2].scopse: ...), any other
// error is prefixed "where: ". Joined errors stay joined.
func At(where string, err error) error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, At(where, e))
		}
		return errors.Join(out...)
	}
	if e, ok := err.(*Error); ok {
		return &Error{Path: Join(where, e.Path), Msg: e.Msg}
	}
	return fmt.Errorf("%s: %w", where, err)
}

// Problems lists the *Errors in err (joined or not); ok is false when err
// holds any other error.
func Problems(err error) (probs []*Error, ok bool) {
	ok = true
	var walk func(error)
	walk = func(err error) {
		if j, isJoin := err.(interface{ Unwrap() []error }); isJoin {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		if e, isErr := err.(*Error); isErr {
			probs = append(probs, e)
			return
		}
		ok = false
	}
	if err != nil {
		walk(err)
	}
	return probs, ok
}

// Join appends a relative path to a path: Join("a", "b") = "a.b",
// Join("a", "[1].b") = "a[1].b"; either may be empty.
func Join(path, rel string) string {
	switch {
	case path == "":
		return rel
	case rel == "":
		return path
	case rel[0] == '[':
		return path + rel
	}
	return path + "." + rel
}

var identRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// Field is the path of an object member: Field("limits", "plans") =
// "limits.plans"; a name that is not [A-Za-z0-9_-]+ is quoted:
// Field("plans", "a b") = `plans["a b"]`.
func Field(path, name string) string {
	if identRE.MatchString(name) {
		if path == "" {
			return name
		}
		return path + "." + name
	}
	return path + "[" + strconv.Quote(name) + "]"
}

// Index is the path of an array element: Index("windows", 1) = "windows[1]".
func Index(path string, i int) string {
	return path + "[" + strconv.Itoa(i) + "]"
}

// Describe renders a value decoded with json.Decoder.UseNumber for a
// message: null, "text", 12, true, an array, an object.
func Describe(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		return strconv.Quote(x)
	case json.Number:
		return x.String()
	case bool:
		return strconv.FormatBool(x)
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

// Check lists every unknown field and type mismatch of raw against t (the
// type Strict would decode into; a pointer is followed), in path order,
// judged as encoding/json judges them. Invalid JSON gives no problems:
// Strict reports it.
func Check(raw []byte, t reflect.Type) []*Error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if dec.Decode(&v) != nil || t == nil {
		return nil
	}
	c := &checker{}
	c.value("", v, t)
	return c.probs
}

type checker struct{ probs []*Error }

func (c *checker) addf(path, format string, args ...any) {
	c.probs = append(c.probs, &Error{Path: path, Msg: fmt.Sprintf(format, args...)})
}

var (
	unmarshalerType     = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
)

func (c *checker) value(path string, v any, t reflect.Type) {
	if v == nil {
		return // null leaves any value unset
	}
	for t.Kind() == reflect.Pointer {
		if t.Implements(unmarshalerType) {
			return
		}
		t = t.Elem()
	}
	pt := reflect.PointerTo(t)
	if pt.Implements(unmarshalerType) {
		return // it decodes itself; encoding/json reports its error
	}
	if pt.Implements(textUnmarshalerType) && t.Kind() != reflect.Map && t.Kind() != reflect.Slice {
		if _, ok := v.(string); !ok {
			c.addf(path, "must be a string, got %s", Describe(v))
		}
		return
	}
	switch t.Kind() {
	case reflect.Interface:
		if t.NumMethod() > 0 {
			c.addf(path, "cannot be decoded into %s", t)
		}
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			c.addf(path, "must be an object, got %s", Describe(v))
			return
		}
		fs := fieldsOf(t)
		for _, k := range sortedKeys(m) {
			f := fs.match(k)
			if f == nil {
				c.addf(Field(path, k), "unknown field (known: %s)", fs.known)
				continue
			}
			if f.quoted {
				continue // ",string": encoding/json reports a bad one
			}
			c.value(Field(path, k), m[k], f.typ)
		}
	case reflect.Map:
		m, ok := v.(map[string]any)
		if !ok {
			c.addf(path, "must be an object, got %s", Describe(v))
			return
		}
		kt := t.Key()
		for _, k := range sortedKeys(m) {
			if kt.Kind() != reflect.String && !reflect.PointerTo(kt).Implements(textUnmarshalerType) {
				if !intKey(kt, k) {
					c.addf(Field(path, k), "key must be an integer")
					continue
				}
			}
			c.value(Field(path, k), m[k], t.Elem())
		}
	case reflect.Slice, reflect.Array:
		if t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Uint8 && !reflect.PointerTo(t.Elem()).Implements(unmarshalerType) {
			if _, ok := v.(string); !ok {
				c.addf(path, "must be a base64 string, got %s", Describe(v))
			}
			return
		}
		a, ok := v.([]any)
		if !ok {
			c.addf(path, "must be an array, got %s", Describe(v))
			return
		}
		for i, e := range a {
			c.value(Index(path, i), e, t.Elem())
		}
	case reflect.String:
		if _, ok := v.(string); !ok {
			c.addf(path, "must be a string, got %s", Describe(v))
		}
	case reflect.Bool:
		if _, ok := v.(bool); !ok {
			c.addf(path, "must be true or false, got %s", Describe(v))
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, ok := v.(json.Number)
		if ok {
			i, err := strconv.ParseInt(n.String(), 10, 64)
			ok = err == nil && !reflect.Zero(t).OverflowInt(i)
		}
		if !ok {
			c.addf(path, "must be an integer, got %s", Describe(v))
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		n, ok := v.(json.Number)
		if ok {
			u, err := strconv.ParseUint(n.String(), 10, 64)
			ok = err == nil && !reflect.Zero(t).OverflowUint(u)
		}
		if !ok {
			c.addf(path, "must be a non-negative integer, got %s", Describe(v))
		}
	case reflect.Float32, reflect.Float64:
		n, ok := v.(json.Number)
		if ok {
			_, err := strconv.ParseFloat(n.String(), t.Bits())
			ok = err == nil
		}
		if !ok {
			c.addf(path, "must be a number, got %s", Describe(v))
		}
	default:
		c.addf(path, "cannot be decoded into %s", t)
	}
}

func intKey(t reflect.Type, k string) bool {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		i, err := strconv.ParseInt(k, 10, 64)
		return err == nil && !reflect.Zero(t).OverflowInt(i)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		u, err := strconv.ParseUint(k, 10, 64)
		return err == nil && !reflect.Zero(t).OverflowUint(u)
	}
	return false
}

func sortedKeys(m map[string]any) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// fields are the JSON members of a struct type, as encoding/json sees them.
type fields struct {
	list  []field
	known string // names in declaration order, comma separated
}

type field struct {
	name   string
	typ    reflect.Type
	quoted bool // ",string"
	depth  int  // embedding depth
}

// match finds a member by name: exactly, else case-insensitively (as
// encoding/json does).
func (fs *fields) match(k string) *field {
	for i := range fs.list {
		if fs.list[i].name == k {
			return &fs.list[i]
		}
	}
	for i := range fs.list {
		if strings.EqualFold(fs.list[i].name, k) {
			return &fs.list[i]
		}
	}
	return nil
}

var fieldCache sync.Map // reflect.Type -> *fields

func fieldsOf(t reflect.Type) *fields {
	if fs, ok := fieldCache.Load(t); ok {
		return fs.(*fields)
	}
	var all []field
	var walk func(t reflect.Type, depth int, seen map[reflect.Type]bool)
	walk = func(t reflect.Type, depth int, seen map[reflect.Type]bool) {
		if seen[t] {
			return
		}
		seen[t] = true
		for i := 0; i < t.NumField(); i++ {
			sf := t.Field(i)
			tag := sf.Tag.Get("json")
			if tag == "-" {
				continue
			}
			name, opts, _ := strings.Cut(tag, ",")
			ft := sf.Type
			if sf.Anonymous {
				if ft.Kind() == reflect.Pointer {
					ft = ft.Elem()
				}
				if name == "" && ft.Kind() == reflect.Struct {
					walk(ft, depth+1, seen)
					continue
				}
				if !sf.IsExported() && ft.Kind() != reflect.Struct {
					continue
				}
			} else if !sf.IsExported() {
				continue
			}
			if name == "" {
				name = sf.Name
			}
			quoted := false
			for o := range strings.SplitSeq(opts, ",") {
				quoted = quoted || o == "string"
			}
			all = append(all, field{name: name, typ: sf.Type, quoted: quoted, depth: depth})
		}
	}
	walk(t, 0, map[reflect.Type]bool{})
	// The shallowest member of a name wins.
	fs := &fields{}
	var names []string
	for _, f := range all {
		i := slices.IndexFunc(fs.list, func(g field) bool { return g.name == f.name })
		switch {
		case i < 0:
			fs.list = append(fs.list, f)
			names = append(names, f.name)
		case f.depth < fs.list[i].depth:
			fs.list[i] = f
		}
	}
	fs.known = strings.Join(names, ", ")
	v, _ := fieldCache.LoadOrStore(t, fs)
	return v.(*fields)
}
