package jwt

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestConfigValidation(t *testing.T) {
	k := keys()
	good := writeJWKS(t, jwk("rsa-1", "RS256", k.rsa))
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	octOnly := write("oct.json", string(jwksJSON(jwk("h", "", []byte("secret-secret-secret")))))
	encOnly := write("enc.json", string(jwksJSON(func() map[string]any { m := jwk("e", "", k.rsa); m["use"] = "enc"; return m }())))
	notJSON := write("bad.json", "{")
	dupKID := write("dup.json", string(jwksJSON(jwk("a", "", k.rsa), jwk("a", "", k.ec))))
	badKey := write("badkey.json", `{"keys":[{"kty":"RSA","kid":"x","n":"!!","e":"AQAB"}]}`)
	ok := func(mod func(*IssuerConfig)) IssuerConfig {
		c := IssuerConfig{Issuer: issA, Audiences: []string{audA}, JWKSFile: good}
		if mod != nil {
			mod(&c)
		}
		return c
	}
	second := func(mod func(*IssuerConfig)) []IssuerConfig {
		return []IssuerConfig{ok(nil), ok(func(c *IssuerConfig) { c.Issuer = issB; mod(c) })}
	}
	cases := []struct {
		name    string
		issuers []IssuerConfig
		opts    Options
		want    []string // substrings of the error, in order
	}{
		{"no issuers", nil, Options{}, []string{"issuers: at least one issuer is required"}},
		{"HS256 on the second issuer", second(func(c *IssuerConfig) { c.Algorithms = []string{"RS256", "HS256"} }),
			Options{}, []string{"issuers[1].algorithms: HS256 not allowed"}},
		{"hs512 lower case", second(func(c *IssuerConfig) { c.Algorithms = []string{"hs512"} }),
			Options{}, []string{"issuers[1].algorithms: hs512 not allowed"}},
		{"none", []IssuerConfig{ok(func(c *IssuerConfig) { c.Algorithms = []string{"none"} })},
			Options{}, []string{"issuers[0].algorithms: none not allowed"}},
		{"unknown algorithm", []IssuerConfig{ok(func(c *IssuerConfig) { c.Algorithms = []string{"RS257"} })},
			Options{}, []string{`issuers[0].algorithms: "RS257" is not supported`}},
		{"empty issuer", []IssuerConfig{ok(func(c *IssuerConfig) { c.Issuer = " " })},
			Options{}, []string{"issuers[0].issuer: required"}},
		{"duplicate issuer", []IssuerConfig{ok(nil), ok(nil)},
			Options{}, []string{`issuers[1].issuer: "` + issA + `" already configured by issuers[0]`}},
		{"no audiences", []IssuerConfig{ok(func(c *IssuerConfig) { c.Audiences = nil })},
			Options{}, []string{"issuers[0].audiences: at least one audience is required"}},
		{"empty audience", []IssuerConfig{ok(func(c *IssuerConfig) { c.Audiences = []string{audA, ""} })},
			Options{}, []string{"issuers[0].audiences[1]: must not be empty"}},
		{"no JWKS", []IssuerConfig{ok(func(c *IssuerConfig) { c.JWKSFile = "" })},
			Options{}, []string{"issuers[0].jwks_file: one of jwks_file, jwks_url or jwks is required"}},
		{"file and URL", []IssuerConfig{ok(func(c *IssuerConfig) { c.JWKSURL = "https://idp.example.com/jwks" })},
			Options{}, []string{"issuers[0].jwks_url: set only one of jwks_file, jwks_url and jwks"}},
		{"ftp URL", []IssuerConfig{ok(func(c *IssuerConfig) { c.JWKSFile, c.JWKSURL = "", "ftp://idp.example.com/jwks" })},
			Options{}, []string{"issuers[0].jwks_url: must be an absolute http or https URL"}},
		{"relative URL", []IssuerConfig{ok(func(c *IssuerConfig) { c.JWKSFile, c.JWKSURL = "", "idp.example.com/jwks" })},
			Options{}, []string{"issuers[0].jwks_url: must be an absolute http or https URL"}},
		{"negative leeway", []IssuerConfig{ok(func(c *IssuerConfig) { c.LeewaySeconds = -1 })},
			Options{}, []string{"issuers[0].leeway_seconds: must be between 0 and 300"}},
		{"huge leeway", []IssuerConfig{ok(func(c *IssuerConfig) { c.LeewaySeconds = 3600 })},
			Options{}, []string{"issuers[0].leeway_seconds: must be between 0 and 300"}},
		{"missing JWKS file", []IssuerConfig{ok(func(c *IssuerConfig) { c.JWKSFile = filepath.Join(dir, "nope.json") })},
			Options{}, []string{"issuers[0].jwks_file: open ", "no such file"}},
		{"JWKS file not JSON", []IssuerConfig{ok(func(c *IssuerConfig) { c.JWKSFile = notJSON })},
			Options{}, []string{"issuers[0].jwks_file: not a JWKS"}},
		{"JWKS file with only an oct key", []IssuerConfig{ok(func(c *IssuerConfig) { c.JWKSFile = octOnly })},
			Options{}, []string{"issuers[0].jwks_file: no usable signature keys"}},
		{"JWKS file with only an enc key", []IssuerConfig{ok(func(c *IssuerConfig) { c.JWKSFile = encOnly })},
			Options{}, []string{"issuers[0].jwks_file: no usable signature keys"}},
		{"JWKS file with a duplicate kid", []IssuerConfig{ok(func(c *IssuerConfig) { c.JWKSFile = dupKID })},
			Options{}, []string{`issuers[0].jwks_file: keys[1]: kid "a" already used by keys[0]`}},
		{"JWKS whose keys fit none of the algorithms", []IssuerConfig{ok(func(c *IssuerConfig) { c.Algorithms = []string{"ES256", "EdDSA"} })},
			Options{}, []string{"issuers[0].jwks_file: no key can verify any of the issuer's algorithms [ES256 EdDSA]"}},
		{"JWKS file with a broken key", second(func(c *IssuerConfig) { c.JWKSFile = badKey }),
			Options{}, []string{"issuers[1].jwks_file: keys[0]: "}},
		{"negative options", []IssuerConfig{ok(nil)},
			Options{CacheEntries: -1, CacheTTL: -1, RefreshInterval: -1, MaxTokenBytes: -1},
			[]string{"options.CacheEntries", "options.CacheTTL", "options.RefreshInterval", "options.MaxTokenBytes"}},
		{"all problems reported", []IssuerConfig{
			ok(func(c *IssuerConfig) { c.Audiences = nil }),
			ok(func(c *IssuerConfig) { c.Issuer = issB; c.Algorithms = []string{"HS256"}; c.JWKSFile = "" }),
		}, Options{}, []string{"issuers[0].audiences", "issuers[1].jwks_file", "issuers[1].algorithms: HS256 not allowed"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v, err := New(context.Background(), tc.issuers, tc.opts)
			if err == nil {
				v.Close()
				t.Fatal("New succeeded; want an error")
			}
			msg := err.Error()
			for _, w := range tc.want {
				i := strings.Index(msg, w)
				if i < 0 {
					t.Fatalf("error %q does not contain %q", msg, w)
				}
				msg = msg[i+len(w):]
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	k := keys()
	f := writeJWKS(t, jwk("rsa-1", "RS256", k.rsa))
	fb := writeJWKS(t, jwk("ec-1", "", k.ec)) // no alg: its kty fits ES384
	v := newVerifier(t, []IssuerConfig{
		{Issuer: issA, Audiences: []string{audA}, JWKSFile: f},
		{Issuer: issB, Audiences: []string{"b"}, JWKSFile: fb, Algorithms: []string{"ES384", "EdDSA", "ES384", "PS512"}, TenantClaim: "org", LeewaySeconds: 5},
	}, Options{})
	got := []IssuerConfig{v.byIss[issA].cfg, v.byIss[issB].cfg}
	want := []IssuerConfig{
		{Issuer: issA, Audiences: []string{audA}, JWKSFile: f, Algorithms: []string{"RS256", "ES256"}, TenantClaim: "tenant", LeewaySeconds: 30},
		{Issuer: issB, Audiences: []string{"b"}, JWKSFile: fb, Algorithms: []string{"ES384", "EdDSA", "PS512"}, TenantClaim: "org", LeewaySeconds: 5},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("normalized config (-want +got):\n%s", diff)
	}
	if v.maxBytes != DefaultMaxTokenBytes || v.cacheTTL != DefaultCacheTTL || v.now == nil {
		t.Fatalf("option defaults: maxBytes %d, cacheTTL %v", v.maxBytes, v.cacheTTL)
	}
	if !v.Ready() {
		t.Fatal("file-only verifier not ready")
	}
}

func TestCloseIsIdempotentAndStopsLoading(t *testing.T) {
	block := make(chan struct{})
	defer close(block)
	srv := newSlowServer(t, block)
	v, err := New(context.Background(), []IssuerConfig{urlIssuer(srv)}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { v.Close(); v.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Fatal("Close did not return while the first JWKS fetch was pending")
	}
}
