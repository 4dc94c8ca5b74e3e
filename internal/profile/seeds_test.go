package profile

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/decision"
)

// The published examples of the five seed contracts, copied from the seed
// files, and the decision that must reproduce each one.

var docTime = time.Date(2025, 10, 18, 10, 30, 0, 0, time.UTC)

func render(t *testing.T, prof string, d decision.Decision) Response {
	t.Helper()
	set, err := NewSet(nil)
	if err != nil {
		t.Fatal(err)
	}
	p, ok := set.Get(prof)
	if !ok {
		t.Fatalf("no profile %s", prof)
	}
	return p.Render(&d, docTime)
}

func compact(t *testing.T, s string) string {
	t.Helper()
	var b bytes.Buffer
	if err := json.Compact(&b, []byte(s)); err != nil {
		t.Fatalf("bad example JSON: %v\n%s", err, s)
	}
	return b.String()
}

func hdr(r Response, name string) string {
	for _, h := range r.Headers {
		if h[0] == name {
			return h[1]
		}
	}
	return ""
}

// exact asserts status and a byte-exact body (the published example, compacted:
// same fields, same order, same values).
func exact(t *testing.T, r Response, status int, example string) {
	t.Helper()
	if r.Status != status {
		t.Errorf("status %d, want %d", r.Status, status)
	}
	if want := compact(t, example); string(r.Body) != want {
		t.Errorf("body\n got %s\nwant %s", r.Body, want)
	}
}

