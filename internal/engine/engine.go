// Package engine assembles one immutable, ready-to-serve version of the
// policy: the prepared Rego query, the API-key index, the route table, the
// deny profiles, the token verifier and the settings, all built from one
// policy source. A new version is built beside the serving one and swapped in
// atomically; a version that fails to build never replaces a good one.
package engine

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"maps"
	"net/netip"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"weak"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/extauthz/extauthz/internal/authn"
	"github.com/extauthz/extauthz/internal/authn/apikey"
	"github.com/extauthz/extauthz/internal/authn/jwt"
	"github.com/extauthz/extauthz/internal/authn/rediskeys"
	"github.com/extauthz/extauthz/internal/httpheader"
	"github.com/extauthz/extauthz/internal/jsonx"
	"github.com/extauthz/extauthz/internal/memo"
	"github.com/extauthz/extauthz/internal/policy"
	"github.com/extauthz/extauthz/internal/profile"
	"github.com/extauthz/extauthz/internal/ratelimit"
	"github.com/extauthz/extauthz/internal/route"
)

// IdentityHeaders names the request headers set for the upstream on allow.
// An empty name disables that header.
type IdentityHeaders struct {
	Subject string `json:"subject"`
	KeyID   string `json:"key_id"`
	Tenant  string `json:"tenant"`
	Scopes  string `json:"scopes"`
	Kind    string `json:"kind"`
}

// Settings is extauthz.settings in policy data.
type Settings struct {
	DefaultProfile string `json:"default_profile"`
	APIKeyHeader   string `json:"api_key_header"`
	// KeepCredentials forwards Authorization / the API-key header upstream
	// (default false: they are removed on allow).
	KeepCredentials bool            `json:"keep_credentials,omitempty"`
	IdentityHeaders IdentityHeaders `json:"identity_headers"`
	// AllowEmpty lets a version without routes or without credentials
	// serve (it denies every protected request); by default such a version
	// is refused as a deployment mistake (see Servable).
	AllowEmpty bool `json:"allow_empty,omitempty"`
	// OPAEnvoyPath switches the OPA-Envoy compatibility mode on: the policy
	// is one written for the OPA-Envoy plugin and the query is its decision
	// path (the plugin's "path" setting), e.g. "envoy/authz/allow". true or
	// "" in data.json switch it on with that default path; absent, null or
	// false leave it off ("" here).
	OPAEnvoyPath OPAEnvoyPath `json:"opa_envoy_path,omitempty"`
	// APIKeysStore selects where API keys are looked up: absent or type
	// "embedded", extauthz.api_keys; type "redis", Redis (internal/authn/rediskeys).
	APIKeysStore *rediskeys.Config `json:"api_keys_store,omitempty"`
	// JWTVerifyCache is the size of OPA's io_jwt cache: the result of
	// verifying a token with a key in Rego (io.jwt.decode_verify,
	// io.jwt.verify_*) kept for that token and key across checks
	// (policy.WithJWTVerifyCache). 0, the default, is off, as in OPA.
	JWTVerifyCache int `json:"jwt_verify_cache,omitempty"`
}

// MaxJWTVerifyCache bounds settings.jwt_verify_cache.
const MaxJWTVerifyCache = 100_000

// OPAEnvoyPath is settings.opa_envoy_path: the decision path, "" when the
// mode is off.
type OPAEnvoyPath string

// UnmarshalJSON takes a path, "" or true (the default path), or false.
func (p *OPAEnvoyPath) UnmarshalJSON(b []byte) error {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	switch v := v.(type) {
	case nil:
	case bool:
		*p = ""
		if v {
			*p = policy.DefaultOPAEnvoyPath
		}
	case string:
		if strings.Trim(v, "/") == "" {
			v = policy.DefaultOPAEnvoyPath
		}
		if _, err := policy.OPAEnvoyQuery(v); err != nil {
			return err
		}
		*p = OPAEnvoyPath(v)
	default:
		return errors.New("opa_envoy_path must be a decision path such as \"envoy/authz/allow\", or true")
	}
	return nil
}

