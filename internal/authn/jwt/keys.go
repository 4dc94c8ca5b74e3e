package jwt

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	gojwt "github.com/golang-jwt/jwt/v5"
	"golang.org/x/time/rate"

	"github.com/extauthz/extauthz/internal/fileid"
)

// Unknown kids: a token whose kid is not in a JWKS URL's set asks for a
// refresh, at most one every unknownKIDRefreshEvery (burst 1), so a flood of
// random kids costs the provider one request. The refresh runs on the key
// set's own context, bounded by DefaultHTTPTimeout, not on the check's: a
// provider slower than --check-timeout still gets its newly published key
// in (a refresh under the check's 200ms deadline was cancelled every time,
// and the key stayed unknown until the scheduled refresh). The check that
// asked waits for it within its own deadline, as do checks arriving while
// it is in flight; others are refused at once.
const unknownKIDRefreshEvery = 30 * time.Second

var (
	errSymmetricKey = errors.New("symmetric (oct) keys are never used")
	errNoUsableKey  = errors.New("no usable verification key")
	errAmbiguousKey = errors.New("token has no kid and the key set holds several keys")
	errAlgMismatch  = errors.New("token has no kid and the key's alg is not the token's")
)

// keySource is an issuer's loaded key set.
type keySource struct {
	kf        keyfunc.Keyfunc
	refresh   func(ctx context.Context) // a JWKS URL's: fetch now (nil for files)
	withdrawn bool                      // a JWKS file listing no key: its owner withdrew them all
	// gen counts the key sets a JWKS URL served that differ from the one
	// before: a result verified under an earlier one is verified again,
	// so a token whose key left the set is not served from the cache.
	gen atomic.Uint64
	// unknownKID starts a refresh for an unknown kid, or joins the one in
	// flight, and says when it is done; nil when the limiter has none to
	// give (a JWKS URL's; nil for files).
	unknownKID func() <-chan struct{}
}

// keyfunc returns the per-request jwt.Keyfunc: keyfunc's lookup bounded by
// ctx, with symmetric keys dropped. Only kid and alg of the header are read;
// jku, x5u, x5c and jwk headers are never honoured.
func (s *keySource) keyfunc(ctx context.Context) gojwt.Keyfunc {
	inner := s.kf.KeyfuncCtx(ctx)
	return func(t *gojwt.Token) (any, error) {
		if _, hasKID := t.Header[jwkset.HeaderKID]; !hasKID {
			return s.keyWithoutKID(ctx, t.Method.Alg())
		}
		k, err := inner(t)
		if errors.Is(err, jwkset.ErrKeyNotFound) && s.unknownKID != nil && ctx.Err() == nil {
			if done := s.unknownKID(); done != nil {
				select {
				case <-done:
					k, err = inner(t)
				case <-ctx.Done():
				}
			}
		}
		if err != nil {
			return nil, err
		}
		return usableKey(k)
	}
}

// keyWithoutKID is the key for a token without kid: the only key of the
// set a token could be verified with (not kty "oct", not use "enc"), held
// to the token's alg when the JWK names one, as keyfunc checks for a kid.
// keyfunc itself hands a kid-less token every key of the set, unchecked.
func (s *keySource) keyWithoutKID(ctx context.Context, alg string) (any, error) {
	jwks, err := s.kf.Storage().KeyReadAll(ctx)
	if err != nil {
		return nil, err
	}
	var only jwkset.JWK
	n := 0
	for _, j := range jwks {
		if m := j.Marshal(); m.KTY != jwkset.KtyOct && m.USE != jwkset.UseEnc {
			only, n = j, n+1
		}
	}
	switch {
	case n == 0:
		return nil, errNoUsableKey
	case n > 1:
		return nil, errAmbiguousKey
	case only.Marshal().ALG != "" && only.Marshal().ALG.String() != alg:
		return nil, errAlgMismatch
	}
	key := only.Key()
	if pk, ok := key.(interface{ Public() crypto.PublicKey }); ok {
		key = pk.Public()
	}
	return usableKey(key)
}

// usableKey drops HMAC secrets (JWKs with kty "oct") so they can never verify
// a token, even if an allowlist were misconfigured. A token without kid gets
// the whole key set from keyfunc; it is accepted only when exactly one usable
// key remains, so a kid-less token never costs more than one signature check.
func usableKey(k any) (any, error) {
	switch k := k.(type) {
	case []byte:
		return nil, errSymmetricKey
	case gojwt.VerificationKeySet:
		var only gojwt.VerificationKey
		n := 0
		for _, key := range k.Keys {
			if _, sym := key.([]byte); !sym {
				only, n = key, n+1
			}
		}
		switch n {
		case 0:
			return nil, errNoUsableKey
		case 1:
			return only, nil
		}
		return nil, errAmbiguousKey
	}
	return k, nil
}

