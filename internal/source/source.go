// Package source delivers policy versions — from a directory, an OPA bundle
// file or an OPA bundle service — and the Reloader turns each new version
// into a serving engine, swapping it in only when it builds. A version that
// fails to parse, compile or validate is rejected with an error naming file
// and field, and the last good engine keeps serving.
package source

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"

	"github.com/extauthz/extauthz/internal/authn/jwt"
	"github.com/extauthz/extauthz/internal/engine"
	"github.com/extauthz/extauthz/internal/fileid"
	"github.com/extauthz/extauthz/internal/policy"
	"github.com/extauthz/extauthz/policies"
)

// Loader fetches the current policy version. changed is false when the
// version is the one returned last time (src is then nil).
type Loader interface {
	Load(ctx context.Context) (src *policy.Source, changed bool, err error)
	String() string
}

// VersionError is a version a Loader could not read (a syntax error in
// data.json, a corrupt bundle). Digest is the SHA-256 of its content, so the
// Reloader reports one broken version once, however often it is polled.
type VersionError struct {
	Digest string
	Err    error
}

func (e *VersionError) Error() string { return e.Err.Error() }
func (e *VersionError) Unwrap() error { return e.Err }

// Embedded is the default policy and demo data compiled into the binary.
type Embedded struct{ loaded bool }

func (e *Embedded) String() string { return "embedded:policies" }

// Load returns the embedded policy once.
func (e *Embedded) Load(context.Context) (*policy.Source, bool, error) {
	if e.loaded {
		return nil, false, nil
	}
	src, err := policy.LoadFS(policies.FS, e.String())
	if err == nil {
		e.loaded = true
	}
	return src, err == nil, err
}

// Dir is a policy directory (*.rego and data.json). It notices changes by a
// fingerprint of names, sizes, modification times, inodes and change times. In a Kubernetes
// ConfigMap volume it reads the directory the ..data symlink points at, so
// one version is never mixed with the next, and the fingerprint includes
// that target, so an atomic swap (..data_tmp renamed over ..data) is seen
// even when no size or time changed.
//
// The fingerprint also covers the files the serving version read from
// elsewhere (Watch: the issuers' jwks_file, in a subdirectory or another
// volume), so that a changed key set loads a new version.
//
// A version that does not load is remembered by its fingerprint: until the
// directory changes again, Load returns the same *VersionError without
// reading it again.
type Dir struct {
	Path    string
	last    string
	lastDir string     // the directory's part of last
	watch   []jwt.File // the serving version's other files, as it read them
	failFP  string
	failErr error
}

// Watch makes the files a version read, as it read them, part of the
// fingerprint (the Reloader calls it with the version it swapped in).
func (d *Dir) Watch(files []jwt.File) {
	d.watch = files
	d.last = d.lastDir + filesPrint(files)
}

// filesPrint is the fingerprint's part for files.
func filesPrint(files []jwt.File) string {
	if len(files) == 0 {
		return ""
	}
	h := sha256.New()
	for _, f := range files {
		fmt.Fprintf(h, "%s\x00", f.Stamp())
	}
	return "+" + hex.EncodeToString(h.Sum(nil))
}

func (d *Dir) String() string { return d.Path }

// Load reads the directory when it changed.
func (d *Dir) Load(context.Context) (*policy.Source, bool, error) {
	for try := 0; ; try++ {
		root, err := policy.ResolveDir(d.Path)
		if err != nil {
			return nil, false, fmt.Errorf("%s: %w", d.Path, err)
		}
		dirFP, err := fingerprint(root)
		if err != nil {
			return nil, false, fmt.Errorf("%s: %w", d.Path, err)
		}
		now := make([]jwt.File, len(d.watch))
		for i, f := range d.watch {
			now[i] = jwt.StatFile(f.Path)
		}
		fp := dirFP + filesPrint(now)
		if fp == d.last {
			return nil, false, nil
		}
		if fp == d.failFP {
			return nil, false, d.failErr
		}
		src, err := policy.LoadFS(os.DirFS(root), d.Path)
		// A swap while reading (Kubernetes removes the old directory right
		// after it): read the new version instead.
		if now, rerr := policy.ResolveDir(d.Path); rerr == nil && now != root && try < 3 {
			continue
		}
		if err != nil {
			d.failFP, d.failErr = fp, &VersionError{Digest: dirDigest(root), Err: err}
			return nil, false, d.failErr
		}
		d.last, d.lastDir, d.failFP, d.failErr = fp, dirFP, "", nil
		return src, true, nil
	}
}

