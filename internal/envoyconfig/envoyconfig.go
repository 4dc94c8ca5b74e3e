// Package envoyconfig lints Envoy bootstrap files that front the extauthz
// sidecar, without running Envoy.
//
// The pipeline:
//
//  1. YAML → JSON (sigs.k8s.io/yaml);
//  2. strict protojson into bootstrapv3.Bootstrap: unknown or misspelt fields,
//     unknown enum names and unresolvable "@type" URLs are errors;
//  3. protoc-gen-validate rules: Bootstrap.ValidateAll() plus ValidateAll() on
//     every google.protobuf.Any payload (PGV does not descend into Any, so
//     typed_config and typed_per_filter_config would otherwise go unchecked);
//     fields marked deprecated become warnings;
//  4. semantic checks PGV cannot express: ext_authz transport version, the
//     authz cluster exists and speaks HTTP/2, the router is the last HTTP
//     filter, route clusters exist, an explicit ext_authz timeout.
//
// The strict variants add CheckHardening: the security invariants that every
// HTTP connection manager with ext_authz must keep (fail closed, path
// normalisation, trusted client address, ...).
//
// It is a lint, not `envoy --mode validate`: no RE2 compilation, no listener
// address clashes, no check of which extensions a given Envoy build contains.
// Only the extension types imported in types.go resolve.
package envoyconfig

import (
	"errors"
	"os"
	"regexp"
	"strconv"
	"unicode/utf8"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoregistry"
	"sigs.k8s.io/yaml"
)

// FieldError is one problem found in a configuration. Path is the field path
// in proto field names, e.g.
// static_resources.listeners[0].filter_chains[0].filters[0].typed_config.http_filters[0].typed_config.failure_mode_allow.
type FieldError struct {
	File   string // file or source name; empty when unknown
	Line   int    // 1-based line in the YAML source; 0 when unknown
	Column int    // 1-based column in the YAML source; 0 when unknown
	Path   string // field path; empty for document-level problems
	Msg    string
}

func (e *FieldError) Error() string {
	s := ""
	if e.File != "" {
		s = e.File + ":"
	}
	if e.Line > 0 {
		s += strconv.Itoa(e.Line) + ":" + strconv.Itoa(e.Column) + ":"
	}
	if s != "" {
		s += " "
	}
	if e.Path != "" {
		s += e.Path + ": "
	}
	return s + e.Msg
}

// Validate checks an Envoy bootstrap given as YAML (or JSON) and returns the
// warnings and, if any problem was found, an error joining one *FieldError
// per problem.
func Validate(yamlBytes []byte) ([]string, error) {
	return ValidateNamed("", yamlBytes, false)
}

// ValidateStrict is Validate plus CheckHardening.
func ValidateStrict(yamlBytes []byte) ([]string, error) {
	return ValidateNamed("", yamlBytes, true)
}

// ValidateFile reads path and validates it like Validate; messages name the
// file.
func ValidateFile(path string) ([]string, error) {
	return validateFile(path, false)
}

// ValidateFileStrict reads path and validates it like ValidateStrict. It is
// the check behind `extauthz validate --envoy FILE`.
func ValidateFileStrict(path string) ([]string, error) {
	return validateFile(path, true)
}

func validateFile(path string, strict bool) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ValidateNamed(path, data, strict)
}

// ValidateNamed validates yamlBytes, naming the source name in messages (for
// configs that do not live in a file of their own, e.g. a ConfigMap entry).
// strict adds CheckHardening.
func ValidateNamed(name string, yamlBytes []byte, strict bool) ([]string, error) {
	loc := &locator{src: yamlBytes}
	b, jsonBytes, err := parse(yamlBytes)
	if err != nil {
		fe := protojsonError(err, jsonBytes)
		fe.File = name
		loc.locate(fe)
		return nil, fe
	}

	v := &validator{}
	v.run(b)
	if strict {
		for _, err := range CheckHardening(b) {
			v.errs = append(v.errs, asFieldError(err))
		}
	}

	var warnings []string
	for _, w := range v.warns {
		w.File = name
		loc.locate(w)
		warnings = append(warnings, w.Error())
	}
	errs := make([]error, 0, len(v.errs))
	for _, e := range v.errs {
		e.File = name
		loc.locate(e)
		errs = append(errs, e)
	}
	return warnings, errors.Join(errs...)
}

// Parse converts YAML (or JSON) to a Bootstrap with the same strict rules as
// Validate (unknown fields, enum names and "@type" URLs are errors). It does
// not run the PGV or semantic checks.
func Parse(yamlBytes []byte) (*bootstrapv3.Bootstrap, error) {
	b, jsonBytes, err := parse(yamlBytes)
	if err != nil {
		fe := protojsonError(err, jsonBytes)
		(&locator{src: yamlBytes}).locate(fe)
		return nil, fe
	}
	return b, nil
}

func parse(yamlBytes []byte) (*bootstrapv3.Bootstrap, []byte, error) {
	jsonBytes, err := yaml.YAMLToJSON(yamlBytes)
	if err != nil {
		return nil, nil, err
	}
	if len(jsonBytes) == 0 || string(jsonBytes) == "null" {
		return nil, nil, errors.New("empty configuration")
	}
	if jsonBytes[0] != '{' {
		return nil, nil, errors.New("configuration is not a YAML/JSON object")
	}
	b := &bootstrapv3.Bootstrap{}
	opts := protojson.UnmarshalOptions{DiscardUnknown: false, Resolver: protoregistry.GlobalTypes}
	if err := opts.Unmarshal(jsonBytes, b); err != nil {
		return nil, jsonBytes, err
	}
	return b, jsonBytes, nil
}

// protojson reports positions as "(line L:C)" in the JSON produced from the
// YAML; turn that into a field path so the YAML line can be found.
var (
	// protobuf-go randomly separates "proto:" with a space or U+00A0.
	posRE      = regexp.MustCompile(`^proto:[\s\x{00a0}]*\(line (\d+):(\d+)\):[\s\x{00a0}]*`)
	yamlLineRE = regexp.MustCompile(`\bline (\d+):`)
)

func protojsonError(err error, jsonBytes []byte) *FieldError {
	msg := err.Error()
	if jsonBytes == nil { // YAML syntax error: "yaml: line 34: did not find expected key"
		fe := &FieldError{Msg: msg}
		if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
			fe.Line, _ = strconv.Atoi(m[1])
			fe.Column = 1
		}
		return fe
	}
	m := posRE.FindStringSubmatch(msg)
	if m == nil {
		return &FieldError{Msg: msg}
	}
	msg = msg[len(m[0]):]
	line, _ := strconv.Atoi(m[1])
	col, _ := strconv.Atoi(m[2])
	off := jsonOffset(jsonBytes, line, col)
	return &FieldError{Path: jsonPathAt(jsonBytes, off).String(), Msg: msg}
}

// jsonOffset converts protojson's 1-based line and rune column to a byte
// offset.
func jsonOffset(data []byte, line, col int) int {
	off := 0
	for l := 1; l < line && off < len(data); off++ {
		if data[off] == '\n' {
			l++
		}
	}
	for c := 1; c < col && off < len(data); c++ {
		_, size := utf8.DecodeRune(data[off:])
		off += size
	}
	return off
}

func asFieldError(err error) *FieldError {
	var fe *FieldError
	if errors.As(err, &fe) {
		return fe
	}
	return &FieldError{Msg: err.Error()}
}