func TestSeed001Dialektai(t *testing.T) {
	rl := &decision.RateLimit{Limit: 100, Remaining: 0, Reset: 1697624400, RetryAfter: 60, WindowSeconds: 60, Window: "1 minute"}
	t.Run("401 invalid credentials", func(t *testing.T) {
		r := render(t, "dialektai", decision.Decision{Reason: decision.KeyInvalid, RequestID: "req-12345"})
		exact(t, r, 401, `{"error": true, "message": "Invalid authentication credentials", "error_code": "AUTH_INVALID_CREDENTIALS", "status_code": 401, "trace_id": "req-12345", "timestamp": "2025-10-18T10:30:00Z"}`)
		if hdr(r, "x-request-id") != "req-12345" {
			t.Errorf("X-Request-ID must equal trace_id: %v", r.Headers)
		}
	})
	t.Run("api key sent as Bearer is 401 like the contract says", func(t *testing.T) {
		r := render(t, "dialektai", decision.Decision{Reason: decision.TokenInvalid, RequestID: "req-12345"})
		if r.Status != 401 {
			t.Errorf("status %d", r.Status)
		}
	})
	t.Run("403 invalid tenant id", func(t *testing.T) {
		r := render(t, "dialektai", decision.Decision{Reason: decision.TenantHeaderInvalid, Variant: "tenant", RequestID: "req-12345",
			Details: map[string]string{"header": "X-Tenant-Id", "value": "invalid-id"}})
		exact(t, r, 403, `{
  "error": true,
  "message": "Invalid X-Tenant-Id header format. Must be a positive integer.",
  "error_code": "AUTH_INSUFFICIENT_PERMISSIONS",
  "status_code": 403,
  "details": [
    {
      "field": "X-Tenant-Id",
      "message": "Received: 'invalid-id'",
      "code": "INVALID_FORMAT"
    }
  ],
  "trace_id": "req-12345",
  "timestamp": "2025-10-18T10:30:00Z"
}`)
	})
	t.Run("403 tenant id required", func(t *testing.T) {
		r := render(t, "dialektai", decision.Decision{Reason: decision.TenantHeaderMissing, Variant: "tenant", RequestID: "req-12345",
			Details: map[string]string{"header": "X-Tenant-Id"}})
		exact(t, r, 403, `{
  "error": true,
  "message": "X-Tenant-Id header is required when organization scoping is enabled for this database.",
  "error_code": "AUTH_INSUFFICIENT_PERMISSIONS",
  "status_code": 403,
  "details": [
    {
      "field": "X-Tenant-Id",
      "message": "Database requires tenant filtering but header not provided",
      "code": "MISSING_REQUIRED_HEADER"
    }
  ],
  "trace_id": "req-12345",
  "timestamp": "2025-10-18T10:30:00Z"
}`)
	})
	t.Run("429 rate limit with headers", func(t *testing.T) {
		r := render(t, "dialektai", decision.Decision{Reason: decision.RateLimited, RequestID: "req-12345", RateLimit: rl})
		exact(t, r, 429, `{"error": true, "message": "Rate limit exceeded. Please retry after 60 seconds.", "error_code": "QUOTA_RATE_LIMIT_EXCEEDED", "status_code": 429, "trace_id": "req-12345", "timestamp": "2025-10-18T10:30:00Z"}`)
		for name, want := range map[string]string{"x-ratelimit-limit": "100", "x-ratelimit-remaining": "0", "x-ratelimit-reset": "1697624400", "retry-after": "60"} {
			if got := hdr(r, name); got != want {
				t.Errorf("%s = %q, want %q", name, got, want)
			}
		}
	})
	t.Run("500 and 503", func(t *testing.T) {
		exact(t, render(t, "dialektai", decision.Decision{Reason: decision.InternalError, RequestID: "req-12345"}), 500,
			`{"error": true, "message": "An unexpected error occurred", "error_code": "SYSTEM_INTERNAL_ERROR", "status_code": 500, "trace_id": "req-12345", "timestamp": "2025-10-18T10:30:00Z"}`)
		r := render(t, "dialektai", decision.Decision{Reason: decision.AuthUnavailable, RequestID: "req-12345"})
		exact(t, r, 503, `{"error": true, "message": "Service temporarily unavailable. Please try again later.", "error_code": "SYSTEM_SERVICE_UNAVAILABLE", "status_code": 503, "trace_id": "req-12345", "timestamp": "2025-10-18T10:30:00Z"}`)
		if hdr(r, "retry-after") == "" {
			t.Error("503 must carry Retry-After")
		}
	})
	t.Run("codes from the AUTH_* table", func(t *testing.T) {
		for reason, want := range map[decision.Reason]struct {
			status int
			code   string
		}{
			decision.TokenExpired: {401, "AUTH_TOKEN_EXPIRED"}, decision.TokenInvalid: {401, "AUTH_TOKEN_INVALID"},
			decision.KeySuspended: {403, "AUTH_ACCOUNT_SUSPENDED"}, decision.ScopeMissing: {403, "AUTH_INSUFFICIENT_PERMISSIONS"},
			decision.CredentialsMissing: {401, "AUTH_INVALID_CREDENTIALS"}, decision.RouteNotFound: {404, "NOT_FOUND_RESOURCE"},
		} {
			r := render(t, "dialektai", decision.Decision{Reason: reason, RequestID: "r"})
			var b struct {
				Code   string `json:"error_code"`
				Status int    `json:"status_code"`
			}
			_ = json.Unmarshal(r.Body, &b)
			if r.Status != want.status || b.Status != want.status || b.Code != want.code {
				t.Errorf("%s: %d %+v, want %+v", reason, r.Status, b, want)
			}
		}
	})
}