// dirDigest hashes the names and contents of the policy files in dir (what
// policy.LoadFS reads); it is only computed for a version that failed.
func dirDigest(dir string) string {
	h := sha256.New()
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		name := e.Name()
		if strings.HasPrefix(name, ".") || !(strings.HasSuffix(name, ".rego") || name == "data.json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			fmt.Fprintf(h, "%s\x00unreadable: %v\x00", name, err)
			continue
		}
		fmt.Fprintf(h, "%s\x00%d\x00", name, len(b))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func fingerprint(dir string) (string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00", dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		st, err := os.Stat(filepath.Join(dir, e.Name())) // follows symlinks
		if err != nil || st.IsDir() {
			continue
		}
		fmt.Fprintf(h, "%s\x00%d\x00%d\x00%s\x00", e.Name(), st.Size(), st.ModTime().UnixNano(), fileid.Of(st))
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Verify configures signed-bundle verification: a PEM public key.
type Verify struct {
	PublicKeyPEM string
	KeyID        string // default "extauthz"
	Algorithm    string // default RS256
}

func (v *Verify) config() *bundle.VerificationConfig {
	if v == nil {
		return nil
	}
	id, alg := v.KeyID, v.Algorithm
	if id == "" {
		id = "extauthz"
	}
	if alg == "" {
		alg = "RS256"
	}
	return bundle.NewVerificationConfig(map[string]*bundle.KeyConfig{id: {Key: v.PublicKeyPEM, Algorithm: alg}}, id, "", nil)
}

// MaxBundleBytes caps a bundle's size.
const MaxBundleBytes = 64 << 20

// BundleFile is an OPA bundle (.tar.gz) on disk.
type BundleFile struct {
	Path    string
	Verify  *Verify
	last    string
	failFP  string
	failErr error
}

func (b *BundleFile) String() string { return b.Path }

// Load reads the bundle when the file changed.
func (b *BundleFile) Load(context.Context) (*policy.Source, bool, error) {
	st, err := os.Stat(b.Path)
	if err != nil {
		return nil, false, fmt.Errorf("%s: %w", b.Path, err)
	}
	fp := fmt.Sprint(st.Size(), st.ModTime().UnixNano(), fileid.Of(st))
	if fp == b.last {
		return nil, false, nil
	}
	if fp == b.failFP {
		return nil, false, b.failErr
	}
	f, err := os.Open(b.Path)
	if err != nil {
		return nil, false, err
	}
	raw, err := io.ReadAll(io.LimitReader(f, MaxBundleBytes+1))
	f.Close()
	if err != nil {
		return nil, false, fmt.Errorf("%s: %w", b.Path, err)
	}
	src, err := readBundle(raw, b.Path, "", b.Verify)
	if err != nil {
		b.failFP, b.failErr = fp, &VersionError{Digest: digest(raw), Err: err}
		return nil, false, b.failErr
	}
	b.last, b.failFP, b.failErr = fp, "", nil
	return src, true, nil
}

// BundleURL is an OPA bundle service: GET with If-None-Match, 304 =
// unchanged. A service that sends no ETag (or a new ETag for the same
// bytes) is compared by content: the same bundle is not rebuilt, and the
// same broken bundle returns the same *VersionError.
type BundleURL struct {
	URL      string
	Client   *http.Client
	Verify   *Verify
	etag     string
	lastHash string // content of the last bundle returned
	failHash string // content of the last bundle that did not read
	failErr  error
}

func (b *BundleURL) String() string { return b.URL }

// Load fetches the bundle when the service has a new one.
func (b *BundleURL) Load(ctx context.Context) (*policy.Source, bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.URL, nil)
	if err != nil {
		return nil, false, err
	}
	if b.etag != "" {
		req.Header.Set("If-None-Match", b.etag)
	}
	c := b.Client
	if c == nil {
		c = &http.Client{Timeout: 10 * time.Second}
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, false, fmt.Errorf("%s: %w", redact(b.URL), err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusNotModified:
		return nil, false, nil
	case http.StatusOK:
	default:
		return nil, false, fmt.Errorf("%s: bundle service answered %s", redact(b.URL), resp.Status)
	}
	etag := resp.Header.Get("ETag")
	raw, err := io.ReadAll(io.LimitReader(resp.Body, MaxBundleBytes+1))
	if err != nil {
		return nil, false, fmt.Errorf("%s: %w", redact(b.URL), err)
	}
	sum := digest(raw)
	switch sum {
	case b.lastHash:
		b.etag = etag
		return nil, false, nil
	case b.failHash:
		return nil, false, b.failErr
	}
	src, err := readBundle(raw, redact(b.URL), etag, b.Verify)
	if err != nil {
		b.failHash, b.failErr = sum, &VersionError{Digest: sum, Err: err}
		return nil, false, b.failErr
	}
	b.etag, b.lastHash, b.failHash, b.failErr = etag, sum, "", nil
	return src, true, nil
}

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func redact(raw string) string {
	if i := strings.Index(raw, "?"); i >= 0 {
		raw = raw[:i]
	}
	if i := strings.Index(raw, "@"); i >= 0 {
		if j := strings.Index(raw, "://"); j >= 0 && j < i {
			raw = raw[:j+3] + raw[i+1:]
		}
	}
	return raw
}

// readBundle reads a bundle with OPA's own bundle reader (signature
// verification included) and turns it into a policy source.
func readBundle(raw []byte, origin, etag string, v *Verify) (*policy.Source, error) {
	rd := bundle.NewReader(io.LimitReader(bytes.NewReader(raw), MaxBundleBytes)).
		WithRegoVersion(ast.RegoV1).
		WithBundleEtag(etag).
		WithSizeLimitBytes(MaxBundleBytes)
	if v != nil {
		rd = rd.WithBundleVerificationConfig(v.config())
	} else {
		rd = rd.WithSkipBundleVerification(true)
	}
	b, err := rd.Read()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", origin, err)
	}
	src := &policy.Source{Origin: origin, Modules: map[string]string{}, Tests: map[string]string{}, Data: b.Data,
		Ordered: orderedOf(raw)}
	if src.Data == nil {
		src.Data = map[string]any{}
	}
	for _, m := range b.Modules {
		name := strings.TrimPrefix(m.Path, "/")
		if strings.HasSuffix(name, "_test.rego") {
			src.Tests[name] = string(m.Raw)
			continue
		}
		src.Modules[name] = string(m.Raw)
	}
	if len(src.Modules) == 0 {
		return nil, fmt.Errorf("%s: bundle has no .rego modules", origin)
	}
	return src, nil
}

// orderedOf finds the bundle's root data.json (the bundle was read and
// verified already) and returns its sections whose member order means
// something, as written: OPA's reader decodes data into maps.
func orderedOf(raw []byte) map[string][]byte {
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		return nil
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err != nil {
			return nil
		}
		if strings.TrimPrefix(path.Clean("/"+h.Name), "/") != "data.json" {
			continue
		}
		b, err := io.ReadAll(io.LimitReader(tr, MaxBundleBytes))
		if err != nil {
			return nil
		}
		return policy.OrderedOf(b)
	}
}