// hasKeys reports whether the key set holds any key at all; an issuer without
// keys (JWKS never loaded, or served empty) makes key errors Unavailable.
func (s *keySource) hasKeys(ctx context.Context) bool {
	if s.withdrawn {
		return true // none to have: the issuer's tokens are invalid, not unverifiable
	}
	keys, err := s.kf.Storage().KeyReadAll(ctx)
	return err == nil && len(keys) > 0
}

// loadJWKSFile reads a JWKS file into memory storage, keeping only public
// signature keys: kty "oct" and use "enc" keys are dropped, private parts are
// ignored, and key types jwkset does not support are skipped.
func loadJWKSFile(ctx context.Context, path string, algs []string) (*keySource, File, error) {
	target, err := filepath.EvalSymlinks(path) // a Secret volume's file is a link into its current version
	if err != nil {
		target = path // Open says what is wrong with it
	}
	f, err := os.Open(target)
	if err != nil {
		return nil, File{}, err
	}
	defer f.Close()
	st, err := f.Stat() // before reading: a later change is seen as one
	if err != nil {
		return nil, File{}, err
	}
	raw, err := io.ReadAll(io.LimitReader(f, maxJWKSBytes+1))
	if err != nil {
		return nil, File{}, err
	}
	file := File{Path: path, Target: target, Size: st.Size(), ModTime: st.ModTime(), ID: fileid.Of(st)}
	if withdrawn(raw) {
		return &keySource{kf: emptyKeyfunc(ctx), withdrawn: true}, file, nil
	}
	ks, err := loadJWKS(ctx, raw, algs)
	return ks, file, err
}

// withdrawn reports a JWKS file that lists no key at all ({"keys": []}):
// its owner withdrew every key, and the issuer's tokens are refused as
// signed by an unknown key. (A file that lists keys of which none can be
// used is a mistake, reported at load like any other.)
func withdrawn(raw []byte) bool {
	var set struct {
		Keys *[]json.RawMessage `json:"keys"`
	}
	return json.Unmarshal(raw, &set) == nil && set.Keys != nil && len(*set.Keys) == 0
}

func emptyKeyfunc(ctx context.Context) keyfunc.Keyfunc {
	kf, _ := keyfunc.New(keyfunc.Options{Ctx: ctx, Storage: jwkset.NewMemoryStorage()}) // fails only without storage
	return kf
}

// File is a file a verifier read its keys from, as it was when read: a
// policy source watches it, so that a changed key set (a signing key
// removed) loads a new version wherever the file lives.
type File struct {
	Path    string
	Target  string // Path with its symbolic links resolved
	Size    int64
	ModTime time.Time
	ID      string // fileid.Of: the inode and change time
}

// Stamp is f as a source compares it.
func (f File) Stamp() string {
	return fmt.Sprintf("%s\x00%s\x00%d\x00%d\x00%s", f.Path, f.Target, f.Size, f.ModTime.UnixNano(), f.ID)
}

// StatFile is path as it is now (Size -1 when it cannot be read).
func StatFile(path string) File {
	f := File{Path: path, Size: -1}
	target, err := filepath.EvalSymlinks(path)
	if err != nil {
		return f
	}
	st, err := os.Stat(target)
	if err != nil {
		return f
	}
	f.Target, f.Size, f.ModTime, f.ID = target, st.Size(), st.ModTime(), fileid.Of(st)
	return f
}

// loadJWKS builds a key source from JWKS bytes (a file or inline data). At
// least one key must be usable with one of algs (the issuer's allowlist):
// otherwise every token of the issuer would be refused, and that is a
// configuration mistake to report at load.
func loadJWKS(ctx context.Context, raw []byte, algs []string) (*keySource, error) {
	store, err := parseJWKS(ctx, raw, algs)
	if err != nil {
		return nil, err
	}
	kf, err := keyfunc.New(keyfunc.Options{Ctx: ctx, Storage: store})
	if err != nil {
		return nil, err
	}
	return &keySource{kf: kf}, nil
}