func TestSeed000AiDial(t *testing.T) {
	code := func(r Response) (string, string) {
		var b struct {
			Error struct {
				Code       string `json:"code"`
				MessageKey string `json:"message_key"`
				RequestID  string `json:"request_id"`
			} `json:"error"`
		}
		if err := json.Unmarshal(r.Body, &b); err != nil {
			t.Fatal(err)
		}
		return b.Error.Code, b.Error.MessageKey
	}
	for reason, status := range map[decision.Reason]int{
		decision.CredentialsMissing: 401, decision.KeyInvalid: 401, decision.KeyExpired: 401, decision.KeyRevoked: 401,
		decision.TokenInvalid: 401, decision.TokenExpired: 401, decision.WrongScheme: 401, decision.CredentialsMalformed: 401,
		decision.IPNotAllowed: 403, decision.WrongAuthMode: 403, decision.ScopeMissing: 403, decision.BrowserAPIKey: 403,
		decision.TenantForbidden: 404, decision.RouteNotFound: 404, decision.AuthUnavailable: 503, decision.InternalError: 500,
	} {
		r := render(t, "aidial", decision.Decision{Reason: reason, RequestID: "rq-1"})
		c, k := code(r)
		if r.Status != status || c == "" || k == "" {
			t.Errorf("%s: %d code=%q key=%q, want %d", reason, r.Status, c, k, status)
		}
		var env struct {
			Error map[string]any `json:"error"`
		}
		_ = json.Unmarshal(r.Body, &env)
		if env.Error["request_id"] != "rq-1" {
			t.Errorf("%s: request_id missing: %s", reason, r.Body)
		}
	}
	// Non-enumerating 404: an out-of-scope tenant is indistinguishable from an unknown route.
	a := render(t, "aidial", decision.Decision{Reason: decision.TenantForbidden, RequestID: "x", Details: map[string]string{"header": "X-Tenant-Id", "value": "7"}})
	b := render(t, "aidial", decision.Decision{Reason: decision.RouteNotFound, RequestID: "x"})
	if a.Status != 404 || !bytes.Equal(a.Body, b.Body) {
		t.Errorf("tenant 404 differs from route 404:\n%s\n%s", a.Body, b.Body)
	}
	// 429: Retry-After header plus the envelope's retry fields.
	r := render(t, "aidial", decision.Decision{Reason: decision.RateLimited, RequestID: "x", RateLimit: &decision.RateLimit{RetryAfter: 12, Limit: 10}})
	if r.Status != 429 || hdr(r, "retry-after") != "12" || !strings.Contains(string(r.Body), `"retry_after_ms":12000`) || !strings.Contains(string(r.Body), `"details":{"retry_after_seconds":12}`) {
		t.Errorf("429: %v %s", r.Headers, r.Body)
	}
}

func TestSeed002Aidelly(t *testing.T) {
	cases := []struct {
		d      decision.Decision
		status int
		code   string
	}{
		{decision.Decision{Reason: decision.CredentialsMissing}, 401, "PUBLIC_API_AUTH_REQUIRED"},
		{decision.Decision{Reason: decision.CredentialsMalformed}, 401, "PUBLIC_API_AUTH_REQUIRED"},
		{decision.Decision{Reason: decision.KeyInvalid}, 401, "PUBLIC_API_KEY_INVALID"},
		{decision.Decision{Reason: decision.KeyRevoked}, 401, "PUBLIC_API_KEY_INVALID"},
		{decision.Decision{Reason: decision.KeyExpired}, 401, "PUBLIC_API_KEY_EXPIRED"},
		{decision.Decision{Reason: decision.ScopeMissing, Details: map[string]string{"scope": "posts:write"}}, 403, "PUBLIC_API_SCOPE_FORBIDDEN"},
		{decision.Decision{Reason: decision.TenantForbidden, Variant: "workspace"}, 403, "PUBLIC_API_WORKSPACE_FORBIDDEN"},
		{decision.Decision{Reason: decision.TenantForbidden, Variant: "brand"}, 403, "PUBLIC_API_BRAND_FORBIDDEN"},
		{decision.Decision{Reason: decision.TenantHeaderMissing, Variant: "workspace"}, 403, "PUBLIC_API_WORKSPACE_FORBIDDEN"},
		{decision.Decision{Reason: decision.AuthUnavailable}, 500, "PUBLIC_API_AUTH_ERROR"},
		{decision.Decision{Reason: decision.InternalError}, 500, "PUBLIC_API_CONTEXT_ERROR"},
		{decision.Decision{Reason: decision.IdempotencyKeyMissing}, 400, "PUBLIC_API_IDEMPOTENCY_REQUIRED"},
		{decision.Decision{Reason: decision.RateLimited, RateLimit: &decision.RateLimit{Limit: 60, Remaining: 0, Reset: 1700000060, RetryAfter: 30}}, 429, "PUBLIC_API_RATE_LIMITED"},
	}
	for _, c := range cases {
		c.d.RequestID = "req_1"
		r := render(t, "aidelly", c.d)
		var b struct {
			Error struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
			RequestID string `json:"request_id"`
		}
		if err := json.Unmarshal(r.Body, &b); err != nil {
			t.Fatal(err)
		}
		if r.Status != c.status || b.Error.Code != c.code || b.Error.Message == "" || b.RequestID != "req_1" {
			t.Errorf("%s.%s: %d %s", c.d.Reason, c.d.Variant, r.Status, r.Body)
		}
	}
	r := render(t, "aidelly", cases[len(cases)-1].d)
	for name, want := range map[string]string{"retry-after": "30", "x-ratelimit-limit": "60", "x-ratelimit-remaining": "0", "x-ratelimit-reset": "1700000060"} {
		if hdr(r, name) != want {
			t.Errorf("%s = %q", name, hdr(r, name))
		}
	}
}

