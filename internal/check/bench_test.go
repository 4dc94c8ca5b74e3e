package check

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	gojwt "github.com/golang-jwt/jwt/v5"

	"github.com/extauthz/extauthz/internal/decision"
	"github.com/extauthz/extauthz/internal/wire"
)

// BenchmarkCheck measures the whole Check path in process (no gRPC): input
// build, credential verification, policy evaluation, response rendering.
func BenchmarkCheck(b *testing.B) {
	s := newServer(b, demoEngine(b))
	s.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	headers := map[string]string{
		"user-agent": "curl/8.5", "accept": "*/*", "x-forwarded-proto": "https",
		"x-forwarded-for": "203.0.113.9", "x-envoy-external-address": "203.0.113.9",
	}
	with := func(kv ...string) map[string]string {
		h := map[string]string{}
		for k, v := range headers {
			h[k] = v
		}
		for i := 0; i+1 < len(kv); i += 2 {
			h[kv[i]] = kv[i+1]
		}
		return h
	}
	cases := []struct {
		name, reason string
		method, path string
		headers      map[string]string
	}{
		{"apikey_allow", "ok", "GET", "/v1/orders/17", with("x-api-key", demoKey, "x-tenant-id", "42")},
		{"jwt_cached_allow", "ok", "GET", "/v1/orders/17", with("authorization", "Bearer "+demoJWT, "x-tenant-id", "42")},
		{"deny_missing", "credentials_missing", "GET", "/v1/orders/17", with("x-tenant-id", "42")},
		{"deny_unknown_key", "key_invalid", "GET", "/v1/orders/17", with("x-api-key", "xa_nope", "x-tenant-id", "42")},
		{"deny_tenant", "tenant_forbidden", "GET", "/v1/orders/17", with("x-api-key", demoKey, "x-tenant-id", "43")},
		{"deny_scope", "scope_missing", "POST", "/v1/orders", with("x-api-key", readonlyKey, "x-tenant-id", "42", "idempotency-key", "k")},
	}
	ctx := context.Background()
	for _, c := range cases {
		r := req(c.method, c.path, c.headers)
		if reason, _, _ := decide(&testing.T{}, s, r); reason != c.reason {
			b.Fatalf("%s: reason %s, want %s", c.name, reason, c.reason)
		}
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.Check(ctx, r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCheckNoMemo is the same mix with every decision evaluated by OPA.
func BenchmarkCheckNoMemo(b *testing.B) {
	s := newServer(b, demoEngine(b))
	s.NoMemo = true
	s.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	r := req("GET", "/v1/orders/17", map[string]string{"x-api-key": demoKey, "x-tenant-id": "42", "user-agent": "curl/8.5", "accept": "*/*"})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Check(context.Background(), r); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkServe is what the gRPC server runs per check besides transport:
// the handler and the codec's Marshal of its result. "message" is Check plus
// proto marshalling; "wire" is CheckWire, whose memoized allows arrive
// encoded.
func BenchmarkServe(b *testing.B) {
	s := newServer(b, demoEngine(b))
	s.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	codec := wire.Codec(0)
	ctx := context.Background()
	for _, c := range []struct {
		name    string
		headers map[string]string
	}{
		{"apikey_allow", map[string]string{"x-api-key": demoKey, "x-tenant-id": "42"}},
		{"deny_missing", map[string]string{"x-tenant-id": "42"}},
		{"deny_tenant", map[string]string{"x-api-key": demoKey, "x-tenant-id": "43"}},
	} {
		r := req("GET", "/v1/orders/17", c.headers)
		b.Run(c.name+"/message", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				resp, _ := s.Check(ctx, r)
				out, _ := codec.Marshal(resp)
				out.Free()
			}
		})
		b.Run(c.name+"/wire", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				out, _ := codec.Marshal(s.CheckWire(ctx, r))
				out.Free()
			}
		})
	}
}

