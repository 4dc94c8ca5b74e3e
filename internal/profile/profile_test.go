package profile

import (
	"cmp"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/decision"
)

func TestBuiltinsCoverEveryReason(t *testing.T) {
	set, err := NewSet(nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"aidelly", "aidial", "aisafe", "default", "dialektai", "google", "jsonapi", "lowercase", "problem"}
	if got := strings.Join(set.Names(), ","); got != strings.Join(want, ",") {
		t.Fatalf("profiles = %s", got)
	}
	for _, name := range want {
		p, _ := set.Get(name)
		for _, r := range append(decision.Precedence, decision.InternalError) {
			d := decision.Decision{Reason: r, RequestID: "r1", Details: map[string]string{"header": "X-Tenant-Id", "value": "v", "scope": "s"},
				RateLimit: &decision.RateLimit{Limit: 1, RetryAfter: 1, Window: "1 second", WindowSeconds: 1}}
			out := p.Render(&d, time.Unix(0, 0))
			if out.Status < 300 || out.Status > 599 || !json.Valid(out.Body) || strings.ContainsAny(string(out.Body), "\r\n") {
				t.Errorf("%s/%s: %d %q", name, r, out.Status, out.Body)
			}
			if ct := map[string]string{"problem": "application/problem+json", "jsonapi": "application/vnd.api+json"}[name]; hdr(out, "content-type") != cmp.Or(ct, "application/json") {
				t.Errorf("%s/%s: content-type %q", name, r, hdr(out, "content-type"))
			}
			challenged := out.Status == 401 || (out.Status == 403 && r == decision.ScopeMissing)
			if challenged != (hdr(out, "www-authenticate") != "") {
				t.Errorf("%s/%s: WWW-Authenticate on %d = %q", name, r, out.Status, hdr(out, "www-authenticate"))
			}
		}
	}
}

// RFC 6750 challenges: a 401 says why (error and error_description, but
// for a missing credential), a missing-scope 403 names the scopes; quoted
// values hold no quote, backslash or control character.
func TestBearerChallenges(t *testing.T) {
	set, _ := NewSet(nil)
	p, _ := set.Get("default")
	for _, c := range []struct {
		d    decision.Decision
		want string
	}{
		{decision.Decision{Reason: decision.CredentialsMissing}, `Bearer realm="api"`},
		{decision.Decision{Reason: decision.TokenExpired}, `Bearer realm="api", error="invalid_token", error_description="The bearer token has expired."`},
		{decision.Decision{Reason: decision.KeyInvalid}, `Bearer realm="api", error="invalid_token", error_description="The API key is invalid."`},
		{decision.Decision{Reason: decision.ScopeMissing, Details: map[string]string{"scope": "orders:write admin"}},
			`Bearer realm="api", error="insufficient_scope", scope="orders:write admin", error_description="The credential lacks a required scope."`},
		{decision.Decision{Reason: decision.ScopeMissing, Details: map[string]string{"scope": "a\"b\\c\r\n"}},
			`Bearer realm="api", error="insufficient_scope", scope="abc", error_description="The credential lacks a required scope."`},
		{decision.Decision{Reason: decision.TenantForbidden}, ""},
	} {
		if got := hdr(p.Render(&c.d, time.Unix(0, 0)), "www-authenticate"); got != c.want {
			t.Errorf("%s: %q, want %q", c.d.Reason, got, c.want)
		}
	}
}

func TestReflectedValuesAreEscapedAndCapped(t *testing.T) {
	set, _ := NewSet(nil)
	p, _ := set.Get("dialektai")
	evil := "x'\"\r\n\x00</script>\u2028" + strings.Repeat("A", 500)
	d := decision.Decision{Reason: decision.TenantHeaderInvalid, RequestID: "id\r\nx-injected: 1",
		Details: map[string]string{"header": "X-Tenant-Id", "value": evil}}
	out := p.Render(&d, time.Now())
	if !json.Valid(out.Body) || strings.ContainsAny(string(out.Body), "\r\n\x00") || len(out.Body) > 1024 {
		t.Fatalf("body not safe: %q", out.Body)
	}
	var b struct {
		Details []struct{ Message string } `json:"details"`
	}
	_ = json.Unmarshal(out.Body, &b)
	if m := b.Details[0].Message; !strings.HasPrefix(m, "Received: 'x'\"\r\n") || len(m) > 100 {
		t.Errorf("reflected value = %q", m)
	}
	for _, h := range out.Headers {
		for i := 0; i < len(h[1]); i++ {
			if h[1][i] < 0x20 || h[1][i] > 0x7e {
				t.Errorf("header %s has byte %#x", h[0], h[1][i])
			}
		}
	}
}