func TestSeed003Lowercase(t *testing.T) {
	// The contract publishes one 401 for "invalid or missing API key".
	for _, reason := range []decision.Reason{decision.KeyInvalid, decision.CredentialsMissing, decision.CredentialsMalformed,
		decision.WrongScheme, decision.KeyExpired, decision.KeySuspended, decision.TokenInvalid, decision.TokenExpired} {
		exact(t, render(t, "lowercase", decision.Decision{Reason: reason}), 401,
			`{"error": {"code": "invalid_api_key", "message": "The provided API key is invalid or has been revoked"}}`)
	}
	r := render(t, "lowercase", decision.Decision{Reason: decision.RateLimited,
		RateLimit: &decision.RateLimit{Limit: 100, Remaining: 0, Reset: 1697624400, RetryAfter: 60, WindowSeconds: 60, Window: "1 minute"}})
	exact(t, r, 429, `{
    "error": {
      "code": "rate_limit_exceeded",
      "message": "API rate limit exceeded. Please wait 60 seconds before retrying.",
      "details": {
        "limit": 100,
        "window": "1 minute",
        "retry_after": 60
      }
    }
  }`)
	for _, h := range []string{"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset", "retry-after"} {
		if hdr(r, h) == "" {
			t.Errorf("429 lacks %s", h)
		}
	}
	exact(t, render(t, "lowercase", decision.Decision{Reason: decision.InternalError, RequestID: "req_abc123xyz"}), 500, `{
    "error": {
      "code": "internal_error",
      "message": "An unexpected error occurred. Please try again or contact support if the issue persists.",
      "details": {
        "request_id": "req_abc123xyz"
      }
    }
  }`)
	if r := render(t, "lowercase", decision.Decision{Reason: decision.ScopeMissing}); r.Status != 403 {
		t.Errorf("missing permission: %d", r.Status)
	}
}

func TestSeed004AISafe(t *testing.T) {
	r := render(t, "aisafe", decision.Decision{Reason: decision.RateLimited, RateLimit: &decision.RateLimit{RetryAfter: 42}})
	exact(t, r, 429, `{"detail": "Rate limit exceeded. Retry after 42s."}`)
	if hdr(r, "retry-after") != "42" {
		t.Errorf("Retry-After = %q", hdr(r, "retry-after"))
	}
	for reason, status := range map[decision.Reason]int{
		decision.CredentialsMissing: 401, decision.KeyExpired: 401, decision.KeyInvalid: 401, decision.KeyRevoked: 401, decision.TokenExpired: 401,
		decision.ScopeMissing: 403, decision.WrongAuthMode: 403, decision.TenantForbidden: 404, decision.InternalError: 500,
	} {
		r := render(t, "aisafe", decision.Decision{Reason: reason})
		var b map[string]any
		if err := json.Unmarshal(r.Body, &b); err != nil || len(b) != 1 || b["detail"] == "" {
			t.Errorf("%s: body %s", reason, r.Body)
		}
		if r.Status != status {
			t.Errorf("%s: %d, want %d", reason, r.Status, status)
		}
	}
	// Cross-organization access is 404, never 403, and looks like any 404.
	a := render(t, "aisafe", decision.Decision{Reason: decision.TenantForbidden, Variant: "tenant"})
	b := render(t, "aisafe", decision.Decision{Reason: decision.RouteNotFound})
	if a.Status != 404 || !bytes.Equal(a.Body, b.Body) {
		t.Errorf("cross-org: %d %s vs %s", a.Status, a.Body, b.Body)
	}
}