// parseJWKS is the key set loadJWKS loads, with the same checks: one JSON
// value (nothing after it), no kid twice, at least one key usable with
// algs.
func parseJWKS(ctx context.Context, raw []byte, algs []string) (jwkset.Storage, error) {
	if len(raw) > maxJWKSBytes {
		return nil, fmt.Errorf("larger than %d bytes", maxJWKSBytes)
	}
	var set jwkset.JWKSMarshal
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&set); err != nil {
		return nil, fmt.Errorf("not a JWKS: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("not a JWKS: more after the JSON value")
	}
	store := jwkset.NewMemoryStorage()
	n, usable := 0, 0
	kids := map[string]int{}
	for i, m := range set.Keys {
		if m.KTY == jwkset.KtyOct || m.USE == jwkset.UseEnc {
			continue
		}
		if j, dup := kids[m.KID]; dup && m.KID != "" {
			return nil, fmt.Errorf("keys[%d]: kid %q already used by keys[%d]", i, m.KID, j)
		}
		kids[m.KID] = i
		jwk, err := jwkset.NewJWKFromMarshal(m, jwkset.JWKMarshalOptions{}, jwkset.JWKValidateOptions{})
		if errors.Is(err, jwkset.ErrUnsupportedKey) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("keys[%d]: %w", i, err)
		}
		if err := store.KeyWrite(ctx, jwk); err != nil {
			return nil, fmt.Errorf("keys[%d]: %w", i, err)
		}
		n++
		if usableWith(m, algs) {
			usable++
		}
	}
	if n == 0 {
		return nil, errors.New("no usable signature keys (kty oct and use enc keys are ignored)")
	}
	if usable == 0 {
		return nil, fmt.Errorf("no key can verify any of the issuer's algorithms %v (each key's alg, or its kty when it names none)", algs)
	}
	return store, nil
}

// usableWith reports whether key m can verify a token in one of algs: its
// alg is one of them, or it names none and its type fits one.
func usableWith(m jwkset.JWKMarshal, algs []string) bool {
	if m.ALG != "" {
		return slices.Contains(algs, m.ALG.String())
	}
	for _, a := range algs {
		switch {
		case m.KTY == jwkset.KtyRSA && (strings.HasPrefix(a, "RS") || strings.HasPrefix(a, "PS")),
			m.KTY == jwkset.KtyEC && strings.HasPrefix(a, "ES"),
			m.KTY == jwkset.KtyOKP && a == "EdDSA":
			return true
		}
	}
	return false
}

// newJWKSURL builds the keyfunc for a remote JWKS. It performs the first
// fetch synchronously (bounded by DefaultHTTPTimeout) and never fails on it;
// refreshes then run every refreshEvery until ctx is done. The key source's
// refresh fetches once more, keeping the keys when that fetch fails.
func newJWKSURL(ctx context.Context, issuer, rawURL string, algs []string, refreshEvery time.Duration, client *http.Client, onFetch func(issuer string, ok bool), seed *keySource) (*keySource, error) {
	logFailure := refreshLogger(issuer, rawURL)
	ks := &keySource{}
	{
		next := client.Transport
		if next == nil {
			next = http.DefaultTransport
		}
		c := *client
		c.Transport = checkedTransport{next: next, algs: algs}
		if onFetch != nil {
			c.Transport = fetchReporter{next: c.Transport, issuer: issuer, report: onFetch}
		}
		client = &c
	}
	mem := jwkset.NewMemoryStorage()
	if seed != nil { // the keys another key set of this URL serves, until a fetch replaces them
		if keys, err := seed.kf.Storage().KeyReadAll(ctx); err == nil {
			for _, k := range keys {
				_ = mem.KeyWrite(ctx, k)
			}
		}
	}
	store := &genStorage{Storage: mem, ks: ks} // the keys, replaced whole by each successful fetch
	fetch := jwkset.HTTPClientStorageOptions{Client: client, Ctx: ctx, HTTPTimeout: DefaultHTTPTimeout, Storage: store}
	scheduled := fetch
	scheduled.NoErrorReturnFirstHTTPReq = true
	scheduled.RefreshErrorHandler = logFailure
	scheduled.RefreshInterval = refreshEvery
	remote, err := jwkset.NewStorageFromHTTP(rawURL, scheduled)
	if err != nil {
		return nil, err
	}
	storage, err := jwkset.NewHTTPClient(jwkset.HTTPClientOptions{
		HTTPURLs: map[string]jwkset.Storage{rawURL: remote},
	})
	if err != nil {
		return nil, err
	}
	kf, err := keyfunc.New(keyfunc.Options{Ctx: ctx, Storage: storage})
	if err != nil {
		return nil, err
	}
	ks.kf = kf
	ks.refresh = func(ctx context.Context) {
		once := fetch
		once.Ctx = ctx
		if _, err := jwkset.NewStorageFromHTTP(rawURL, once); err != nil {
			logFailure(ctx, err)
		}
	}
	limit := rate.NewLimiter(rate.Every(unknownKIDRefreshEvery), 1)
	var mu sync.Mutex
	var inflight chan struct{}
	ks.unknownKID = func() <-chan struct{} {
		mu.Lock()
		defer mu.Unlock()
		if inflight != nil {
			return inflight
		}
		if !limit.Allow() {
			return nil
		}
		done := make(chan struct{})
		inflight = done
		go func() {
			rctx, cancel := context.WithTimeout(ctx, DefaultHTTPTimeout)
			ks.refresh(rctx)
			cancel()
			mu.Lock()
			inflight = nil
			mu.Unlock()
			close(done)
		}()
		return done
	}
	go retryWhileEmpty(ctx, ks, refreshEvery)
	return ks, nil
}

