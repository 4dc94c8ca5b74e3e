// Package policy loads Rego modules and data, compiles them once into a
// prepared query for data.extauthz.decision, and evaluates it with an input
// built directly as an OPA value (no JSON round trip).
package policy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/topdown/cache"

	"github.com/extauthz/extauthz/internal/jsonscan"
	"github.com/extauthz/extauthz/internal/jsonx"
)

// Query is the one rule the sidecar evaluates.
const Query = "data.extauthz.decision"

// Source is a set of policy files: Rego modules (by file name) and the data
// document (data.json merged at the root).
type Source struct {
	Origin  string            // where it came from, for messages
	Modules map[string]string // file name -> Rego source; _test.rego excluded
	Tests   map[string]string // _test.rego files
	Data    map[string]any    // the data document; RawSections are *Section
	// Ordered holds, as written, the sections of data.extauthz whose
	// member order means something (OrderedSections), when data.json was
	// read from a file: Data's maps do not keep it.
	Ordered map[string][]byte
	data    io.Closer // the file Data's sections are read from
}

// OrderedSections are sections of data.extauthz whose member order is
// part of what they say: profiles render their body templates in the
// order written (a client compares the bytes).
var OrderedSections = map[string]bool{"profiles": true}

// LoadFS reads every *.rego and data.json at the top of fsys. Errors name the
// file (and line for JSON). Names starting with "." are skipped (a
// Kubernetes ConfigMap volume keeps its ..data symlink and timestamped
// directories there); symlinks are followed, and those that lead to a
// directory are skipped like directories.
func LoadFS(fsys fs.FS, origin string) (*Source, error) {
	src := &Source{Origin: origin, Modules: map[string]string{}, Tests: map[string]string{}, Data: map[string]any{}}
	ents, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", origin, err)
	}
	var errs []error
	for _, e := range ents {
		name := e.Name()
		if e.IsDir() || strings.HasPrefix(name, ".") || !policyFile(name) {
			continue
		}
		if !e.Type().IsRegular() { // a symlink: follow it
			st, err := fs.Stat(fsys, name)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", path.Join(origin, name), err))
				continue
			}
			if st.IsDir() {
				continue
			}
		}
		if name == "data.json" {
			// Streamed: the API keys stay in the file (see Section).
			f, err := fsys.Open(name)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", path.Join(origin, name), err))
				continue
			}
			src.Ordered = map[string][]byte{}
			d, keep, err := loadData(f, src.Ordered)
			if err != nil {
				f.Close()
				errs = append(errs, fmt.Errorf("%s: %w", path.Join(origin, name), err))
				continue
			}
			if keep {
				src.data = f
			} else {
				f.Close()
			}
			src.Data = d
			continue
		}
		b, err := fs.ReadFile(fsys, name)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", path.Join(origin, name), err))
			continue
		}
		switch {
		case strings.HasSuffix(name, "_test.rego"):
			src.Tests[name] = string(b)
		case strings.HasSuffix(name, ".rego"):
			src.Modules[name] = string(b)
		}
	}
	if len(src.Modules) == 0 && len(errs) == 0 {
		errs = append(errs, fmt.Errorf("%s: no .rego files", origin))
	}
	return src, errors.Join(errs...)
}

func policyFile(name string) bool { return strings.HasSuffix(name, ".rego") || name == "data.json" }

// LoadDir reads a policy directory. In a Kubernetes ConfigMap volume (a
// ..data symlink to the current timestamped directory) it reads that
// directory, so that all files come from one version.
func LoadDir(dir string) (*Source, error) {
	root, err := ResolveDir(dir)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	return LoadFS(os.DirFS(root), dir)
}

// ResolveDir is the directory that holds dir's current files: the target of
// dir/..data when dir is a Kubernetes ConfigMap (or Secret) volume, else dir.
func ResolveDir(dir string) (string, error) {
	data := filepath.Join(dir, "..data")
	if _, err := os.Lstat(data); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return dir, nil
		}
		return "", err
	}
	return filepath.EvalSymlinks(data)
}

// RawSections are sections of data.extauthz kept as raw JSON (a *Section,
// left in the file when data.json is read from one): the sidecar parses
// them into its own indexes (API keys can number millions), and they never
// enter the policy store.
var RawSections = map[string]bool{"api_keys": true}

