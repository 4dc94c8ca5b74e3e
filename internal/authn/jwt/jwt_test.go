package jwt

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"strings"
	"testing"
	"time"

	gojwt "github.com/golang-jwt/jwt/v5"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// fileVerifier has issuer A (JWKS file: rsa-1, ec-1; default algorithms,
// default tenant claim and leeway) and issuer B (JWKS file: b-1 only; RS256;
// tenant claim "org"; audiences b1 and b2; leeway 10s).
func fileVerifier(t testing.TB, clock *fakeClock, opts Options) *Verifier {
	t.Helper()
	k := keys()
	opts.Now = clock.Now
	return newVerifier(t, []IssuerConfig{
		{
			Issuer:    issA,
			Audiences: []string{audA},
			JWKSFile:  writeJWKS(t, jwk("rsa-1", "RS256", k.rsa), jwk("ec-1", "", k.ec)),
		},
		{
			Issuer:        issB,
			Audiences:     []string{"b1", "b2"},
			JWKSFile:      writeJWKS(t, jwk("b-1", "", k.rsa2)),
			Algorithms:    []string{"RS256"},
			TenantClaim:   "org",
			LeewaySeconds: 10,
		},
	}, opts)
}

var ignoreClaims = cmpopts.IgnoreFields(Result{}, "Claims")