// BenchmarkSteps measures the three steps of Check on their own, for an
// API-key allow and a missing-credential deny: step one (resolve facts,
// including the key lookup), step two from the memo and by OPA (building
// the OPA input value and evaluating the policy), and step three as a
// message and in wire form.
func BenchmarkSteps(b *testing.B) {
	s := newServer(b, demoEngine(b))
	eng := s.Engines.Current()
	ctx := context.Background()
	for _, c := range []struct {
		name    string
		headers map[string]string
	}{
		{"allow", map[string]string{"x-api-key": demoKey, "x-tenant-id": "42"}},
		{"deny", map[string]string{"x-tenant-id": "42"}},
	} {
		in := req("GET", "/v1/orders/17", c.headers)
		var r request
		s.requestToInput(ctx, eng, in, testNow, "d1", &r)
		d := &decision.Decision{ID: "d1"}
		s.decide(ctx, eng, &r, d, testNow)
		b.Run(c.name+"/1_input", func(b *testing.B) {
			b.ReportAllocs()
			var r request
			for b.Loop() {
				s.requestToInput(ctx, eng, in, testNow, "d1", &r)
			}
		})
		b.Run(c.name+"/2_decide_memo", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				r2 := r
				s.decide(ctx, eng, &r2, &decision.Decision{ID: "d1"}, testNow)
			}
		})
		b.Run(c.name+"/2_decide_opa", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := eng.Policy.Eval(ctx, r.Input()); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(c.name+"/3_response_message", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				s.toCheckResponse(eng, &r, d, testNow)
			}
		})
		b.Run(c.name+"/3_response_wire", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if s.encode(eng, &r, d, testNow) == nil {
					b.Fatal("not encoded")
				}
			}
		})
	}
}

// BenchmarkOPAEnvoyPolicy is what a policy written for the OPA-Envoy plugin
// costs per check in the compatibility mode (never memoized): the plugin's
// input (built as an OPA value), a full
// evaluation and the response, marshalled as the gRPC server does. Compare
// with BenchmarkServe/apikey_allow, the shipped rulebook from the memo.
func BenchmarkOPAEnvoyPolicy(b *testing.B) {
	codec := wire.Codec(0)
	ctx := context.Background()
	for _, c := range []struct {
		name, rego string
		r          *authv3.CheckRequest
	}{
		{"path_allow", envoyPathPolicy, req("GET", "/people/17", map[string]string{"user-agent": "curl/8.5", "accept": "*/*"})},
		{"object_allow", envoyObjectPolicy, req("GET", "/people/17?debug=1", map[string]string{"x-user": "alice", "user-agent": "curl/8.5", "accept": "*/*"})},
		{"object_deny_envelope", envoyObjectPolicy, req("GET", "/people/17", map[string]string{"x-user": "bob", "user-agent": "curl/8.5", "accept": "*/*"})},
	} {
		s := envoyServer(b, c.rego)
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				out, _ := codec.Marshal(s.CheckWire(ctx, c.r))
				out.Free()
			}
		})
	}
	s := envoyServer(b, envoyJWTPolicy)
	tok, err := gojwt.NewWithClaims(gojwt.SigningMethodHS256, gojwt.MapClaims{"role": "guest", "nbf": time.Now().Unix() - 60, "exp": time.Now().Unix() + 3600}).SignedString([]byte("secret"))
	if err != nil {
		b.Fatal(err)
	}
	r := req("GET", "/people/17", map[string]string{"authorization": "Bearer " + tok, "user-agent": "curl/8.5", "accept": "*/*"})
	if reason, _, _ := decide(&testing.T{}, s, r); reason != "ok" {
		b.Fatalf("jwt: %s", reason)
	}
	b.Run("jwt_allow", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			out, _ := codec.Marshal(s.CheckWire(ctx, r))
			out.Free()
		}
	})
	// The same token again with settings.jwt_verify_cache: verified once.
	sc := newServer(b, envoyEngine(b, envoyJWTPolicy, `{"opa_envoy_path": "envoy/authz/allow", "jwt_verify_cache": 1000}`))
	sc.Now = time.Now
	if reason, _, _ := decide(&testing.T{}, sc, r); reason != "ok" {
		b.Fatalf("jwt, cached: %s", reason)
	}
	b.Run("jwt_allow_verify_cache", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			out, _ := codec.Marshal(sc.CheckWire(ctx, r))
			out.Free()
		}
	})
}