// DefaultSettings are used for every field data leaves unset.
var DefaultSettings = Settings{
	DefaultProfile: "default",
	APIKeyHeader:   "x-api-key",
	IdentityHeaders: IdentityHeaders{
		Subject: "x-auth-subject", KeyID: "x-auth-key-id", Tenant: "x-auth-tenant",
		Scopes: "x-auth-scopes", Kind: "x-auth-kind",
	},
}

// Engine is one immutable version of the policy.
type Engine struct {
	Version  string
	Origin   string
	Settings Settings
	Policy   *policy.Engine
	Decider  memo.Decider     // the policy, memoized when it is pure
	Keys     *apikey.Store    // the embedded keys (empty with a Redis key store)
	Remote   *rediskeys.Store // the Redis key store, when settings.api_keys_store selects it
	Routes   *route.Table
	Profiles *profile.Set
	Tokens   Tokens            // may be nil
	Limits   *ratelimit.Config // quotas (extauthz.limits); nil = none
	// KeysVersion and JWTVersion fingerprint the extauthz.api_keys and
	// extauthz.jwt sections (SHA-256 of their bytes, 12 hex digits): a
	// decision-log replay decides a presented key no record matched, or a
	// bearer token, exactly only against the sections it was recorded with.
	KeysVersion, JWTVersion string
	// TenantHeaders are the tenant headers routes of the policy read
	// (lower-case, sorted): an allowed request loses those its route does
	// not verify, so that no upstream reads an unverified tenant.
	TenantHeaders []string
	tenantDims    map[string]string // each tenant header's dimension
	// Warnings are what the version allows but a reviewer should know
	// (logged when it loads, printed by extauthz validate).
	Warnings []string

	hasData bool // data.json gave an extauthz object
	issuers int  // extauthz.jwt.issuers entries
	closers []func()
}

// Tokens verifies bearer JWTs (internal/authn/jwt behind an adapter).
type Tokens interface {
	Verify(ctx context.Context, raw string) (authn.Status, *authn.Identity)
	Ready() bool
	Close()
	Files() []jwt.File // the JWKS files read, as they were when read
}

