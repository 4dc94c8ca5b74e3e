package check

import (
	"context"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/extauthz/extauthz/internal/authn"
	"github.com/extauthz/extauthz/internal/authn/jwt"
	"github.com/extauthz/extauthz/internal/decision"
	"github.com/extauthz/extauthz/internal/engine"
	"github.com/extauthz/extauthz/internal/policy"
)

func engineWith(t *testing.T, rego string) *engine.Engine {
	t.Helper()
	src := &policy.Source{Origin: "test", Modules: map[string]string{"p.rego": rego}, Data: map[string]any{}}
	e, err := engine.Build(context.Background(), src, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// Every policy failure is an enveloped 500 deny, never a gRPC error, never an allow.
func TestFailClosed(t *testing.T) {
	cases := map[string]string{
		"undefined":                          "package extauthz\n",
		"conflict":                           "package extauthz\ndecision := {\"allow\": true, \"reason\": \"ok\"} if input.x\ndecision := {\"allow\": true, \"reason\": \"ok\"} if true\n",
		"builtin error":                      "package extauthz\ndecision := {\"allow\": true, \"reason\": \"ok\"} if { x := 1 / 0; x > 0 }\n",
		"unknown reason":                     "package extauthz\ndecision := {\"allow\": false, \"reason\": \"because\"}\n",
		"allow with deny reason":             "package extauthz\ndecision := {\"allow\": true, \"reason\": \"scope_missing\"}\n",
		"allow not boolean":                  "package extauthz\ndecision := {\"allow\": \"yes\", \"reason\": \"ok\"}\n",
		"anonymous allow on protected route": "package extauthz\ndecision := {\"allow\": true, \"reason\": \"ok\"}\n",
	}
	for name, rego := range cases {
		t.Run(name, func(t *testing.T) {
			s := newServer(t, engineWith(t, rego))
			reason, status, resp := decide(t, s, req("GET", "/x", nil))
			if reason != "internal_error" || status != 500 {
				t.Fatalf("got %s/%d", reason, status)
			}
			body := resp.GetDeniedResponse().GetBody()
			if !strings.Contains(body, `"code":"internal_error"`) || strings.Contains(body, "eval") || strings.Contains(body, "conflict") {
				t.Errorf("body leaks or lacks envelope: %s", body)
			}
		})
	}
}

func TestFailClosedCancelledContext(t *testing.T) {
	s := newServer(t, demoEngine(t))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	resp, err := s.Check(ctx, req("GET", "/v1/orders", map[string]string{"x-api-key": demoKey, "x-tenant-id": "42"}))
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetOkResponse() != nil || resp.GetDeniedResponse().GetStatus().GetCode() != 500 {
		t.Fatalf("cancelled check was not denied: %v", resp)
	}
}

type panickyTokens struct{}

func (panickyTokens) Verify(context.Context, string) (authn.Status, *authn.Identity) { panic("boom") }
func (panickyTokens) Ready() bool                                                    { return true }
func (panickyTokens) Files() []jwt.File                                              { return nil }
func (panickyTokens) Close()                                                         {}

func TestFailClosedPanic(t *testing.T) {
	e := demoEngine(t)
	e.Tokens = panickyTokens{}
	s := newServer(t, e)
	r := req("GET", "/v1/orders", map[string]string{"authorization": "Bearer a.b.c", "x-tenant-id": "42"})
	r.Attributes.ContextExtensions = map[string]string{"profile": "dialektai"}
	reason, status, resp := decide(t, s, r)
	if reason != "internal_error" || status != 500 || strings.Contains(resp.GetDeniedResponse().GetBody(), "boom") {
		t.Fatalf("got %s/%d %v", reason, status, resp)
	}
	// The failure still answers in the API's own envelope with its request id.
	if body := resp.GetDeniedResponse().GetBody(); !strings.Contains(body, `"error_code":"SYSTEM_INTERNAL_ERROR"`) || !strings.Contains(body, `"trace_id":"req-12345"`) {
		t.Errorf("panic lost the profile or request id: %s", body)
	}
}

func TestFailClosedNoEngineAndNoHTTP(t *testing.T) {
	s := newServer(t, nil)
	if reason, status, _ := decide(t, s, req("GET", "/v1/orders", nil)); reason != "internal_error" || status != 500 {
		t.Fatalf("no engine: %s/%d", reason, status)
	}
	s = newServer(t, demoEngine(t))
	r := req("GET", "/healthz", nil)
	r.Attributes.Request = nil
	if reason, status, _ := decide(t, s, r); reason != "internal_error" || status != 500 {
		t.Fatalf("no http attributes: %s/%d", reason, status)
	}
}

func TestBadContextExtensionsFailClosed(t *testing.T) {
	s := newServer(t, demoEngine(t))
	for _, ce := range []map[string]string{
		{"route": "no-such-route"},
		{"profile": "no-such-profile"},
		{"tenant_required": "maybe"},
		{"auth": "password"},
		{"profle": "aidial"}, // a typo: the rulebook reads only facts, so it would change nothing
		{"route": "health", "scopez": "admin"},
		{"route": "orders-read", "tenant_header": "X-API-Key"},      // the key would be echoed in the deny
		{"route": "orders-read", "tenant_header": "X-Org"},          // no policy route declares it: other routes would pass it on unverified
		{"route": "orders-read", "tenant_header": "X-Workspace-Id"}, // declared in dimension workspace, checked here in tenant
	} {
		r := req("GET", "/healthz", nil)
		r.Attributes.ContextExtensions = ce
		if reason, _, _ := decide(t, s, r); reason != "internal_error" {
			t.Errorf("%v: got %s", ce, reason)
		}
	}
}

func TestContextExtensionsOverrideRoute(t *testing.T) {
	s := newServer(t, demoEngine(t))
	r := req("GET", "/v1/orders", map[string]string{"x-api-key": readonlyKey, "x-tenant-id": "42"})
	if reason, _, _ := decide(t, s, r); reason != "ok" {
		t.Fatalf("baseline: %s", reason)
	}
	r.Attributes.ContextExtensions = map[string]string{"scopes": "orders:read orders:write"}
	if reason, _, _ := decide(t, s, r); reason != "scope_missing" {
		t.Errorf("scopes override: %s", reason)
	}
	r.Attributes.ContextExtensions = map[string]string{"auth": "jwt"}
	if reason, _, _ := decide(t, s, r); reason != "wrong_auth_mode" {
		t.Errorf("auth override: %s", reason)
	}
	noTenant := req("GET", "/v1/orders", map[string]string{"x-api-key": readonlyKey})
	if reason, _, _ := decide(t, s, noTenant); reason != "tenant_header_missing" {
		t.Errorf("tenant required by the policy: %s", reason)
	}
	noTenant.Attributes.ContextExtensions = map[string]string{"tenant_required": "false"}
	if reason, _, _ := decide(t, s, noTenant); reason != "ok" {
		t.Errorf("tenant override: %s", reason)
	}
	r.Attributes.ContextExtensions = map[string]string{"route": "admin"}
	if reason, _, _ := decide(t, s, r); reason != "wrong_auth_mode" {
		t.Errorf("route override: %s", reason)
	}
}

// A policy that overruns the evaluation budget is denied, not waited for:
// this one would take hours (10^10 steps), so the test only returns if the
// budget stops it.
func TestFailClosedEvaluationBudget(t *testing.T) {
	s := newServer(t, engineWith(t, "package extauthz\ndecision := {\"allow\": true, \"reason\": \"ok\"} if count([1 | some x in numbers.range(1, 100000); some y in numbers.range(1, 100000); x > y]) > 0\n"))
	s.Timeout = 20 * time.Millisecond
	reason, status, _ := decide(t, s, req("GET", "/x", nil))
	if reason != "internal_error" || status != 500 {
		t.Fatalf("got %s/%d", reason, status)
	}
}

type panicObserver struct{}

func (panicObserver) Observe(context.Context, *decision.Decision, time.Duration) {
	panic("observer")
}

// A panic after the decision (a decision-log or metrics observer) or
// while building the response never crashes the server (grpc-go does not
// recover a handler's panic) and never allows: an observer's panic leaves
// the response as decided; a response that cannot be built is
// internal_error in the built-in envelope.
func TestPanicsAroundTheDecisionAreNotCrashes(t *testing.T) {
	s := newServer(t, demoEngine(t))
	s.Observers = []Observer{panicObserver{}}
	ok := req("GET", "/v1/orders", map[string]string{"x-api-key": readonlyKey, "x-tenant-id": "42"})
	for range 2 { // fresh, then from the memo
		if reason, status, _ := decide(t, s, ok); reason != "ok" || status != 200 {
			t.Errorf("with a panicking observer: %s %d, want the allow as decided", reason, status)
		}
		if resp := wireCheck(t, s, ok); resp.GetOkResponse() == nil {
			t.Errorf("wire: %v", resp)
		}
	}

	// The engine's profiles broken: every deny would panic.
	eng := demoEngine(t)
	eng.Profiles = nil
	s = newServer(t, eng)
	for _, r := range []*authv3.CheckRequest{req("GET", "/v1/orders", nil), req("GET", "/v1/orders", map[string]string{"x-api-key": "xa_nope"})} {
		resp := wireCheck(t, s, r)
		d := resp.GetDeniedResponse()
		if d == nil || d.GetStatus().GetCode() != 500 || !strings.Contains(d.GetBody(), "internal_error") ||
			resp.GetDynamicMetadata().GetFields()["decision_id"].GetStringValue() == "" {
			t.Errorf("broken profiles: %v, want internal_error 500 with a decision_id", resp)
		}
	}
}

// The last resort when no profile renders: a deny, never an empty reply
// (which Envoy would read as status OK).
func TestBareDenyIsADeny(t *testing.T) {
	resp := bareDeny("d1")
	if resp.GetStatus().GetCode() == 0 || resp.GetDeniedResponse().GetStatus().GetCode() != 500 ||
		resp.GetDynamicMetadata().GetFields()["decision_id"].GetStringValue() != "d1" {
		t.Errorf("bare deny: %v", resp)
	}
}