// decodeData decodes data.json held in memory, keeping RawSections of
// extauthz raw. Raw sections are slices of b, not copies (a million API
// keys are 180 MB).
// The sections of OrderedSections are also copied into ordered, when it is
// not nil.
func decodeData(b []byte, ordered map[string][]byte) (map[string]any, error) {
	if out, ok := decodeDataFast(b, ordered); ok {
		return out, nil
	}
	return decodeDataSlow(b, ordered)
}

// decodeDataFast is decodeData for valid input: one strict pass
// (jsonscan) finds the top-level members and extauthz's sections without
// decoding or copying them; each section but the raw ones is then decoded
// as decodeDataSlow decodes it. Anything it does not take — input that is
// not valid JSON, a top level or extauthz that is not an object, a section
// that does not decode — it leaves to decodeDataSlow (ok false), whose
// results and errors are encoding/json's.
func decodeDataFast(b []byte, ordered map[string][]byte) (out map[string]any, ok bool) {
	if checkUTF8(b) != nil {
		return nil, false
	}
	top, ok := members(b)
	if !ok || repeated(top) != "" {
		return nil, false
	}
	out = make(map[string]any, len(top))
	for _, t := range top {
		if t.name != "extauthz" {
			var v any
			if decodeJSON(t.value, &v) != nil || jsonx.Duplicates(t.value) != nil {
				return nil, false
			}
			out[t.name] = v
			continue
		}
		secs, ok := members(t.value)
		if !ok || repeated(secs) != "" {
			return nil, false
		}
		m := make(map[string]any, len(secs))
		for _, s := range secs {
			if RawSections[s.name] {
				m[s.name] = BytesSection(s.value)
				continue
			}
			var v any
			if decodeJSON(s.value, &v) != nil || jsonx.Duplicates(s.value) != nil {
				return nil, false
			}
			m[s.name] = v
			keepOrdered(ordered, s.name, s.value)
		}
		out[t.name] = m
	}
	return out, true
}

// OrderedOf returns the OrderedSections of data.extauthz in data.json b,
// as written (nil when b is not a JSON object: its decoding says why).
func OrderedOf(b []byte) map[string][]byte {
	top, ok := members(b)
	if !ok {
		return nil
	}
	out := map[string][]byte{}
	for _, t := range top {
		if t.name != "extauthz" {
			continue
		}
		secs, ok := members(t.value)
		if !ok {
			return nil
		}
		for _, s := range secs {
			keepOrdered(out, s.name, s.value)
		}
	}
	return out
}

// keepOrdered copies section name's bytes into ordered, if it is one of
// OrderedSections (a copy: b may be a whole file).
func keepOrdered(ordered map[string][]byte, name string, b []byte) {
	if ordered != nil && OrderedSections[name] {
		ordered[name] = bytes.Clone(b)
	}
}

// repeated is a name two members share ("" if none).
func repeated(ms []member) string {
	seen := make(map[string]bool, len(ms))
	for _, m := range ms {
		if seen[m.name] {
			return m.name
		}
		seen[m.name] = true
	}
	return ""
}

type member struct {
	name  string
	at    int    // where the member starts in the object's input
	raw   []byte // the name as written, with the colon
	value []byte // a slice of the input, capacity clipped
}

// members lists the members of the JSON object b, in order; ok is false
// when b is not exactly one valid JSON object.
func members(b []byte) (ms []member, ok bool) {
	i := jsonscan.Space(b, 0)
	if i >= len(b) || b[i] != '{' {
		return nil, false
	}
	i = jsonscan.Space(b, i+1)
	if i < len(b) && b[i] == '}' {
		return ms, jsonscan.Space(b, i+1) == len(b)
	}
	for {
		start := i
		if i, ok = jsonscan.String(b, i); !ok {
			return nil, false
		}
		name := string(b[start+1 : i-1])
		if !plain(b[start+1 : i-1]) {
			if json.Unmarshal(b[start:i], &name) != nil {
				return nil, false
			}
		}
		if i = jsonscan.Space(b, i); i >= len(b) || b[i] != ':' {
			return nil, false
		}
		vstart := jsonscan.Space(b, i+1)
		if i, ok = jsonscan.Value(b, vstart); !ok {
			return nil, false
		}
		ms = append(ms, member{name: name, at: start, raw: b[start:vstart], value: b[vstart:i:i]})
		if i = jsonscan.Space(b, i); i >= len(b) {
			return nil, false
		}
		switch b[i] {
		case ',':
			i = jsonscan.Space(b, i+1)
		case '}':
			return ms, jsonscan.Space(b, i+1) == len(b)
		default:
			return nil, false
		}
	}
}