// AwaitReady waits, at most until ctx ends, for every JWKS URL's first
// fetch attempt (what the server's readiness waits for), so that a decision
// made offline (extauthz check, replay) sees the keys the server would.
func (e *Engine) AwaitReady(ctx context.Context) {
	for e.Tokens != nil && !e.Tokens.Ready() {
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// Files are the files outside the policy's own that this version read (the
// issuers' jwks_file), as they were when read: a source watches them too.
func (e *Engine) Files() []jwt.File {
	if e.Tokens == nil {
		return nil
	}
	return e.Tokens.Files()
}

// Options tune building.
type Options struct {
	// Now is the JWT verifier's clock (default time.Now).
	Now func() time.Time
	// OnJWKSFetch is told the outcome of every JWKS URL fetch (metrics).
	OnJWKSFetch func(issuer string, ok bool)
	// KeysProgress, if set, is called about every 100,000 API keys read
	// and once at the end, with the keys read so far and the bytes of
	// extauthz.api_keys read of total (a server may log it: a million keys
	// take a second or two). It runs on the goroutine reading the keys.
	KeysProgress func(keys, offset, total int)
	// KeyStore is given to the Redis key store, when one is configured
	// (fault log, metrics). Versions with the same api_keys_store share
	// one store, made with the options of the first.
	KeyStore rediskeys.Options
}

// keysCache remembers the last key store built and the SHA-256 of the
// api_keys section it came from. A reload whose keys are byte for byte the
// same (a change of routes or limits) shares that store, identities built
// so far included, instead of holding a second copy beside the serving
// one. The store is immutable, so engines may share it; the weak pointer
// lets it go with the last engine that uses it.
var keysCache struct {
	sync.Mutex
	digest [sha256.Size]byte
	store  weak.Pointer[apikey.Store]
}

// parseKeys builds the key store for section sec (nil: none), or shares
// the last one built from the same bytes. The section is read through a
// bounded window, never whole, and hashed again as it is read: a file
// changed in place since it was first read is refused, not indexed under
// the old digest.
func parseKeys(sec *policy.Section, opts Options) (*apikey.Store, error) {
	keysCache.Lock()
	defer keysCache.Unlock() // one key set built at a time: its memory is the peak
	if sec == nil {
		return apikey.Parse(nil)
	}
	if keysCache.digest == sec.Digest {
		if s := keysCache.store.Value(); s != nil {
			return s, nil
		}
	}
	popts := []apikey.Option{apikey.WithCount(sec.Count)}
	if opts.KeysProgress != nil {
		popts = append(popts, apikey.WithProgress(100000, opts.KeysProgress))
	}
	var h hash.Hash
	var r io.Reader
	s, err := apikey.ParseReader(func() io.Reader {
		h = sha256.New()
		r = io.TeeReader(sec.Reader(), h)
		return r
	}, sec.Size, popts...)
	if err != nil {
		return nil, err
	}
	if _, err := io.Copy(io.Discard, r); err != nil {
		return nil, fmt.Errorf("api_keys: %w", err)
	}
	if [sha256.Size]byte(h.Sum(nil)) != sec.Digest {
		return nil, errors.New("api_keys: data.json changed while it was read; the next reload reads it again")
	}
	keysCache.digest, keysCache.store = sec.Digest, weak.Make(s)
	return s, nil
}

// Build compiles src into an engine. Errors name the file or data field.
func Build(ctx context.Context, src *policy.Source, opts Options) (*Engine, error) {
	sections, keysSec, err := splitData(src)
	if err != nil {
		return nil, err
	}
	// API keys (up to millions) are read on their own goroutine while the
	// rest is checked and the policy compiled.
	keysDigest := sha256.Sum256(nil)
	if keysSec != nil {
		keysDigest = keysSec.Digest
	}
	var keysErr error
	keysDone := make(chan struct{})
	var keys *apikey.Store
	go func() {
		defer close(keysDone)
		keys, keysErr = parseKeys(keysSec, opts)
	}()
	defer func() { <-keysDone }()
	var errs []error
	e := &Engine{Origin: src.Origin}
	_, e.hasData = src.Data["extauthz"].(map[string]any)
	at := src.Origin + ": data.json: extauthz." // errors name the file and field

	e.Settings = DefaultSettings
	if raw := sections["settings"]; raw != nil {
		if err := jsonx.Strict(raw, &e.Settings); err != nil {
			errs = append(errs, jsonx.At(at+"settings", err))
		}
		fillDefaults(&e.Settings)
	}
	e.Settings.APIKeyHeader = strings.ToLower(e.Settings.APIKeyHeader)
	for _, err := range checkHeaderSettings(&e.Settings) {
		errs = append(errs, fmt.Errorf("%s%w", at, err))
	}

	defs, err := profile.ParseDefinitions(sections["profiles"])
	if err != nil {
		errs = append(errs, fmt.Errorf("%s%w", at, err))
	}
	if e.Profiles, err = profile.NewSet(defs); err != nil {
		errs = append(errs, fmt.Errorf("%s%w", at, err))
	}
	hasProfile := func(n string) bool {
		if e.Profiles == nil {
			return true
		}
		_, ok := e.Profiles.Get(n)
		return ok
	}
	if !hasProfile(e.Settings.DefaultProfile) {
		errs = append(errs, fmt.Errorf("%ssettings.default_profile: unknown profile %q", at, e.Settings.DefaultProfile))
	}
	if n := e.Settings.JWTVerifyCache; n < 0 || n > MaxJWTVerifyCache {
		errs = append(errs, fmt.Errorf("%ssettings.jwt_verify_cache: %d is outside [0, %d]", at, n, MaxJWTVerifyCache))
	}
	keysAt := len(errs) // key errors go here, in the order they always had
	if e.Routes, err = route.Parse(sections["routes"], sections["default_route"], hasProfile); err != nil {
		errs = append(errs, prefix(at, err))
	} else {
		e.tenantDims = map[string]string{}
		for _, r := range e.Routes.All() {
			for i, th := range r.Req.TenantHeaders {
				if d, ok := e.tenantDims[th.Key]; ok && d != th.Dimension {
					errs = append(errs, fmt.Errorf("%sroutes: route %q: tenant_headers[%d]: %s is checked in dimension %q here and %q on another route: a value verified in one would reach the other's upstream as if verified in its own", at, r.ID, i, th.Header, th.Dimension, d))
					continue
				}
				if _, ok := e.tenantDims[th.Key]; !ok {
					e.tenantDims[th.Key] = th.Dimension
					e.TenantHeaders = append(e.TenantHeaders, th.Key)
				}
			}
		}
		slices.Sort(e.TenantHeaders)
		for _, r := range e.Routes.All() {
			if err := e.CheckTenantHeaders(r); err != nil {
				errs = append(errs, fmt.Errorf("%sroutes: route %q: %w", at, r.ID, err))
			}
		}
	}
	if raw := sections["limits"]; raw != nil {
		if e.Limits, err = ratelimit.ParseConfig(raw); err != nil {
			var ce *ratelimit.ConfigError
			if errors.As(err, &ce) {
				for _, p := range ce.Problems {
					errs = append(errs, fmt.Errorf("%s%s", at, p))
				}
			} else {
				errs = append(errs, prefix(at, err))
			}
		}
	}
	if e.Limits != nil && e.Routes != nil {
		// A route quota under an id no route has would limit nothing.
		for _, id := range slices.Sorted(maps.Keys(e.Limits.Routes)) {
			if _, ok := e.Routes.ByID(id); !ok && (id != route.DefaultID || !e.Routes.HasDefault()) {
				errs = append(errs, fmt.Errorf("%s%s: names no route in extauthz.routes", at, jsonx.Field("limits.routes", id)))
			}
		}
	}
	if ks := e.Settings.APIKeysStore; ks != nil {
		if ks.Redis() && ks.Addr == "" && e.Limits != nil && e.Limits.Backend.Type == ratelimit.BackendRedis {
			ks.Addr = e.Limits.Backend.Addr // the quotas' Redis
		}
		for _, p := range ks.Check() {
			errs = append(errs, fmt.Errorf("%ssettings.api_keys_store.%s", at, p))
		}
		if ks.Redis() && keysSec != nil && !keysSec.Empty() {
			errs = append(errs, fmt.Errorf("%sapi_keys: must be absent with settings.api_keys_store type redis: keys are looked up in Redis (import them: extauthz key import --redis ADDR FILE)", at))
		}
	}
	plansAt := len(errs) // unknown plans: after the limits' errors
	if err := checkTenants(sections["tenants"]); err != nil {
		errs = append(errs, prefix(at, err))
	}
	if raw := sections["jwt"]; raw != nil {
		var j struct {
			Issuers []struct {
				JWKSURL string `json:"jwks_url"`
			}
		}
		_ = json.Unmarshal(raw, &j)
		e.issuers = len(j.Issuers)
		for i, is := range j.Issuers {
			if plainHTTP(is.JWKSURL) {
				e.Warnings = append(e.Warnings, fmt.Sprintf("%sjwt.issuers[%d].jwks_url: plain http to a host that is not loopback: anyone on the way can replace the keys and sign tokens; use https", at, i))
			}
		}
	}
	var compileErr error
	if len(errs) == 0 { // compiled while the keys are read; wasted if they are bad
		if p := e.Settings.OPAEnvoyPath; p != "" {
			// The decision reads the request itself: never memoized.
			e.Policy, compileErr = policy.CompileOPAEnvoy(ctx, src, storeData(src.Data), string(p), policy.WithJWTVerifyCache(e.Settings.JWTVerifyCache))
		} else {
			e.Policy, compileErr = policy.Compile(ctx, src, storeData(src.Data), policy.WithJWTVerifyCache(e.Settings.JWTVerifyCache))
		}
	}
	<-keysDone
	e.Keys, e.Version = keys, version(src, keysDigest)
	e.KeysVersion = hex.EncodeToString(keysDigest[:6])
	jwtDigest := sha256.Sum256(sections["jwt"])
	e.JWTVersion = hex.EncodeToString(jwtDigest[:6])
	var planErrs []error
	if e.Keys != nil && (sections["limits"] == nil || e.Limits != nil) {
		// A key's plan that names no plan would get no quota at all.
		var plans map[string]ratelimit.Plan
		if e.Limits != nil {
			plans = e.Limits.Plans
		}
		known := func(p string) bool { _, ok := plans[p]; return ok }
		if err := e.Keys.CheckPlans(known, 20); err != nil {
			names := "none defined"
			if len(plans) > 0 {
				names = "known: " + strings.Join(slices.Sorted(maps.Keys(plans)), ", ")
			}
			planErrs = append(planErrs, prefix(at, suffix(err, " (extauthz.limits.plans: "+names+")")))
		}
	}
	if e.Keys != nil && e.Keys.Len() > 0 {
		planErrs = append(planErrs, tenantKeysInOtherDimensions(at, sections["tenants"], e.Limits, e.Keys.Dimensions())...)
	}
	errs = slices.Insert(errs, plansAt, planErrs...)
	if keysErr != nil {
		errs = slices.Insert(errs, keysAt, prefix(at, keysErr))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if compileErr != nil {
		return nil, compileErr
	}
	if e.Settings.OPAEnvoyPath != "" {
		e.Decider = memo.Plain{Policy: e.Policy}
	} else {
		e.Decider = memo.For(e.Policy)
	}
	// Warm the evaluator so the first real check does not pay for it; a slow
	// policy must not stall loading.
	wctx, cancel := context.WithTimeout(ctx, 250*time.Millisecond)
	_, _ = e.Policy.Eval(wctx, warmInput)
	cancel()
	if sections["jwt"] != nil {
		baseDir := src.Origin // relative jwks_file paths are the policy directory's
		if strings.HasPrefix(baseDir, "embedded:") {
			baseDir = ""
		}
		if e.Tokens, err = buildTokens(ctx, sections["jwt"], baseDir, opts); err != nil {
			if _, ok := jsonx.Problems(err); ok { // decoding: the paths are relative
				return nil, jsonx.At(src.Origin+": data.json: extauthz.jwt", err)
			}
			return nil, fmt.Errorf("%s: data.json: extauthz.jwt.%w", src.Origin, err)
		}
		e.closers = append(e.closers, e.Tokens.Close)
	}
	if ks := e.Settings.APIKeysStore; ks.Redis() {
		e.Remote = rediskeys.Shared(*ks, opts.KeyStore)
		e.closers = append(e.closers, e.Remote.Release)
	}
	return e, nil
}

// LookupKey verifies a presented API key at time now: in Redis (through
// its cache) when the version uses a Redis key store, else in the embedded
// keys.
func (e *Engine) LookupKey(ctx context.Context, key string, now time.Time) apikey.Result {
	if e.Remote != nil {
		return e.Remote.Lookup(ctx, key, now)
	}
	return e.Keys.Lookup(key, now)
}

var warmInput = ast.MustParseTerm(`{"extauthz": {"path_problem": "", "route": null, "credential": {"status": "missing"}}}`).Value

// Close releases background work (JWKS refresh) of a retired engine.
func (e *Engine) Close() {
	for _, c := range e.closers {
		c()
	}
}

// checkHeaderSettings says what is wrong with the header names in s: the
// API-key header must be one a client can send an API key in, and each
// identity header one Envoy can set on the upstream request, not a
// credential header (removed on allow), and not another identity header's.
func checkHeaderSettings(s *Settings) []error {
	var errs []error
	if err := httpheader.Upstream(s.APIKeyHeader); err != nil || s.APIKeyHeader == "authorization" {
		errs = append(errs, fmt.Errorf("settings.api_key_header: %q is not a header for API keys (a lower-case header name other than authorization, host, a hop-by-hop header or a pseudo-header)", s.APIKeyHeader))
	}
	ih := s.IdentityHeaders
	seen := map[string]string{}
	for _, f := range [...]struct{ field, name string }{{"subject", ih.Subject}, {"key_id", ih.KeyID}, {"tenant", ih.Tenant}, {"scopes", ih.Scopes}, {"kind", ih.Kind}} {
		if f.name == "" {
			continue // disabled
		}
		at := "settings.identity_headers." + f.field
		if err := httpheader.Upstream(f.name); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", at, err))
		} else if httpheader.Credential(f.name) || f.name == s.APIKeyHeader {
			errs = append(errs, fmt.Errorf("%s: %q carries credentials (removed on allow)", at, f.name))
		} else if prev, dup := seen[f.name]; dup {
			errs = append(errs, fmt.Errorf("%s: %q is also identity_headers.%s", at, f.name, prev))
		}
		seen[f.name] = f.field
	}
	return errs
}

func fillDefaults(s *Settings) {
	d := DefaultSettings
	if s.DefaultProfile == "" {
		s.DefaultProfile = d.DefaultProfile
	}
	if s.APIKeyHeader == "" {
		s.APIKeyHeader = d.APIKeyHeader
	}
	ih := &s.IdentityHeaders
	for _, p := range []*string{&ih.Subject, &ih.KeyID, &ih.Tenant, &ih.Scopes, &ih.Kind} {
		*p = strings.ToLower(*p)
	}
}

// splitData gives each section of data.extauthz as JSON, and the API keys
// apart: a section left in the file (policy.Section), read only by
// parseKeys.
func splitData(src *policy.Source) (map[string]json.RawMessage, *policy.Section, error) {
	root, _ := src.Data["extauthz"].(map[string]any)
	if root == nil {
		if _, present := src.Data["extauthz"]; present {
			return nil, nil, fmt.Errorf("%s: data.json: extauthz must be an object", src.Origin)
		}
		return map[string]json.RawMessage{}, nil, nil
	}
	known := []string{"settings", "api_keys", "jwt", "routes", "default_route", "tenants", "profiles", "limits"}
	out := map[string]json.RawMessage{}
	var keys *policy.Section
	var errs []error
	for _, k := range slices.Sorted(maps.Keys(root)) {
		if !slices.Contains(known, k) {
			errs = append(errs, fmt.Errorf("%s: data.json: extauthz.%s: unknown section (known: %s)", src.Origin, k, strings.Join(known, ", ")))
			continue
		}
		if sec, ok := root[k].(*policy.Section); ok {
			keys = sec
			continue
		}
		b, ordered := src.Ordered[k] // as written: its member order means something
		if ordered && !sameJSON(b, root[k]) {
			ordered = false // data merged from elsewhere too (a bundle's nested data files)
		}
		var err error
		if !ordered {
			b, err = json.Marshal(root[k])
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: data.json: extauthz.%s: %w", src.Origin, k, err))
			continue
		}
		if k == "api_keys" { // decoded (a bundle, an edited source)
			keys = policy.BytesSection(b)
			continue
		}
		out[k] = b
	}
	return out, keys, errors.Join(errs...)
}

// sameJSON reports whether b decodes to v (numbers compared as written).
func sameJSON(b []byte, v any) bool {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var w any
	return d.Decode(&w) == nil && reflect.DeepEqual(w, v)
}

// storeData is the data document given to OPA: everything but the API-key
// records, which the sidecar indexes itself (and which would cost memory in
// the store).
func storeData(d map[string]any) map[string]any {
	out := maps.Clone(d)
	if root, ok := d["extauthz"].(map[string]any); ok {
		r := maps.Clone(root)
		delete(r, "api_keys")
		out["extauthz"] = r
	}
	return out
}

// version hashes the modules and data; the API keys (up to millions) by
// the SHA-256 of their raw section, keys.
func version(src *policy.Source, keys [sha256.Size]byte) string {
	h := sha256.New()
	for _, n := range slices.Sorted(maps.Keys(src.Modules)) {
		h.Write([]byte(n))
		h.Write([]byte{0})
		h.Write([]byte(src.Modules[n]))
		h.Write([]byte{0})
	}
	// Raw sections are not re-encoded with the rest: the API keys by the
	// digest Build computed, any other as it is.
	data := maps.Clone(src.Data)
	if root, ok := data["extauthz"].(map[string]any); ok {
		r := maps.Clone(root)
		for _, k := range slices.Sorted(maps.Keys(policy.RawSections)) {
			if sec, ok := r[k].(*policy.Section); ok {
				delete(r, k)
				h.Write([]byte(k))
				h.Write([]byte{0})
				if k == "api_keys" {
					h.Write(keys[:])
				} else {
					h.Write(sec.Digest[:])
				}
				h.Write([]byte{0})
			}
		}
		data["extauthz"] = r
	}
	b, _ := json.Marshal(data)
	h.Write(b)
	return hex.EncodeToString(h.Sum(nil))[:12]
}

// OPAEnvoy reports whether the version runs an OPA-Envoy plugin policy.
func (e *Engine) OPAEnvoy() bool { return e.Settings.OPAEnvoyPath != "" }

// Servable refuses a version that would deny every request because of a
// deployment mistake rather than by intent: no data.json (or no extauthz
// object in it), no routes (nor a default route), or no credentials (no API
// keys and no JWT issuers). extauthz.settings.allow_empty: true lets such a
// version serve, and so does the OPA-Envoy compatibility mode (the plugin's
// policy decides alone). Reloads and startup call it; a refused version never
// replaces the serving one.
func (e *Engine) Servable() error {
	if !e.hasData {
		return fmt.Errorf("%s: refused: no data.json with an \"extauthz\" object (routes, credentials): every request would be denied", e.Origin)
	}
	if e.Settings.AllowEmpty || e.Settings.OPAEnvoyPath != "" {
		return nil // allow_empty, or an OPA-Envoy policy: it needs neither routes nor credentials
	}
	var why []string
	if e.Routes == nil || (e.Routes.Len() == 0 && !e.Routes.HasDefault()) {
		why = append(why, "no routes (extauthz.routes is empty and there is no default_route)")
	}
	if (e.Keys == nil || e.Keys.Len() == 0) && e.Remote == nil && e.issuers == 0 {
		why = append(why, "no credentials (no extauthz.api_keys and no extauthz.jwt.issuers)")
	}
	if len(why) == 0 {
		return nil
	}
	return fmt.Errorf("%s: data.json: refused: %s; every request would be denied (set extauthz.settings.allow_empty: true to serve it anyway)", e.Origin, strings.Join(why, " and "))
}

// checkTenants validates extauthz.tenants: tenant (authn.TenantKey: the id,
// or dimension:id) -> {"allowed_cidrs": [CIDR, ...]}. Other fields of a
// tenant are left to the policy.
func checkTenants(raw json.RawMessage) error {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	var tenants map[string]json.RawMessage
	if err := json.Unmarshal(raw, &tenants); err != nil {
		return errors.New("tenants: must be an object of tenant id -> {\"allowed_cidrs\": [...]}")
	}
	var errs []error
	for _, id := range slices.Sorted(maps.Keys(tenants)) {
		where := fmt.Sprintf("tenants[%q]", id)
		if err := authn.CheckTenantKey(id); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
		}
		var t map[string]json.RawMessage
		if err := json.Unmarshal(tenants[id], &t); err != nil || t == nil {
			errs = append(errs, fmt.Errorf("%s: must be an object", where))
			continue
		}
		c, ok := t["allowed_cidrs"]
		if !ok || string(c) == "null" {
			continue
		}
		var cidrs []string
		if err := json.Unmarshal(c, &cidrs); err != nil {
			errs = append(errs, fmt.Errorf("%s.allowed_cidrs: must be an array of CIDRs", where))
			continue
		}
		for i, s := range cidrs {
			if _, err := netip.ParsePrefix(s); err != nil {
				errs = append(errs, fmt.Errorf("%s.allowed_cidrs[%d]: not a CIDR: %q", where, i, s))
			}
		}
	}
	return errors.Join(errs...)
}

func suffix(err error, s string) error {
	var out []error
	for _, e := range unjoinAll(err) {
		out = append(out, fmt.Errorf("%w%s", e, s))
	}
	return errors.Join(out...)
}

func unjoinAll(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func prefix(p string, err error) error {
	var out []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			out = append(out, prefix(p, e))
		}
		return errors.Join(out...)
	}
	return fmt.Errorf("%s%w", p, err)
}

