package profile

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/decision"
)

// finish is what a server sends for d from a prepared deny.
func finish(pr *Prepared, d *decision.Decision, now time.Time) Response {
	hs := slices.Clone(pr.Headers)
	if pr.ReqID >= 0 {
		hs[pr.ReqID][1] = pr.RequestIDHeader(d)
	}
	return Response{Status: pr.Status, Headers: hs, Body: pr.AppendBody(nil, d, now)}
}

// samePrepared fails unless finishing pr for d at now gives Render's bytes.
func samePrepared(t *testing.T, p *Profile, pr *Prepared, d *decision.Decision, now time.Time) {
	t.Helper()
	if !pr.Fits(d) {
		t.Fatalf("%s/%s: prepared deny does not fit %+v", p.Name, d.Reason, d)
	}
	want, got := p.Render(d, now), finish(pr, d, now)
	if got.Status != want.Status || string(got.Body) != string(want.Body) || !slices.Equal(got.Headers, want.Headers) {
		t.Fatalf("%s/%s.%s:\nprepared %d %q %q\nrender   %d %q %q", p.Name, d.Reason, d.Variant,
			got.Status, got.Headers, got.Body, want.Status, want.Headers, want.Body)
	}
}

// Every built-in profile's denies, prepared once and finished for other
// requests, give what Render gives for those requests.
func TestPreparedMatchesRender(t *testing.T) {
	set, err := NewSet(nil)
	if err != nil {
		t.Fatal(err)
	}
	details := map[string]string{"header": "X-Tenant-Id", "value": "v\"\\\x01\xff", "scope": "orders:write", "required_scope": "orders:write"}
	now := time.Date(2026, 11, 30, 3, 4, 5, 6, time.FixedZone("x", 3600))
	prepared := 0
	for _, name := range set.Names() {
		p, _ := set.Get(name)
		for key := range p.reasons {
			reason, variant, _ := strings.Cut(key, ".")
			for _, ids := range [][2]string{{"req-1", "d-1"}, {"", "d-1"}, {"req-1", ""}} {
				base := decision.Decision{Reason: decision.Reason(reason), Variant: variant, RequestID: ids[0], ID: ids[1], Details: details}
				pr := p.Prepare(&base)
				if pr == nil {
					continue
				}
				prepared++
				for _, next := range [][2]string{{"req-2", "d-2"}, {`"quoted\" \u2028` + "\u2028\x00\n\xc3", "d\\3"}, {strings.Repeat("r", 300), "d-4"}} {
					d := base
					if d.RequestID != "" {
						d.RequestID = next[0]
					}
					if d.ID != "" {
						d.ID = next[1]
					}
					samePrepared(t, p, pr, &d, now.Add(time.Duration(len(next[0]))*time.Hour))
					if body := pr.AppendBody(nil, &d, now); !json.Valid(body) {
						t.Fatalf("%s/%s: invalid JSON %q", name, key, body)
					}
				}
			}
		}
	}
	if prepared < 100 {
		t.Fatalf("only %d decisions could be prepared", prepared)
	}
}

// A deny is prepared only when it can be finished exactly; otherwise the
// server renders it per request.
func TestPrepareDeclines(t *testing.T) {
	set, err := NewSet(map[string]Definition{"team": {
		Headers: map[string]string{"x-trace": "{{request_id}}"},
		Reasons: map[string]ReasonDef{"scope_missing": {Status: 403, Code: "no", Message: "denied {{request_id}}"}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	team, _ := set.Get("team")
	def, _ := set.Get("default")
	for _, c := range []struct {
		name string
		p    *Profile
		d    decision.Decision
	}{
		{"rate limited", def, decision.Decision{Reason: decision.RateLimited, RequestID: "r", RateLimit: &decision.RateLimit{Limit: 1, RetryAfter: 1}}},
		{"request id in a profile header", team, decision.Decision{Reason: decision.TenantForbidden, RequestID: "r"}},
		{"request id in the message", team, decision.Decision{Reason: decision.ScopeMissing, RequestID: "r"}},
	} {
		if pr := c.p.Prepare(&c.d); pr != nil {
			t.Errorf("%s: prepared", c.name)
		}
	}
	pr := def.Prepare(&decision.Decision{Reason: decision.TenantForbidden, RequestID: "r", ID: "d"})
	for _, d := range []decision.Decision{
		{Reason: decision.TenantForbidden, ID: "d"},
		{Reason: decision.TenantForbidden, RequestID: "r"},
		{Reason: decision.TenantForbidden, RequestID: "r", ID: "d", RateLimit: &decision.RateLimit{Limit: 1}},
	} {
		if pr.Fits(&d) {
			t.Errorf("prepared with both ids fits %+v", d)
		}
	}
}

func FuzzPrepared(f *testing.F) {
	f.Add("req-1", "d-1", "v", int64(0))
	f.Add("\"\\\u2028\xff", "", "\x00", int64(-1e12))
	set, _ := NewSet(nil)
	f.Fuzz(func(t *testing.T, reqID, id, value string, unix int64) {
		now := time.Unix(unix, 0)
		for _, name := range set.Names() {
			p, _ := set.Get(name)
			for _, r := range []decision.Reason{decision.TenantForbidden, decision.ScopeMissing, decision.CredentialsMissing, decision.TenantHeaderInvalid} {
				d := decision.Decision{Reason: r, RequestID: reqID, ID: id, Details: map[string]string{"header": "x-tenant-id", "value": value, "scope": value}}
				if pr := p.Prepare(&decision.Decision{Reason: r, RequestID: "x", ID: "y", Details: d.Details}); pr.Fits(&d) {
					samePrepared(t, p, pr, &d, now)
				}
			}
		}
	})
}
