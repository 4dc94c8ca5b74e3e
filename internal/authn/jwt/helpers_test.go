package jwt

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gojwt "github.com/golang-jwt/jwt/v5"
)

const (
	issA = "https://idp.example.com/"
	audA = "api://extauthz"
	issB = "https://login.example.org/b"
)

// t0 is the fake "now" of most tests.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

type testKeySet struct {
	rsa, rsa2, attacker *rsa.PrivateKey
	ec                  *ecdsa.PrivateKey
}

// keys are generated once per test binary.
var keys = sync.OnceValue(func() testKeySet {
	gen := func() *rsa.PrivateKey {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		return k
	}
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	return testKeySet{rsa: gen(), rsa2: gen(), attacker: gen(), ec: ec}
})

// fakeClock is a settable clock for Options.Now.
type fakeClock struct{ ns atomic.Int64 }

func newClock(t time.Time) *fakeClock {
	c := &fakeClock{}
	c.Set(t)
	return c
}
func (c *fakeClock) Now() time.Time      { return time.Unix(0, c.ns.Load()).UTC() }
func (c *fakeClock) Set(t time.Time)     { c.ns.Store(t.UnixNano()) }
func (c *fakeClock) Add(d time.Duration) { c.ns.Add(int64(d)) }

var b64 = base64.RawURLEncoding.EncodeToString

// jwk renders a public JWK for an RSA or EC key, or an oct key for []byte.
func jwk(kid, alg string, key any) map[string]any {
	m := map[string]any{"kid": kid, "use": "sig"}
	if alg != "" {
		m["alg"] = alg
	}
	switch k := key.(type) {
	case *rsa.PrivateKey:
		m["kty"], m["n"], m["e"] = "RSA", b64(k.N.Bytes()), b64(big.NewInt(int64(k.E)).Bytes())
	case *ecdsa.PrivateKey:
		size := (k.Curve.Params().BitSize + 7) / 8
		m["kty"], m["crv"] = "EC", k.Curve.Params().Name
		m["x"], m["y"] = b64(k.X.FillBytes(make([]byte, size))), b64(k.Y.FillBytes(make([]byte, size)))
	case []byte:
		m["kty"], m["k"] = "oct", b64(k)
		delete(m, "use")
	default:
		panic("unsupported key type")
	}
	return m
}

func jwksJSON(ks ...map[string]any) []byte {
	b, err := json.Marshal(map[string]any{"keys": ks})
	if err != nil {
		panic(err)
	}
	return b
}

func writeJWKS(t testing.TB, ks ...map[string]any) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(p, jwksJSON(ks...), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// jwksServer serves a JWKS on 127.0.0.1 and counts requests; it can answer
// late (delay) or fail (status).
type jwksServer struct {
	*httptest.Server
	hits   atomic.Int64
	body   atomic.Pointer[[]byte]
	delay  atomic.Int64 // nanoseconds before answering
	status atomic.Int32 // 0: 200 with body
}

func newJWKSServer(t testing.TB, ks ...map[string]any) *jwksServer {
	t.Helper()
	s := &jwksServer{}
	b := jwksJSON(ks...)
	s.body.Store(&b)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		s.hits.Add(1)
		time.Sleep(time.Duration(s.delay.Load()))
		if st := s.status.Load(); st != 0 {
			w.WriteHeader(int(st))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(*s.body.Load())
	}))
	t.Cleanup(s.Close)
	return s
}

// claims returns a valid claim set for issuer A at time now.
func claims(now time.Time) gojwt.MapClaims {
	return gojwt.MapClaims{
		"iss": issA,
		"aud": audA,
		"sub": "user-1",
		"iat": now.Unix(),
		"exp": now.Add(time.Hour).Unix(),
	}
}

// with returns a copy of c with kv applied; a nil value deletes the claim.
func with(c gojwt.MapClaims, kv ...any) gojwt.MapClaims {
	out := gojwt.MapClaims{}
	for k, v := range c {
		out[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(out, kv[i].(string))
		} else {
			out[kv[i].(string)] = kv[i+1]
		}
	}
	return out
}

// sign signs claims; header entries are added to (or, when nil, removed from)
// the JOSE header. kid "" means no kid header.
func sign(t testing.TB, m gojwt.SigningMethod, key any, kid string, c gojwt.MapClaims, header ...any) string {
	t.Helper()
	tok := gojwt.NewWithClaims(m, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	for i := 0; i < len(header); i += 2 {
		if header[i+1] == nil {
			delete(tok.Header, header[i].(string))
		} else {
			tok.Header[header[i].(string)] = header[i+1]
		}
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// rawToken assembles a token from JSON header and payload and a signature.
func rawToken(header, payload string, sig []byte) string {
	return b64([]byte(header)) + "." + b64([]byte(payload)) + "." + b64(sig)
}

func newVerifier(t testing.TB, issuers []IssuerConfig, opts Options) *Verifier {
	t.Helper()
	v, err := New(context.Background(), issuers, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(v.Close)
	return v
}

func waitReady(t testing.TB, v *Verifier) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !v.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("verifier not ready after 5s")
		}
		time.Sleep(time.Millisecond)
	}
}

// newSlowServer answers nothing until block is closed or the client gives up.
func newSlowServer(t testing.TB, block <-chan struct{}) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		select {
		case <-block:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}