// Holder serves the current engine and swaps in new ones atomically. Checks
// in flight keep the engine they loaded.
type Holder struct{ p atomic.Pointer[Engine] }

// Current is the serving engine (nil before the first Store).
func (h *Holder) Current() *Engine { return h.p.Load() }

// Store swaps in e and returns the engine it replaced.
func (h *Holder) Store(e *Engine) *Engine { return h.p.Swap(e) }

// buildTokens builds the JWT verifier of extauthz.jwt.
func buildTokens(ctx context.Context, raw json.RawMessage, baseDir string, opts Options) (Tokens, error) {
	t, err := jwt.NewTokens(ctx, raw, baseDir, opts.Now, opts.OnJWKSFetch)
	if err != nil {
		return nil, err // not a typed nil in the interface
	}
	return t, nil
}

// HasPlan reports whether extauthz.limits.plans defines plan name.
func (e *Engine) HasPlan(name string) bool {
	if e.Limits == nil {
		return false
	}
	_, ok := e.Limits.Plans[name]
	return ok
}

// CheckTenantHeaders says why a route's tenant headers cannot be used with
// this policy: one is the API-key header, whose value (the key) a tenant
// denial would echo and the decision log would keep; or one (named by a
// context extension's tenant_header) is a header no route of the policy
// declares, which the allowed requests of every other route would pass to
// their upstreams unverified, as only the declared ones are removed there.
// Routes from data are checked at load; routes a context extension
// overrides, at check time (and by extauthz validate --envoy).
func (e *Engine) CheckTenantHeaders(r *route.Route) error {
	for i, th := range r.Req.TenantHeaders {
		if th.Key == e.Settings.APIKeyHeader {
			return fmt.Errorf("tenant_headers[%d].header: %q is settings.api_key_header: the API key would be echoed in denies and logged", i, th.Header)
		}
		ih := e.Settings.IdentityHeaders
		if slices.ContainsFunc([]string{ih.Subject, ih.KeyID, ih.Tenant, ih.Scopes, ih.Kind}, func(n string) bool { return n != "" && strings.ToLower(n) == th.Key }) {
			return fmt.Errorf("tenant_headers[%d].header: %q is an identity header the sidecar sets on allowed requests: a client's value and the verified one would share a name", i, th.Header)
		}
		d, ok := e.tenantDims[th.Key]
		if !ok {
			return fmt.Errorf("tenant header %q is declared by no route of the policy, so routes that do not verify it would pass a client's value to their upstreams: declare it in a policy route's tenant_headers", th.Header)
		}
		if d != th.Dimension {
			return fmt.Errorf("tenant header %q is checked in dimension %q here, but the policy's routes check it in dimension %q: its value would reach the upstream as verified in %q", th.Header, th.Dimension, d, d)
		}
	}
	return nil
}