func TestVerify(t *testing.T) {
	k := keys()
	clock := newClock(t0)
	v := fileVerifier(t, clock, Options{})
	c := claims(t0)
	exp := t0.Add(time.Hour)
	rs := func(cl gojwt.MapClaims, header ...any) string {
		return sign(t, gojwt.SigningMethodRS256, k.rsa, "rsa-1", cl, header...)
	}
	valid := func(mod func(*Result)) Result {
		r := Result{Status: Valid, Issuer: issA, Subject: "user-1", ExpiresAt: exp}
		if mod != nil {
			mod(&r)
		}
		return r
	}
	fail := func(s Status) Result { return Result{Status: s, Issuer: issA} }
	bClaims := with(c, "iss", issB, "aud", "b2")
	rsaPubPEM := func() []byte {
		der, err := x509.MarshalPKIXPublicKey(&k.rsa.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	}()
	hdrRS := `{"alg":"RS256","kid":"rsa-1","typ":"JWT"}`
	payload, _ := json.Marshal(c)

	cases := []struct {
		name  string
		token string
		want  Result
	}{
		// Valid tokens and the claims extracted from them.
		{"valid RS256", rs(c), valid(nil)},
		{"valid ES256", sign(t, gojwt.SigningMethodES256, k.ec, "ec-1", c), valid(nil)},
		{"valid second issuer", sign(t, gojwt.SigningMethodRS256, k.rsa2, "b-1", bClaims),
			Result{Status: Valid, Issuer: issB, Subject: "user-1", ExpiresAt: exp}},
		{"scope string", rs(with(c, "scope", "read  write read")),
			valid(func(r *Result) { r.Scopes = []string{"read", "write"} })},
		{"scp array", rs(with(c, "scp", []string{"admin", "read", "admin"})),
			valid(func(r *Result) { r.Scopes = []string{"admin", "read"} })},
		{"scp string", rs(with(c, "scp", "a b")), valid(func(r *Result) { r.Scopes = []string{"a", "b"} })},
		{"scope and scp merged", rs(with(c, "scope", "read write", "scp", []string{"write", "admin"})),
			valid(func(r *Result) { r.Scopes = []string{"read", "write", "admin"} })},
		{"tenant string", rs(with(c, "tenant", "t1")), valid(func(r *Result) { r.Tenants = []string{"t1"} })},
		{"tenant number", rs(with(c, "tenant", 42)), valid(func(r *Result) { r.Tenants = []string{"42"} })},
		{"tenant big number exact", rs(with(c, "tenant", json.Number("12345678901234567890"))),
			valid(func(r *Result) { r.Tenants = []string{"12345678901234567890"} })},
		{"tenant exponent number", rs(with(c, "tenant", json.Number("4.2e1"))), fail(Malformed)},
		{"tenant number with a fraction", rs(with(c, "tenant", json.Number("42.0"))), fail(Malformed)},
		{"tenant number beyond float64 precision", rs(with(c, "tenant", []any{"t1", json.Number("12345678901234567890.5")})), fail(Malformed)},
		{"negative tenant number kept", rs(with(c, "tenant", -7)), valid(func(r *Result) { r.Tenants = []string{"-7"} })},
		{"tenant array", rs(with(c, "tenant", []any{"t1", 7, "t1", ""})),
			valid(func(r *Result) { r.Tenants = []string{"t1", "7"} })},
		{"tenant empty string", rs(with(c, "tenant", "")), valid(nil)},
		{"custom tenant claim", sign(t, gojwt.SigningMethodRS256, k.rsa2, "b-1", with(bClaims, "org", []any{"o1", 2}, "tenant", "ignored")),
			Result{Status: Valid, Issuer: issB, Subject: "user-1", ExpiresAt: exp, Tenants: []string{"o1", "2"}}},
		{"no sub", rs(with(c, "sub", nil)), valid(func(r *Result) { r.Subject = "" })},
		{"aud array with one match", rs(with(c, "aud", []string{"other", audA})), valid(nil)},
		{"second audience of issuer", sign(t, gojwt.SigningMethodRS256, k.rsa2, "b-1", with(bClaims, "aud", []string{"x", "b1"})),
			Result{Status: Valid, Issuer: issB, Subject: "user-1", ExpiresAt: exp}},

		// Values the identity headers could not carry as they are: a scope
		// that is not a scope-token grants nothing (neither of its parts),
		// a sub or tenant with a control character refuses the token.
		{"scp item with a space grants neither part", rs(with(c, "scp", []string{"orders:read", "x admin"})),
			valid(func(r *Result) { r.Scopes = []string{"orders:read"} })},
		{"scope split on spaces only", rs(with(c, "scope", "read\tadmin read\u00a0admin write")),
			valid(func(r *Result) { r.Scopes = []string{"write"} })},
		{"scope with CRLF", rs(with(c, "scp", []string{"x\r\nX-Evil: 1"})), valid(nil)},
		{"scope with quote or backslash", rs(with(c, "scope", `a"b c\\d e`)), valid(func(r *Result) { r.Scopes = []string{"e"} })},
		{"sub with newline", rs(with(c, "sub", "a\nb")), fail(Malformed)},
		{"sub with NUL", rs(with(c, "sub", "a\x00b")), fail(Malformed)},
		{"sub with non-ASCII letters", rs(with(c, "sub", "zoë")), valid(func(r *Result) { r.Subject = "zoë" })},
		{"tenant with CR", rs(with(c, "tenant", "t1\r")), fail(Malformed)},
		{"tenant with a comma", rs(with(c, "tenant", []any{"4,2"})), fail(Malformed)},
		{"tenant array with control character", rs(with(c, "tenant", []any{"t1", "t\x01"})), fail(Malformed)},

		// Claims of the wrong type.
		{"tenant object", rs(with(c, "tenant", map[string]any{"id": "t1"})), fail(Malformed)},
		{"tenant array of bool", rs(with(c, "tenant", []any{"t1", true})), fail(Malformed)},
		{"scope number", rs(with(c, "scope", 5)), fail(Malformed)},
		{"scp array with number", rs(with(c, "scp", []any{"a", 1})), fail(Malformed)},
		{"sub number", rs(with(c, "sub", 5)), fail(Malformed)},
		{"exp string", rs(with(c, "exp", "tomorrow")), fail(Malformed)},
		{"aud number", rs(with(c, "aud", 5)), fail(Malformed)},

		// Time.
		{"expired", rs(with(c, "exp", t0.Add(-time.Hour).Unix())), fail(Expired)},
		{"exp within leeway (now = exp+29s)", rs(with(c, "exp", t0.Add(-29*time.Second).Unix())),
			valid(func(r *Result) { r.ExpiresAt = t0.Add(-29 * time.Second) })},
		{"exp at leeway edge (now = exp+30s)", rs(with(c, "exp", t0.Add(-30*time.Second).Unix())), fail(Expired)},
		{"exp beyond leeway (now = exp+31s)", rs(with(c, "exp", t0.Add(-31*time.Second).Unix())), fail(Expired)},
		{"issuer leeway 10s: exp+9s", sign(t, gojwt.SigningMethodRS256, k.rsa2, "b-1", with(bClaims, "exp", t0.Add(-9*time.Second).Unix())),
			Result{Status: Valid, Issuer: issB, Subject: "user-1", ExpiresAt: t0.Add(-9 * time.Second)}},
		{"issuer leeway 10s: exp+11s", sign(t, gojwt.SigningMethodRS256, k.rsa2, "b-1", with(bClaims, "exp", t0.Add(-11*time.Second).Unix())),
			Result{Status: Expired, Issuer: issB}},
		{"missing exp", rs(with(c, "exp", nil)), fail(Malformed)},
		{"nbf far future", rs(with(c, "nbf", t0.Add(time.Hour).Unix())), fail(NotYetValid)},
		{"nbf within leeway (nbf = now+29s)", rs(with(c, "nbf", t0.Add(29*time.Second).Unix())), valid(nil)},
		{"nbf beyond leeway (nbf = now+31s)", rs(with(c, "nbf", t0.Add(31*time.Second).Unix())), fail(NotYetValid)},
		{"nbf past", rs(with(c, "nbf", t0.Add(-time.Minute).Unix())), valid(nil)},
		{"iat in future", rs(with(c, "iat", t0.Add(time.Hour).Unix())), fail(NotYetValid)},
		{"iat within leeway", rs(with(c, "iat", t0.Add(29*time.Second).Unix())), valid(nil)},
		{"expired and wrong audience", rs(with(c, "exp", t0.Add(-time.Hour).Unix(), "aud", "other")), fail(WrongAudience)},

		// Issuer and audience.
		{"unknown iss", rs(with(c, "iss", "https://evil.example.com/")), Result{Status: WrongIssuer}},
		{"iss differs by trailing slash", rs(with(c, "iss", strings.TrimSuffix(issA, "/"))), Result{Status: WrongIssuer}},
		{"missing iss", rs(with(c, "iss", nil)), Result{Status: WrongIssuer}},
		{"iss number", rs(with(c, "iss", 1)), Result{Status: Malformed}},
		{"iss name case variant only", rs(with(c, "iss", nil, "ISS", issA)), fail(Malformed)},
		{"wrong aud", rs(with(c, "aud", "api://other")), fail(WrongAudience)},
		{"aud array without match", rs(with(c, "aud", []string{"a", "b"})), fail(WrongAudience)},
		{"missing aud", rs(with(c, "aud", nil)), fail(Malformed)},
		{"audience of the other issuer", rs(with(c, "aud", "b1")), fail(WrongAudience)},

		// Algorithms.
		{"alg none, empty signature", rawToken(`{"alg":"none"}`, string(payload), nil), Result{Status: Malformed}},
		{"alg none with signature", rawToken(`{"alg":"none"}`, string(payload), []byte("x")), fail(AlgorithmNotAllowed)},
		{"alg None", rawToken(`{"alg":"None","kid":"rsa-1"}`, string(payload), []byte("x")), fail(AlgorithmNotAllowed)},
		{"HS256 with RSA public key as secret", sign(t, gojwt.SigningMethodHS256, rsaPubPEM, "rsa-1", c), fail(AlgorithmNotAllowed)},
		{"HS256 with RSA modulus as secret", sign(t, gojwt.SigningMethodHS256, k.rsa.N.Bytes(), "rsa-1", c), fail(AlgorithmNotAllowed)},
		{"RS384 outside allowlist", sign(t, gojwt.SigningMethodRS384, k.rsa, "rsa-1", c), fail(AlgorithmNotAllowed)},
		{"PS256 outside allowlist", sign(t, gojwt.SigningMethodPS256, k.rsa, "rsa-1", c), fail(AlgorithmNotAllowed)},
		{"ES256 outside issuer B allowlist", sign(t, gojwt.SigningMethodES256, k.ec, "b-1", bClaims), Result{Status: AlgorithmNotAllowed, Issuer: issB}},
		{"unknown alg", rawToken(`{"alg":"XS999","kid":"rsa-1"}`, string(payload), []byte("x")), fail(AlgorithmNotAllowed)},
		{"alg missing", rawToken(`{"kid":"rsa-1"}`, string(payload), []byte("x")), Result{Status: Malformed}},
		{"alg empty", rawToken(`{"alg":"","kid":"rsa-1"}`, string(payload), []byte("x")), Result{Status: Malformed}},
		{"alg not a string", rawToken(`{"alg":1,"kid":"rsa-1"}`, string(payload), []byte("x")), Result{Status: Malformed}},

		// Keys and signatures.
		{"missing kid, one key in set", sign(t, gojwt.SigningMethodRS256, k.rsa2, "", bClaims),
			Result{Status: Valid, Issuer: issB, Subject: "user-1", ExpiresAt: exp}},
		{"missing kid, several keys in set", sign(t, gojwt.SigningMethodES256, k.ec, "", c), fail(UnknownKey)},
		{"missing kid, one key, signed by a stranger", sign(t, gojwt.SigningMethodRS256, k.attacker, "", bClaims), Result{Status: BadSignature, Issuer: issB}},
		{"unknown kid", sign(t, gojwt.SigningMethodRS256, k.rsa, "nope", c), fail(UnknownKey)},
		{"kid of another issuer", sign(t, gojwt.SigningMethodRS256, k.rsa2, "b-1", c), fail(UnknownKey)},
		{"kid 128 bytes", sign(t, gojwt.SigningMethodRS256, k.rsa, strings.Repeat("k", 128), c), fail(UnknownKey)},
		{"kid 129 bytes", sign(t, gojwt.SigningMethodRS256, k.rsa, strings.Repeat("k", 129), c), Result{Status: Malformed}},
		{"kid not a string", sign(t, gojwt.SigningMethodRS256, k.rsa, "", c, "kid", 7), Result{Status: Malformed}},
		{"kid path injection", sign(t, gojwt.SigningMethodRS256, k.rsa, "../../etc/passwd", c), fail(UnknownKey)},
		{"signed by another key under a known kid", sign(t, gojwt.SigningMethodRS256, k.attacker, "rsa-1", c), fail(BadSignature)},
		{"ES256 under an RSA kid", sign(t, gojwt.SigningMethodES256, k.ec, "rsa-1", c), fail(UnknownKey)}, // JWK alg RS256 ≠ ES256
		{"RS256 under an EC kid without JWK alg", sign(t, gojwt.SigningMethodRS256, k.rsa, "ec-1", c), fail(BadSignature)},
		{"embedded jwk header ignored", sign(t, gojwt.SigningMethodRS256, k.attacker, "rsa-1", c, "jwk", jwk("rsa-1", "RS256", k.attacker)), fail(BadSignature)},
		{"x5c header ignored", sign(t, gojwt.SigningMethodRS256, k.attacker, "rsa-1", c, "x5c", []string{"MIIB"}), fail(BadSignature)},
		{"crit header", rs(c, "crit", []string{"exp"}), Result{Status: Malformed}},
		{"tampered payload", func() string {
			tok := rs(c)
			parts := strings.Split(tok, ".")
			evil, _ := json.Marshal(with(c, "sub", "admin"))
			return parts[0] + "." + b64(evil) + "." + parts[2]
		}(), fail(BadSignature)},
		{"signature of another token", func() string {
			a, b := strings.Split(rs(c), "."), strings.Split(rs(with(c, "sub", "x")), ".")
			return a[0] + "." + a[1] + "." + b[2]
		}(), fail(BadSignature)},

		{"non-canonical base64 signature", func() string {
			tok := rs(c)
			const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
			last := strings.IndexByte(alphabet, tok[len(tok)-1])
			return tok[:len(tok)-1] + string(alphabet[last^1]) // flips an unused trailing bit
		}(), fail(Malformed)},

		// Shape.
		{"empty", "", Result{Status: Malformed}},
		{"one segment", "abc", Result{Status: Malformed}},
		{"two segments", "abc.def", Result{Status: Malformed}},
		{"four segments", rs(c) + ".x", Result{Status: Malformed}},
		{"empty signature segment", strings.Join(strings.Split(rs(c), ".")[:2], ".") + ".", Result{Status: Malformed}},
		{"empty header segment", "." + strings.SplitN(rs(c), ".", 2)[1], Result{Status: Malformed}},
		{"empty payload segment", "abc..def", Result{Status: Malformed}},
		{"only dots", "..", Result{Status: Malformed}},
		{"base64 padding", b64([]byte(hdrRS)) + "=." + b64(payload) + ".c2ln", Result{Status: Malformed}},
		{"std base64 alphabet", "a+b/." + b64(payload) + ".c2ln", Result{Status: Malformed}},
		{"bearer prefix kept", "Bearer " + rs(c), Result{Status: Malformed}},
		{"trailing newline", rs(c) + "\n", Result{Status: Malformed}},
		{"non-UTF-8 bytes", rs(c)[:20] + "\xff\xfe" + rs(c)[22:], Result{Status: Malformed}},
		{"non-ASCII UTF-8", "é" + rs(c), Result{Status: Malformed}},
		{"header not base64", "a." + b64(payload) + ".c2ln", Result{Status: Malformed}},
		{"header not JSON", rawToken(`not json`, string(payload), []byte("x")), Result{Status: Malformed}},
		{"header JSON array", rawToken(`["RS256"]`, string(payload), []byte("x")), Result{Status: Malformed}},
		{"header null", rawToken(`null`, string(payload), []byte("x")), Result{Status: Malformed}},
		{"payload not JSON", rawToken(hdrRS, `{"iss":`, []byte("x")), Result{Status: Malformed}},
		{"payload JSON string", rawToken(hdrRS, `"x"`, []byte("x")), Result{Status: Malformed}},
		{"payload with non-UTF-8 iss", rawToken(hdrRS, "{\"iss\":\"\xff\"}", []byte("x")), Result{Status: WrongIssuer}},
		{"too long", rs(with(c, "pad", strings.Repeat("p", DefaultMaxTokenBytes))), Result{Status: Malformed}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := v.Verify(context.Background(), tc.token)
			if diff := cmp.Diff(tc.want, got, ignoreClaims); diff != "" {
				t.Errorf("Verify mismatch (-want +got):\n%s", diff)
			}
			if (got.Claims != nil) != (got.Status == Valid) {
				t.Errorf("Claims = %v with status %s; want claims only when valid", got.Claims, got.Status)
			}
		})
	}
}
