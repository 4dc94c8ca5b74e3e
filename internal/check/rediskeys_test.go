package check

import (
	"bytes"
	"context"
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/redis/go-redis/v9"
	"google.golang.org/protobuf/proto"

	"github.com/extauthz/extauthz/internal/authn/apikey"
	"github.com/extauthz/extauthz/internal/authn/rediskeys"
	"github.com/extauthz/extauthz/internal/engine"
	"github.com/extauthz/extauthz/internal/policy"
	"github.com/extauthz/extauthz/internal/testutil/redistest"
	"github.com/extauthz/extauthz/policies"
)

// redisKeysEngine is the shipped policy with its API keys moved to the
// Redis at addr (imported as `extauthz key import` does) and
// settings.api_keys_store selecting it. invalidated is told every
// invalidation the store applies.
func redisKeysEngine(t *testing.T, addr string, invalidated chan<- struct{}) (*engine.Engine, rediskeys.Writer) {
	t.Helper()
	src, err := policy.LoadFS(policies.FS, "policies")
	if err != nil {
		t.Fatal(err)
	}
	root := src.Data["extauthz"].(map[string]any)
	keys, err := json.Marshal(root["api_keys"])
	if err != nil {
		t.Fatal(err)
	}
	delete(root, "api_keys")
	var settings map[string]any
	b, _ := json.Marshal(root["settings"])
	_ = json.Unmarshal(b, &settings)
	if settings == nil {
		settings = map[string]any{}
	}
	settings["api_keys_store"] = map[string]any{"type": "redis", "addr": addr, "timeout_ms": 5000}
	root["settings"] = settings

	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { c.Close() })
	w := rediskeys.Writer{Client: c, Prefix: rediskeys.DefaultPrefix}
	if _, err := w.Import(context.Background(), bytes.NewReader(keys), 100, nil); err != nil {
		t.Fatal(err)
	}
	e, err := engine.Build(context.Background(), src, engine.Options{
		Now:      func() time.Time { return testNow },
		KeyStore: rediskeys.Options{Metrics: rediskeys.Metrics{Invalidated: func() { invalidated <- struct{}{} }}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	if e.Remote == nil || e.Keys.Len() != 0 {
		t.Fatalf("not a Redis key store: remote %v, %d embedded keys", e.Remote, e.Keys.Len())
	}
	if err := e.Servable(); err != nil {
		t.Fatal(err)
	}
	return e, w
}

// sameAnswer strips what differs between two policy versions' answers to
// one request: the decision id and the policy version.
func sameAnswer(t testing.TB, resp *authv3.CheckResponse) *authv3.CheckResponse {
	c := comparable(t, resp)
	if f := c.GetDynamicMetadata().GetFields(); f != nil {
		delete(f, "policy_version")
	}
	return c
}

func waitFor(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("no %s", what)
	}
}

// A server looking keys up in Redis, memoizing, answers the generated
// corpus exactly as one with the keys embedded that evaluates every
// request afresh.
func TestRedisKeysEqualEmbedded(t *testing.T) {
	srv := redistest.Start(t, "internal/check")
	inv := make(chan struct{}, 1024)
	remote, _ := redisKeysEngine(t, srv.Addr(), inv)
	if !remote.Policy.Pure() {
		t.Fatal("the shipped policy is not memoized")
	}
	memo := newServer(t, remote)
	fresh := newServer(t, demoEngine(t))
	fresh.NoMemo = true
	n := 400
	if testing.Short() {
		n = 100
	}
	rng := rand.New(rand.NewPCG(7, 18))
	for range n {
		r := genRequest(rng)
		for i := range 2 {
			want := sameAnswer(t, wireCheck(t, fresh, r))
			got := sameAnswer(t, wireCheck(t, memo, r))
			if !proto.Equal(got, want) {
				t.Fatalf("Redis keys (call %d) and embedded keys differ for %v\nredis:    %v\nembedded: %v", i+1, r.GetAttributes(), got, want)
			}
		}
	}
}

// The decision memo never serves an allow made for a key's old record:
// not after a revocation, not after a suspension, not after its scopes
// were narrowed, and a key deleted from Redis is unknown at once.
func TestRedisKeysMemoNeverServesAnOldAllow(t *testing.T) {
	srv := redistest.Start(t, "internal/check")
	inv := make(chan struct{}, 1024)
	eng, w := redisKeysEngine(t, srv.Addr(), inv)
	waitFor(t, inv, "subscription")
	memo := newServer(t, eng)
	ctx := context.Background()
	digest := apikey.Hash(demoKey)
	write := func(r *authv3.CheckRequest) *authv3.CheckResponse {
		return wireCheck(t, memo, r)
	}
	post := func() *authv3.CheckRequest {
		return req("POST", "/v1/orders", map[string]string{"x-api-key": demoKey, "x-tenant-id": "42", "idempotency-key": "i1"})
	}
	reason := func(resp *authv3.CheckResponse) string {
		return resp.GetDynamicMetadata().GetFields()["reason"].GetStringValue()
	}
	for range 3 { // filled, then served from the memo
		if resp := write(post()); resp.GetStatus().GetCode() != 0 {
			t.Fatalf("before: %v", resp)
		}
	}
	steps := []struct {
		change func() error
		want   string
	}{
		{func() error { return w.SetStatus(ctx, digest, "revoked") }, "key_revoked"},
		{func() error { return w.SetStatus(ctx, digest, "active") }, "ok"},
		{func() error { return w.SetStatus(ctx, digest, "suspended") }, "key_suspended"},
		{func() error {
			return w.Put(ctx, digest, []byte(`{"id":"demo-orders","subject":"svc:orders-client","tenants":["42"],"scopes":["orders:read"]}`))
		}, "scope_missing"},
		{func() error { return w.Delete(ctx, digest) }, "key_invalid"},
	}
	for _, st := range steps {
		if err := st.change(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, inv, "invalidation")
		for range 2 {
			resp := write(post())
			if got := reason(resp); got != st.want || (st.want == "ok") != (resp.GetStatus().GetCode() == 0) {
				t.Fatalf("after the change to %q: reason %q, status %v", st.want, got, resp.GetStatus())
			}
		}
	}
}

// With Redis down, a key the sidecar has not cached is denied
// auth_unavailable in the API's envelope, never allowed.
func TestRedisKeysDownDenies(t *testing.T) {
	srv := redistest.Start(t, "internal/check")
	inv := make(chan struct{}, 1024)
	eng, _ := redisKeysEngine(t, srv.Addr(), inv)
	s := newServer(t, eng)
	srv.Kill()
	for _, key := range []string{demoKey, readonlyKey, "xa_unknown"} {
		r := req("GET", "/v1/orders", map[string]string{"x-api-key": key, "x-tenant-id": "42"})
		r.Attributes.ContextExtensions = map[string]string{"profile": "dialektai"}
		resp := wireCheck(t, s, r)
		d := resp.GetDeniedResponse()
		if d == nil || d.GetStatus().GetCode() != 503 || resp.GetDynamicMetadata().GetFields()["reason"].GetStringValue() != "auth_unavailable" {
			t.Fatalf("%s with Redis down: %v", key, resp)
		}
		if !bytes.Contains([]byte(d.GetBody()), []byte("SYSTEM_SERVICE_UNAVAILABLE")) {
			t.Errorf("not the dialektai envelope: %s", d.GetBody())
		}
	}
}

// A Redis record whose plan the limits do not define is a deny
// (internal_error), never a key without any quota (the embedded store
// refuses such a record at load).
func TestRedisKeyWithUnknownPlanDenies(t *testing.T) {
	srv := redistest.Start(t, "internal/check")
	inv := make(chan struct{}, 1024)
	eng, w := redisKeysEngine(t, srv.Addr(), inv)
	s := newServer(t, eng)
	for key, plan := range map[string]string{"xa_plan_typo": "Starter", "xa_plan_none": "no-such-plan", "xa_plan_ok": "starter"} {
		if err := w.Put(context.Background(), apikey.Hash(key), []byte(`{"id":"`+key+`","tenants":["42"],"scopes":["orders:read"],"plan":"`+plan+`"}`)); err != nil {
			t.Fatal(err)
		}
		want := "internal_error"
		if plan == "starter" {
			want = "ok"
		}
		if reason, _, _ := decide(t, s, req("GET", "/v1/orders", map[string]string{"x-api-key": key, "x-tenant-id": "42"})); reason != want {
			t.Errorf("plan %q: %s, want %s", plan, reason, want)
		}
	}
}