// A team describes its own contract in data: a sixth profile, no recompiling.
func TestUserDefinedProfile(t *testing.T) {
	defs, err := ParseDefinitions(json.RawMessage(`{
	  "acme": {
	    "request_id_header": "X-Correlation-Id",
	    "body": {"ok": false, "problem": {"type": "{{code}}", "title": "{{message}}", "status": "{{status}}", "correlation": "{{request_id}}", "hint": "{{hint}}"}},
	    "reasons": {
	      "credentials_missing": {"status": 401, "code": "urn:acme:auth", "message": "Log in first", "vars": {"hint": "send X-API-Key"}},
	      "tenant_forbidden": {"status": 404, "code": "urn:acme:not-found", "message": "Nothing here"},
	      "rate_limited": {"status": 429, "code": "urn:acme:slow-down", "message": "Wait {{retry_after}}s", "headers": {"X-Acme-Retry": "{{retry_after}}"}}
	    }
	  }
	}`))
	if err != nil {
		t.Fatal(err)
	}
	set, err := NewSet(defs)
	if err != nil {
		t.Fatal(err)
	}
	p, ok := set.Get("acme")
	if !ok {
		t.Fatal("acme missing")
	}
	out := p.Render(&decision.Decision{Reason: decision.CredentialsMissing, RequestID: "c-1"}, time.Now())
	if out.Status != 401 || string(out.Body) != `{"ok":false,"problem":{"type":"urn:acme:auth","title":"Log in first","status":401,"correlation":"c-1","hint":"send X-API-Key"}}` {
		t.Errorf("%d %s", out.Status, out.Body)
	}
	if hdr(out, "x-correlation-id") != "c-1" {
		t.Errorf("headers %v", out.Headers)
	}
	out = p.Render(&decision.Decision{Reason: decision.RateLimited, RateLimit: &decision.RateLimit{RetryAfter: 9}}, time.Now())
	if out.Status != 429 || hdr(out, "x-acme-retry") != "9" || hdr(out, "retry-after") != "9" || !strings.Contains(string(out.Body), `"title":"Wait 9s"`) {
		t.Errorf("429: %v %s", out.Headers, out.Body)
	}
	// Reasons the team did not describe come from "default" (the implicit parent).
	out = p.Render(&decision.Decision{Reason: decision.ScopeMissing}, time.Now())
	if out.Status != 403 || !strings.Contains(string(out.Body), `"type":"scope_missing"`) {
		t.Errorf("inherited: %d %s", out.Status, out.Body)
	}
}

