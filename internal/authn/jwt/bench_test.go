package jwt

import (
	"context"
	"testing"
	"time"

	gojwt "github.com/golang-jwt/jwt/v5"

	"github.com/extauthz/extauthz/internal/cache"
)

func BenchmarkVerify(b *testing.B) {
	k := keys()
	ctx := context.Background()
	now := time.Now()
	cl := with(claims(now), "scope", "read write", "tenant", []any{"t1", "t2"}, "iat", now.Add(-time.Minute).Unix())
	rs := sign(b, gojwt.SigningMethodRS256, k.rsa, "rsa-1", cl)
	es := sign(b, gojwt.SigningMethodES256, k.ec, "ec-1", cl)
	newV := func(b *testing.B) *Verifier {
		return newVerifier(b, []IssuerConfig{{
			Issuer: issA, Audiences: []string{audA},
			JWKSFile: writeJWKS(b, jwk("rsa-1", "RS256", k.rsa), jwk("ec-1", "", k.ec)),
		}}, Options{})
	}
	// noCache makes every Verify miss and store nothing (a cache TTL of
	// 0): the full uncached path, including hashing and the lookup.
	noCache := func(v *Verifier) {
		v.cache = cache.New[*cached](1)
		v.cacheTTL = 0
	}
	run := func(b *testing.B, v *Verifier, tok string) {
		if got := v.Verify(ctx, tok); got.Status != Valid {
			b.Fatal(got.Status)
		}
		b.ReportAllocs()
		for b.Loop() {
			if v.Verify(ctx, tok).Status != Valid {
				b.Fatal("not valid")
			}
		}
	}
	b.Run("cached", func(b *testing.B) { run(b, newV(b), rs) })
	b.Run("cached_parallel", func(b *testing.B) {
		v := newV(b)
		v.Verify(ctx, rs)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				v.Verify(ctx, rs)
			}
		})
	})
	b.Run("uncached_rs256", func(b *testing.B) { v := newV(b); noCache(v); run(b, v, rs) })
	b.Run("uncached_es256", func(b *testing.B) { v := newV(b); noCache(v); run(b, v, es) })
	b.Run("malformed", func(b *testing.B) {
		v := newV(b)
		b.ReportAllocs()
		for b.Loop() {
			v.Verify(ctx, "not-a-jwt")
		}
	})
}