// retryWhileEmpty fetches a key set that holds no key (its provider was
// down when it started) again after 1s, 2s, 4s… up to the refresh
// interval, until it holds one: otherwise its tokens stayed
// auth_unavailable until the next scheduled refresh (15 minutes by
// default), and a token without a kid never asks for one.
func retryWhileEmpty(ctx context.Context, ks *keySource, every time.Duration) {
	wait := time.Second
	for !ks.hasKeys(ctx) {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		ks.refresh(ctx)
		wait = min(2*wait, every)
	}
}

// checkedTransport holds a JWKS URL's answer to the rules a JWKS file is
// held to (parseJWKS; {"keys": []} withdraws every key): one that breaks
// them is a failed fetch, so the last good keys keep serving (an empty,
// null or unusable set replaced them).
type checkedTransport struct {
	next http.RoundTripper
	algs []string
}

func (t checkedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(r)
	if err != nil || resp.StatusCode/100 != 2 {
		return resp, err
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	if !withdrawn(raw) {
		if _, err := parseJWKS(r.Context(), raw, t.algs); err != nil {
			return nil, fmt.Errorf("JWKS refused, the keys fetched before keep serving: %w", err)
		}
	}
	resp.Body = io.NopCloser(bytes.NewReader(raw))
	resp.ContentLength = int64(len(raw))
	return resp, nil
}

// genStorage is a JWKS URL's key storage that counts, in ks.gen, the key
// sets stored that differ from the one before, after storing them: a
// result verified before the swap carries the older generation and is
// verified again (bumped before the swap, a check in between cached a
// token of a removed key under the new generation).
type genStorage struct {
	jwkset.Storage
	ks   *keySource
	mu   sync.Mutex
	last [sha256.Size]byte
}

func (s *genStorage) KeyReplaceAll(ctx context.Context, given []jwkset.JWK) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.Storage.KeyReplaceAll(ctx, given); err != nil {
		return err
	}
	h := sha256.New()
	for _, k := range given {
		b, _ := json.Marshal(k.Marshal())
		h.Write(b)
		h.Write([]byte{0})
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	if sum != s.last {
		s.last = sum
		s.ks.gen.Add(1)
	}
	return nil
}

// refreshLogger logs JWKS refresh failures to slog.Default without the URL's
// credentials, query or fragment.
func refreshLogger(issuer, rawURL string) func(context.Context, error) {
	safe := redactURL(rawURL)
	return func(ctx context.Context, err error) {
		msg := err.Error()
		var ue *url.Error
		if errors.As(err, &ue) && ue.URL != "" {
			msg = strings.ReplaceAll(msg, ue.URL, safe)
		}
		msg = strings.ReplaceAll(msg, rawURL, safe)
		slog.Default().LogAttrs(context.WithoutCancel(ctx), slog.LevelWarn, "jwks refresh failed",
			slog.String("issuer", issuer), slog.String("jwks_url", safe), slog.String("error", msg))
	}
}

func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "<invalid url>"
	}
	u.User, u.RawQuery, u.ForceQuery, u.Fragment, u.RawFragment = nil, "", false, "", ""
	return u.String()
}

// jwksClient returns a copy of c whose responses are capped at maxJWKSBytes,
// since jwkset decodes the body without a limit.
func jwksClient(c *http.Client) *http.Client {
	cp := *c
	base := cp.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	cp.Transport = limitedTransport{base: base, max: maxJWKSBytes}
	return &cp
}

type limitedTransport struct {
	base http.RoundTripper
	max  int64
}

func (t limitedTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	resp.Body = http.MaxBytesReader(nil, resp.Body, t.max)
	return resp, nil
}

// fetchReporter reports every JWKS fetch's outcome (metrics).
type fetchReporter struct {
	next   http.RoundTripper
	issuer string
	report func(issuer string, ok bool)
}

func (f fetchReporter) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := f.next.RoundTrip(r)
	f.report(f.issuer, err == nil && resp.StatusCode/100 == 2)
	return resp, err
}
