package jwt

import (
	"context"
	"strings"
	"testing"

	gojwt "github.com/golang-jwt/jwt/v5"
)

// TestHostileShapesAreCheap checks that oversized and mis-shaped tokens are
// refused as Malformed before any decoding, without allocating.
func TestHostileShapesAreCheap(t *testing.T) {
	clock := newClock(t0)
	def := fileVerifier(t, clock, Options{})
	roomy := fileVerifier(t, clock, Options{MaxTokenBytes: 4 << 20}) // the shape checks, not the length cap, must refuse these
	mib := strings.Repeat("A", 1<<20)
	cases := []struct {
		name string
		v    *Verifier
		tok  string
	}{
		{"100k dots", def, strings.Repeat(".", 100_000)},
		{"100k dots, no length cap", roomy, strings.Repeat(".", 100_000)},
		{"100k dot-separated segments, no length cap", roomy, strings.Repeat("a.", 100_000) + "a"},
		{"1 MiB token", def, mib + "." + mib + "." + mib},
		{"1 MiB without dots, no length cap", roomy, mib},
		{"1 MiB of 0xff, no length cap", roomy, strings.Repeat("\xff", 1<<20)},
		{"one byte over the cap", def, strings.Repeat("a", DefaultMaxTokenBytes-2) + ".b.c"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.v.Verify(context.Background(), tc.tok); got.Status != Malformed {
				t.Fatalf("status %s; want %s", got.Status, Malformed)
			}
			if allocs := testing.AllocsPerRun(20, func() { tc.v.Verify(context.Background(), tc.tok) }); allocs != 0 {
				t.Errorf("%v allocations per Verify; want 0", allocs)
			}
		})
	}
}

func TestCachedVerifyDoesNotAllocate(t *testing.T) {
	k := keys()
	v := fileVerifier(t, newClock(t0), Options{})
	tok := sign(t, gojwt.SigningMethodRS256, k.rsa, "rsa-1", with(claims(t0), "scope", "a b", "tenant", "t"))
	if got := v.Verify(context.Background(), tok); got.Status != Valid {
		t.Fatal(got.Status)
	}
	if allocs := testing.AllocsPerRun(100, func() { v.Verify(context.Background(), tok) }); allocs != 0 {
		t.Fatalf("%v allocations per cached Verify; want 0", allocs)
	}
}

func FuzzVerify(f *testing.F) {
	k := keys()
	tok := sign(f, gojwt.SigningMethodRS256, k.rsa, "rsa-1", claims(t0))
	for _, s := range []string{tok, tok[:len(tok)-1], "a.b.c", "..", "e30.e30.e30", rawToken(`{"alg":"none"}`, `{"iss":"`+issA+`"}`, []byte("x"))} {
		f.Add(s)
	}
	v := fileVerifier(f, newClock(t0), Options{})
	f.Fuzz(func(t *testing.T, raw string) {
		got := v.Verify(context.Background(), raw)
		if got.Status == Valid && raw != tok {
			t.Fatalf("forged token accepted: %q", raw)
		}
		if got.Status == "" {
			t.Fatal("empty status")
		}
	})
}