// tenantKeysInOtherDimensions refuses an entry of tenants or
// limits.tenants written as a bare id (dimension tenant) that no key holds
// in dimension tenant but some key holds in another: written before tenants
// of other dimensions were named dimension:id, it would now apply to no
// request at all, silently (an allowlist or a quota gone).
func tenantKeysInOtherDimensions(at string, tenantsRaw json.RawMessage, limits *ratelimit.Config, held map[string]map[string]bool) []error {
	var errs []error
	check := func(path, k string) {
		dims := held[k]
		if strings.Contains(k, ":") || len(dims) == 0 || dims[authn.DefaultDimension] {
			return
		}
		others := slices.Sorted(maps.Keys(dims))
		errs = append(errs, fmt.Errorf("%s%s: names tenant %q of dimension %q, which no key holds; keys hold it in dimension %s: write %q", at, jsonx.Field(path, k), k, authn.DefaultDimension, strings.Join(others, ", "), authn.TenantKey(others[0], k)))
	}
	var tenants map[string]json.RawMessage
	_ = json.Unmarshal(tenantsRaw, &tenants)
	for _, k := range slices.Sorted(maps.Keys(tenants)) {
		check("tenants", k)
	}
	if limits != nil {
		for _, k := range slices.Sorted(maps.Keys(limits.Tenants)) {
			check("limits.tenants", k)
		}
	}
	return errs
}

// plainHTTP reports a URL fetched in clear text from another machine.
func plainHTTP(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil || !strings.EqualFold(u.Scheme, "http") {
		return false
	}
	h := u.Hostname()
	if strings.EqualFold(h, "localhost") {
		return false
	}
	ip, err := netip.ParseAddr(h)
	return err != nil || !ip.IsLoopback()
}