// plain reports a string's content with no escapes and only ASCII: its
// bytes are its value.
func plain(s []byte) bool {
	for _, c := range s {
		if c == '\\' || c >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// decodeDataSlow decodes data.json with encoding/json alone.
func decodeDataSlow(b []byte, ordered map[string][]byte) (map[string]any, error) {
	if err := checkUTF8(b); err != nil {
		return nil, err
	}
	var top map[string]json.RawMessage
	if err := decodeJSON(b, &top); err != nil { // syntax errors with line and column
		return nil, err
	}
	if ms, ok := members(b); ok {
		if name := repeated(ms); name != "" {
			return nil, fmt.Errorf("%s: given twice at the top level (the second would silently replace the first)", jsonx.Field("", name))
		}
	}
	out := make(map[string]any, len(top))
	for k, raw := range top {
		if k != "extauthz" {
			var v any
			if err := decodeJSON(raw, &v); err != nil {
				return nil, fmt.Errorf("%s: %w", k, err)
			}
			if err := jsonx.Duplicates(raw); err != nil {
				return nil, jsonx.At(jsonx.Field("", k), err)
			}
			out[k] = v
			continue
		}
		var secs map[string]json.RawMessage
		if err := decodeJSON(raw, &secs); err != nil {
			return nil, fmt.Errorf("extauthz must be an object: %w", err)
		}
		if ms, ok := members(raw); ok {
			if name := repeated(ms); name != "" {
				return nil, fmt.Errorf("%s: given twice (the second would silently replace the first)", jsonx.Field("extauthz", name))
			}
		}
		m := make(map[string]any, len(secs))
		for name, sraw := range secs {
			if RawSections[name] {
				m[name] = BytesSection(sraw)
				continue
			}
			var v any
			if err := decodeJSON(sraw, &v); err != nil {
				return nil, fmt.Errorf("extauthz.%s: %w", name, err)
			}
			if err := jsonx.Duplicates(sraw); err != nil {
				return nil, jsonx.At(jsonx.Field("extauthz", name), err)
			}
			m[name] = v
			keepOrdered(ordered, name, sraw)
		}
		out[k] = m
	}
	return out, nil
}

// decodeJSON decodes with numbers kept exact and reports line:column on
// error. Into anything but an untyped value (where numbers matter) it
// unmarshals in place: a Decoder would first copy a large data.json into
// its own growing buffer.
func decodeJSON(b []byte, v any) error {
	var err error
	if _, untyped := v.(*any); untyped {
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		err = dec.Decode(v)
	} else {
		err = json.Unmarshal(b, v)
	}
	if err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se):
			l, c := lineCol(b, se.Offset)
			return fmt.Errorf("line %d column %d: %s", l, c, se.Error())
		case errors.As(err, &te):
			l, c := lineCol(b, te.Offset)
			return fmt.Errorf("line %d column %d: field %s: %s", l, c, te.Field, te.Error())
		}
		return err
	}
	return nil
}