// New picks the loader for the configured source.
func New(dir, bundleFile, bundleURL string, v *Verify) Loader {
	switch {
	case bundleURL != "":
		return &BundleURL{URL: bundleURL, Verify: v}
	case bundleFile != "":
		return &BundleFile{Path: bundleFile, Verify: v}
	case dir != "":
		return &Dir{Path: dir}
	}
	return &Embedded{}
}

// ReadVerify reads a PEM public key file for signed bundles.
func ReadVerify(path string) (*Verify, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("bundle-pubkey: %w", err)
	}
	return &Verify{PublicKeyPEM: string(b)}, nil
}

// Engine loads the policy directory dir ("" = the embedded default policy
// and demo data) and builds it: the one way the CLI, the demo and tests get
// an engine without running a server.
func Engine(ctx context.Context, dir string, opts engine.Options) (*engine.Engine, error) {
	src, _, err := New(dir, "", "", nil).Load(ctx)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	eng, err := engine.Build(ctx, src, opts)
	if err == nil {
		AwaitReady(ctx, eng)
	}
	return eng, err
}

// AwaitReady waits for eng's first JWKS fetches, at most as long as one
// fetch may take (for offline tools; the server waits through readiness).
func AwaitReady(ctx context.Context, eng *engine.Engine) {
	ctx, cancel := context.WithTimeout(ctx, jwt.DefaultHTTPTimeout+time.Second)
	defer cancel()
	eng.AwaitReady(ctx)
}
