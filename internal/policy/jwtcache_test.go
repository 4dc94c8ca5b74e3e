package policy

import (
	"context"
	"testing"
	"time"

	gojwt "github.com/golang-jwt/jwt/v5"
	"github.com/open-policy-agent/opa/v1/ast"
)

// With settings.jwt_verify_cache on, a token verified once is not verified
// again, yet every decision is the one the uncached engine makes: a forged
// token stays denied after the genuine one with the same claims was
// allowed, an expired token stays denied though its signature was cached,
// and the same token under another key is verified afresh.
func TestJWTVerifyCacheSameDecisions(t *testing.T) {
	const mod = `package envoy.authz

default allow := false

allow if {
	[valid, _, payload] := io.jwt.decode_verify(input.token, {"secret": input.secret})
	valid
	now := time.now_ns() / 1000000000
	payload.nbf <= now
	now < payload.exp
	payload.role == "admin"
}
`
	ctx := context.Background()
	src := &Source{Origin: "t", Modules: map[string]string{"p.rego": mod}}
	plain, err := CompileOPAEnvoy(ctx, src, map[string]any{}, "envoy/authz/allow")
	if err != nil {
		t.Fatal(err)
	}
	cached, err := CompileOPAEnvoy(ctx, src, map[string]any{}, "envoy/authz/allow", WithJWTVerifyCache(2))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().Unix()
	sign := func(key string, nbf, exp int64) string {
		s, err := gojwt.NewWithClaims(gojwt.SigningMethodHS256, gojwt.MapClaims{"role": "admin", "nbf": nbf, "exp": exp}).SignedString([]byte(key))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	good := sign("secret", now-60, now+3600)
	forged := sign("not-the-secret", now-60, now+3600)
	expired := sign("secret", now-7200, now-3600)
	early := sign("secret", now+3600, now+7200)
	other := sign("other", now-60, now+3600)
	cases := []struct {
		name, token, secret string
		allow               bool
	}{
		{"genuine", good, "secret", true},
		{"forged", forged, "secret", false},
		{"genuine again", good, "secret", true},
		{"genuine token, wrong key", good, "other", false},
		{"expired", expired, "secret", false},
		{"expired again", expired, "secret", false},
		{"not yet valid", early, "secret", false},
		{"signed with the other key", other, "other", true},
		{"forged again", forged, "secret", false},
		{"genuine after evictions", good, "secret", true},
		{"not a token", "x.y.z", "secret", false},
	}
	for _, c := range cases {
		in := ast.NewObject(ast.Item(ast.StringTerm("token"), ast.StringTerm(c.token)), ast.Item(ast.StringTerm("secret"), ast.StringTerm(c.secret)))
		for name, e := range map[string]*Engine{"uncached": plain, "cached": cached} {
			out, err := e.Eval(ctx, in)
			if c.token == "x.y.z" {
				if err == nil && out.Allow {
					t.Errorf("%s, %s: allowed", c.name, name)
				}
				continue
			}
			if err != nil {
				t.Fatalf("%s, %s: %v", c.name, name, err)
			}
			if out.Allow != c.allow {
				t.Errorf("%s, %s: allow %v, want %v", c.name, name, out.Allow, c.allow)
			}
		}
	}
	if b := cached.valueCache.GetCache(jwtCacheName); b == nil {
		t.Fatal("the io_jwt cache is off")
	} else if _, ok := b.Get(ast.NewArray(ast.StringTerm(good), ast.ObjectTerm(ast.Item(ast.StringTerm("secret"), ast.StringTerm("secret"))))); !ok {
		t.Error("the genuine token is not in the io_jwt cache")
	}
	if plain.valueCache != nil {
		t.Error("a cache without the setting")
	}
}