// checkUTF8 refuses data.json bytes that are not UTF-8, naming the line:
// encoding/json would read them as U+FFFD, so a route id or a tenant would
// silently not be what the file says. The raw sections are left to their
// parsers (which refuse them too, naming the entry); input that is not a
// JSON object is left to the decoder's error.
func checkUTF8(b []byte) error {
	top, ok := members(b)
	if !ok {
		return nil
	}
	// bad checks part, which starts at offset base of b.
	bad := func(part []byte, base int) error {
		if utf8.Valid(part) {
			return nil
		}
		for i := 0; i < len(part); {
			r, n := utf8.DecodeRune(part[i:])
			if r == utf8.RuneError && n == 1 {
				base += i
				break
			}
			i += n
		}
		l, c := lineCol(b, int64(base))
		return fmt.Errorf("line %d column %d: not valid UTF-8", l, c)
	}
	for _, t := range top {
		vat := t.at + len(t.raw) // the value follows the name (and any space)
		vat += len(b[vat:]) - len(bytes.TrimLeft(b[vat:], " \t\r\n"))
		if err := bad(t.raw, t.at); err != nil {
			return err
		}
		if t.name != "extauthz" {
			if err := bad(t.value, vat); err != nil {
				return err
			}
			continue
		}
		secs, ok := members(t.value)
		if !ok {
			return bad(t.value, vat)
		}
		for _, s := range secs {
			if err := bad(s.raw, vat+s.at); err != nil {
				return err
			}
			if !RawSections[s.name] {
				sat := vat + s.at + len(s.raw)
				sat += len(b[sat:]) - len(bytes.TrimLeft(b[sat:], " \t\r\n"))
				if err := bad(s.value, sat); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func lineCol(b []byte, off int64) (int, int) {
	if off > int64(len(b)) {
		off = int64(len(b))
	}
	pre := b[:off]
	line := bytes.Count(pre, []byte("\n")) + 1
	return line, int(off) - bytes.LastIndexByte(pre, '\n')
}

// Engine is a compiled, prepared policy. It is safe for concurrent use.
type Engine struct {
	pq     rego.PreparedEvalQuery
	purity Purity
	query  string
	envoy  bool // an OPA-Envoy plugin decision (CompileOPAEnvoy)
	inputs *InputPaths
	// blocking: the policy may wait on I/O; it is evaluated on the
	// caller's goroutine (see evaluators.go).
	blocking bool
	// valueCache: OPA's inter-query value cache (WithJWTVerifyCache);
	// nil: none.
	valueCache cache.InterQueryValueCache
}

// parseModules parses src's modules, named by origin and file; errors name
// the file and line.
func parseModules(src *Source) (map[string]*ast.Module, error) {
	mods := map[string]*ast.Module{}
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(src.Modules)) {
		file := path.Join(src.Origin, name)
		m, err := ast.ParseModuleWithOpts(file, src.Modules[name], ast.ParserOptions{RegoVersion: ast.RegoV1})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		mods[file] = m
	}
	return mods, errors.Join(errs...)
}

// Compile parses and compiles the modules against data (the document given to
// the store; the caller may leave out sections it handles itself).
func Compile(ctx context.Context, src *Source, data map[string]any, opts ...Option) (*Engine, error) {
	return compileQuery(ctx, src, data, Query, false, opts)
}

// Option changes how an engine evaluates.
type Option func(*Engine)

// WithJWTVerifyCache keeps the result of verifying a token with a key in
// Rego (io.jwt.decode_verify, io.jwt.verify_*: the signature's validity
// and the decoded header and payload) for up to n tokens and keys across
// the engine's evaluations: OPA's own io_jwt inter-query value cache,
// which OPA leaves off by default. The claims' times (exp, nbf) are still
// checked on every evaluation; when full, OPA drops an entry at random.
// The same value cache then also holds the patterns glob.match and the
// regex builtins compile (up to n; without it OPA keeps its own bounded
// cache of them). n <= 0: off. OPA keys a result on the token and key
// alone, not on the algorithm a call asks for, so a policy whose calls
// could decide differently on one token and key is refused
// (checkJWTCacheUse).
func WithJWTVerifyCache(n int) Option {
	return func(e *Engine) {
		if n <= 0 {
			return
		}
		off := false
		e.valueCache = boundedValueCache{cache.NewInterQueryValueCache(context.Background(), &cache.Config{
			InterQueryBuiltinValueCache: cache.InterQueryBuiltinValueCacheConfig{
				// The cache's global part, which glob.match and the regex
				// builtins use for their compiled patterns once a value
				// cache is given, is bounded too (OPA: unbounded).
				MaxNumEntries: &n,
				NamedCacheConfigs: map[string]*cache.NamedValueCacheConfig{
					jwtCacheName: {MaxNumEntries: &n, Disabled: &off},
				},
			},
		})}
	}
}

// jwtCacheName is OPA's name for its cache of token verifications
// (topdown/tokens.go).
const jwtCacheName = "io_jwt"

// MaxCachedKeyBytes bounds the key of what the value cache keeps: OPA
// caches every verification, a failed one included, keyed on the token, so
// a client's 50 KB tokens would otherwise fill the cache's entries with
// 50 KB each. A longer token (no IdP issues one) is verified every time.
const MaxCachedKeyBytes = 8 << 10

// boundedValueCache is OPA's value cache that keeps nothing keyed on more
// than MaxCachedKeyBytes: its memory is bounded by its entries times that.
type boundedValueCache struct{ cache.InterQueryValueCache }

func (c boundedValueCache) Insert(k ast.Value, v any) int {
	if keyBytes(k, MaxCachedKeyBytes) > MaxCachedKeyBytes {
		return 0
	}
	return c.InterQueryValueCache.Insert(k, v)
}

func (c boundedValueCache) GetCache(name string) cache.InterQueryValueCacheBucket {
	b := c.InterQueryValueCache.GetCache(name)
	if b == nil {
		return nil // OPA tests for nil: the named cache is off
	}
	return boundedBucket{b}
}

type boundedBucket struct {
	cache.InterQueryValueCacheBucket
}

func (b boundedBucket) Insert(k ast.Value, v any) int {
	if keyBytes(k, MaxCachedKeyBytes) > MaxCachedKeyBytes {
		return 0
	}
	return b.InterQueryValueCacheBucket.Insert(k, v)
}

// keyBytes is the bytes of the strings in a cache key (a token and its
// key: [token, key]), counted until past limit.
func keyBytes(v ast.Value, limit int) int {
	switch v := v.(type) {
	case ast.String:
		return len(v)
	case *ast.Array:
		n := 0
		for i := 0; i < v.Len() && n <= limit; i++ {
			n += keyBytes(v.Elem(i).Value, limit-n)
		}
		return n
	case ast.Object:
		n := 0
		v.Foreach(func(k, x *ast.Term) {
			if n <= limit {
				n += keyBytes(k.Value, limit-n) + keyBytes(x.Value, limit-n)
			}
		})
		return n
	}
	return 0
}

// CompileOPAEnvoy compiles a policy written for the OPA-Envoy plugin: the
// query is its decision path (OPAEnvoyQuery), whose value is a boolean or
// the plugin's object (see Envoy); Eval returns it as Output.Envoy with
// reason "ok" or "policy_denied". Such a policy is never pure: its decision
// reads the request, not the sidecar's facts, so it is never memoized.
func CompileOPAEnvoy(ctx context.Context, src *Source, data map[string]any, path string, opts ...Option) (*Engine, error) {
	q, err := OPAEnvoyQuery(path)
	if err != nil {
		return nil, err
	}
	return compileQuery(ctx, src, data, q, true, opts)
}

func compileQuery(ctx context.Context, src *Source, data map[string]any, query string, envoy bool, options []Option) (*Engine, error) {
	mods, err := parseModules(src)
	if err != nil {
		return nil, err
	}
	c := ast.NewCompiler().WithDefaultRegoVersion(ast.RegoV1)
	if c.Compile(mods); c.Failed() {
		return nil, c.Errors
	}
	purity := analyse(c)
	refs, traced := clientIPUses(c)
	purity.ReadsClientIP = refs > 0
	purity.TracesClientIP = purity.Pure && refs > 0 && refs == traced
	if envoy && purity.Pure {
		purity = Purity{Why: "OPA-Envoy compatibility mode (extauthz.settings.opa_envoy_path): the decision is not a function of the sidecar's facts"}
	}
	// Strict builtin errors: a builtin that fails (a bad CIDR given to
	// extauthz.client_in, to_number("abc"), a bad regex) fails the
	// evaluation, which is a deny (internal_error). OPA's default makes the
	// expression undefined instead, so a deny rule whose builtin fails would
	// not fire, and the request would be allowed.
	opts := []func(*rego.Rego){rego.Query(query), rego.Compiler(c), rego.Store(inmem.NewFromObject(data)), rego.StrictBuiltinErrors(true)}
	pq, err := rego.New(opts...).PrepareForEval(ctx)
	if err != nil {
		return nil, fmt.Errorf("prepare %s: %w", query, err)
	}
	e := &Engine{pq: pq, purity: purity, query: query, envoy: envoy, inputs: inputPaths(c), blocking: callsIO(c)}
	for _, o := range options {
		o(e)
	}
	if e.valueCache != nil {
		if err := checkJWTCacheUse(c); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// Query is the query the engine evaluates (Query, or an OPA-Envoy path's).
func (e *Engine) Query() string { return e.query }

// InputPaths is the part of input the policy can read (see InputPaths).
func (e *Engine) InputPaths() *InputPaths {
	if e.inputs == nil {
		return AllInput()
	}
	return e.inputs
}

// OPAEnvoy reports whether the engine evaluates an OPA-Envoy plugin decision.
func (e *Engine) OPAEnvoy() bool { return e.envoy }

// Pure reports whether the decision depends only on input.extauthz facts
// other than request_id, and on data, with no time- or I/O-dependent
// builtin: then it may be memoized by those facts.
func (e *Engine) Pure() bool { return e.purity.Pure }

// Purity explains Pure.
func (e *Engine) Purity() Purity { return e.purity }

// Output is the decision document a policy returns.
type Output struct {
	Allow           bool
	Reason          string
	Variant         string
	Details         map[string]string
	UpstreamHeaders map[string]string
	// Envoy is the decision of an OPA-Envoy compatible policy
	// (CompileOPAEnvoy); nil otherwise.
	Envoy *Envoy
	// IPTests are the tests of the client address the evaluation made,
	// when the policy traces them (Purity.TracesClientIP).
	IPTests IPTrace
}

// Errors returned by Eval. Every one of them must become a deny.
var (
	ErrUndefined = errors.New("policy decision is undefined")
	ErrConflict  = errors.New("policy returned more than one decision")
	ErrShape     = errors.New("policy decision has the wrong shape")
)

var noMetrics = metrics.NoOp()

// eval evaluates the decision for input on the calling goroutine.
func (e *Engine) eval(ctx context.Context, input ast.Value) (Output, error) {
	if err := ctx.Err(); err != nil {
		return Output{}, fmt.Errorf("evaluate policy: %w", err)
	}
	var trace *ipTrace
	if e.purity.TracesClientIP {
		ctx, trace = withIPTrace(ctx)
	}
	// No metrics: rego would otherwise make a set per evaluation and time
	// its phases, and nothing reads them.
	opts := []rego.EvalOption{
		rego.EvalParsedInput(input),
		rego.EvalExternalCancel(&ctxCancel{ctx}),
		rego.EvalMetrics(noMetrics),
	}
	if e.valueCache != nil {
		opts = append(opts, rego.EvalInterQueryBuiltinValueCache(e.valueCache))
	}
	if e.envoy {
		// The decision is read as the OPA value it is (parseEnvoyValue),
		// not converted whole to Go values first.
		opts = append(opts, rego.EvalGenerateJSON(keepTerm))
	}
	rs, err := e.pq.Eval(ctx, opts...)
	if err != nil {
		return Output{}, fmt.Errorf("evaluate policy: %w", err)
	}
	switch {
	case len(rs) == 0 || len(rs[0].Expressions) == 0:
		return Output{}, ErrUndefined
	case len(rs) > 1 || len(rs[0].Expressions) > 1:
		return Output{}, ErrConflict
	}
	if e.envoy {
		t, _ := rs[0].Expressions[0].Value.(*ast.Term)
		if t == nil {
			return Output{}, fmt.Errorf("%w: no value", ErrShape)
		}
		return parseEnvoyValue(t.Value)
	}
	out, err := parseOutput(rs[0].Expressions[0].Value)
	if trace != nil {
		out.IPTests = trace.tests
	}
	return out, err
}

func parseOutput(v any) (Output, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return Output{}, fmt.Errorf("%w: not an object", ErrShape)
	}
	var out Output
	if out.Allow, ok = m["allow"].(bool); !ok {
		return Output{}, fmt.Errorf("%w: allow is not a boolean", ErrShape)
	}
	if out.Reason, ok = m["reason"].(string); !ok {
		return Output{}, fmt.Errorf("%w: reason is not a string", ErrShape)
	}
	if v, ok := m["variant"]; ok {
		if out.Variant, ok = v.(string); !ok {
			return Output{}, fmt.Errorf("%w: variant is not a string", ErrShape)
		}
	}
	var err error
	if out.Details, err = stringMap(m["details"], "details"); err != nil {
		return Output{}, err
	}
	if out.UpstreamHeaders, err = stringMap(m["headers"], "headers"); err != nil {
		return Output{}, err
	}
	for k, v := range out.UpstreamHeaders {
		if err := checkHeader("headers", k, v); err != nil {
			return Output{}, fmt.Errorf("%w: %w", ErrShape, err)
		}
	}
	return out, nil
}

func stringMap(v any, field string) (map[string]string, error) {
	if v == nil {
		return nil, nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%w: %s is not an object", ErrShape, field)
	}
	out := make(map[string]string, len(m))
	for k, x := range m {
		switch x := x.(type) {
		case string:
			out[k] = x
		case json.Number:
			out[k] = x.String()
		default:
			return nil, fmt.Errorf("%w: %s.%s is not a string", ErrShape, field, k)
		}
	}
	return out, nil
}