func TestProfileErrorsNameTheField(t *testing.T) {
	cases := []struct{ js, want string }{
		{`{"x": {"body": {"a": "{{oops"}}}`, `profiles.x.body: unclosed placeholder`},
		{`{"x": {"body": {"a": 1}, "reasons": {"scope_missing": {"status": 200}}}}`, `profiles.x.reasons.scope_missing.status: 200 is not a deny status`},
		{`{"x": {"body": {"a": 1}, "reasons": {"nope": {"status": 400}}}}`, `profiles.x.reasons.nope: unknown reason "nope"`},
		{`{"x": {"body": {"a": 1}, "headers": {"Content-Length": "1"}}}`, `profiles.x.headers: "Content-Length" cannot be set`},
		{`{"x": {"body": {"a": 1}, "headers": {"Date": "1"}}}`, `profiles.x.headers: "Date" cannot be set`},
		{`{"x": {"body": {"a": 1}, "headers": {"TE": "1"}}}`, `profiles.x.headers: "TE" cannot be set`},
		{`{"x": {"body": {"a": 1}, "headers": {"Trailer": "1"}}}`, `profiles.x.headers: "Trailer" cannot be set`},
		{`{"x": {"body": {"a": 1}, "headers": {"grpc-status": "1"}}}`, `profiles.x.headers: "grpc-status" cannot be set`},
		{`{"x": {"body": {"a": 1}, "headers": {"Set-Cookie": "1"}}}`, `profiles.x.headers: "Set-Cookie" cannot be set`},
		{`{"x": {"extends": "ghost", "body": {"a": 1}}}`, `profiles.x.extends: unknown profile "ghost"`},
		{`{"x": {"extends": "y", "body": {"a": 1}}, "y": {"extends": "x", "body": {"a": 1}}}`, `chain too deep or circular`},
		{`{"x": {"extends": "", "body": {"a": 1}, "request_id_header": "bad header"}}`, `profiles.x.request_id_header`},
		// a placeholder no reason can fill is a typo, not a member left out
		{`{"x": {"body": {"hint": "{{hnit}}"}, "reasons": {"scope_missing": {"status": 403, "vars": {"hint": "h"}}}}}`, `profiles.x.body: unknown placeholder {{hnit}}`},
		{`{"x": {"body": {"a": 1}, "reasons": {"scope_missing": {"status": 403, "message": "need {{scpoe}}"}}}}`, `profiles.x.reasons.scope_missing.message: unknown placeholder {{scpoe}}`},
		{`{"x": {"body": {"a": 1}, "reasons": {"rate_limited": {"status": 429, "details": {"wait": "{{retry_afer}}"}}}}}`, `profiles.x.reasons.rate_limited.details: unknown placeholder {{retry_afer}}`},
		{`{"x": {"body": {"a": 1}, "headers": {"X-Wait": "{{retry_aftr}}"}}}`, `profiles.x.headers.x-wait: unknown placeholder {{retry_aftr}}`},
		{`{"x": {"body": {"a": 1}, "variables": ["Bad Name"]}}`, `profiles.x.variables: bad variable name "Bad Name"`},
	}
	for _, c := range cases {
		defs, err := ParseDefinitions(json.RawMessage(c.js))
		if err == nil {
			_, err = NewSet(defs)
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", c.js, err, c.want)
		}
	}
	// Declared, a placeholder a custom policy's details fill is accepted,
	// and so is one that a reason's vars fill in an extending profile.
	for _, js := range []string{
		`{"x": {"variables": ["field"], "body": {"field": "{{field}}"}}}`,
		`{"x": {"body": {"hint": "{{hint}}"}, "reasons": {"scope_missing": {"status": 403, "vars": {"hint": "h"}}}}}`,
		`{"x": {"extends": "problem", "reasons": {"scope_missing": {"status": 403, "vars": {"instance": "/scopes"}}}}}`,
	} {
		defs, err := ParseDefinitions(json.RawMessage(js))
		if err == nil {
			_, err = NewSet(defs)
		}
		if err != nil {
			t.Errorf("%s: %v", js, err)
		}
	}
	if _, err := ParseDefinitions(json.RawMessage(`{"x": {"bodyy": {}}}`)); err == nil || !strings.Contains(err.Error(), `profiles.x.bodyy: unknown field (known: extends,`) {
		t.Errorf("typo accepted: %v", err)
	}
}

func FuzzRender(f *testing.F) {
	f.Add("X-Tenant-Id", "invalid-id", "req-1", "orders:write")
	f.Add("\r\n", "\x00\xff", "\"", "")
	set, _ := NewSet(nil)
	f.Fuzz(func(t *testing.T, header, value, reqID, scope string) {
		for _, name := range set.Names() {
			p, _ := set.Get(name)
			for _, r := range []decision.Reason{decision.TenantHeaderInvalid, decision.ScopeMissing, decision.TenantHeaderMissing} {
				out := p.Render(&decision.Decision{Reason: r, RequestID: reqID, Details: map[string]string{"header": header, "value": value, "scope": scope}}, time.Unix(0, 0))
				if !json.Valid(out.Body) || strings.ContainsAny(string(out.Body), "\r\n") {
					t.Fatalf("%s/%s: %q", name, r, out.Body)
				}
				for _, h := range out.Headers {
					for i := 0; i < len(h[1]); i++ {
						if h[1][i] < 0x20 || h[1][i] > 0x7e {
							t.Fatalf("header %s = %q", h[0], h[1])
						}
					}
				}
			}
		}
	})
}
