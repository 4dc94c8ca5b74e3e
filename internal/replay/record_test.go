package replay

import (
	"strings"
	"testing"
)

const goodFacts = `{"v":1,"method":"GET","path":"/v1/orders","credential":{"kind":"api_key","via":"header","status":"valid","key_id":"demo-orders"},"tenant_headers":{"x-tenant-id":"42"},"client_ip":"127.0.0.1","browser":false,"idempotency_key":false}`

func read(t *testing.T, in string) (recs []Record, bad []string) {
	t.Helper()
	err := Read(strings.NewReader(in), func(r Record) { recs = append(recs, r) }, func(line int, err error) {
		bad = append(bad, err.Error())
	})
	if err != nil {
		t.Fatal(err)
	}
	return recs, bad
}

// Both forms are read: the sidecar's slog line and OPA's event (alone or an
// upload's array); the recorded verdict counts a shadowed deny as its
// reason and a quota denial as ok; other log lines are skipped.
func TestReadForms(t *testing.T) {
	in := strings.Join([]string{
		`{"time":"2026-12-04T10:00:00Z","level":"INFO","msg":"decision","decision_id":"d1","request_id":"r1","outcome":"allow","reason":"ok","shadow":{"reason":"scope_missing","status":403,"body":"{}"},"facts":` + goodFacts + `}`,
		`{"time":"2026-12-04T10:00:01Z","level":"INFO","msg":"policy loaded","version":"abc"}`,
		`{"time":"2026-12-04T10:00:02Z","level":"INFO","msg":"decision","decision_id":"d2","outcome":"deny","reason":"rate_limited"}`,
		`[{"decision_id":"d3","path":"extauthz/decision","timestamp":"2026-12-04T10:00:03Z","input":{"request_id":"r3","facts":` + goodFacts + `},"result":{"allow":false,"reason":"key_revoked"},"bundles":{"extauthz":{"revision":"v9"}}},` +
			`{"decision_id":"d4","path":"extauthz/decision","timestamp":"2026-12-04T10:00:04Z","input":{"facts":{"v":1}},"result":{"allow":true,"reason":"ok"},"erased":["/input/facts/client_ip"]}]`,
		``,
	}, "\n")
	recs, bad := read(t, in)
	if len(bad) != 1 || !strings.Contains(bad[0], "event 1: facts.method: missing") {
		t.Errorf("bad = %q", bad)
	}
	if len(recs) != 3 {
		t.Fatalf("records %+v", recs)
	}
	if recs[0].Reason != "scope_missing" || recs[0].Facts == nil || recs[0].Facts.Credential.KeyID != "demo-orders" || recs[0].Line != 1 || recs[0].Time.Second() != 0 {
		t.Errorf("slog record %+v", recs[0])
	}
	if recs[1].Reason != "ok" || recs[1].Facts != nil || recs[1].Line != 3 {
		t.Errorf("rate-limited record %+v", recs[1])
	}
	if recs[2].Reason != "key_revoked" || recs[2].PolicyVersion != "v9" || recs[2].RequestID != "r3" || recs[2].Facts == nil || recs[2].Line != 4 {
		t.Errorf("event %+v", recs[2])
	}
}

// Malformed, truncated and hostile lines are reported with their line
// number; none stops the reading or panics, and nothing they hold is
// echoed unbounded.
func TestReadHostileLines(t *testing.T) {
	withFacts := func(f string) string {
		return `{"msg":"decision","reason":"ok","facts":` + f + `}`
	}
	hostile := strings.Repeat("A", 10000) + `\u001b[2J`
	lines := []struct{ line, want string }{
		{`{"msg":"decision","reason":"ok","facts":{"v":1,"meth`, "not a JSON object"},
		{`not json at all`, "not a JSON object"},
		{`["x"]`, "event 0: not a JSON object"},
		{`{"reason":"ok"}`, "not a decision record"},
		{`{"msg":"decision","reason":"` + hostile + `"}`, "is not one of the sidecar's"},
		{`{"msg":"decision","reason":"ok","facts":[]}`, "facts:"},
		{withFacts(strings.Replace(goodFacts, `"v":1`, `"v":2`, 1)), "facts.v: 2"},
		{withFacts(strings.Replace(goodFacts, `"GET"`, `"`+hostile+`"`, 1)), "facts.method: over"},
		{withFacts(strings.Replace(goodFacts, `"127.0.0.1"`, `"`+hostile+`"`, 1)), "facts.client_ip"},
		{withFacts(strings.Replace(goodFacts, `"valid"`, `"sort of"`, 1)), "facts.credential.status"},
		{withFacts(strings.Replace(goodFacts, `"api_key"`, `"password"`, 1)), "facts.credential.kind"},
		{withFacts(strings.Replace(goodFacts, `"x-tenant-id"`, `"X-Tenant-Id"`, 1)), "facts.tenant_headers"},
		{withFacts(strings.Replace(goodFacts, `"browser":false`, `"browser":false,"api_key":"xa_secret"`, 1)), "unknown field"},
		{withFacts(strings.Replace(goodFacts, `"client_ip":"127.0.0.1",`, ``, 1)), "facts.client_ip: missing"},
		{withFacts(strings.Replace(goodFacts, `"v":1,`, `"v":1,"context":{"evil":"x"},`, 1)), "facts.context"},
		{`{"msg":"decision","reason":"ok","facts":` + strings.Repeat("[", 20000) + `}`, "not a JSON object"},
		{`{"path":"extauthz/decision","decision_id":"x"}`, "no result"},
		{"{\"msg\":\"decision\",\"reason\":\"ok\",\"request_id\":\"\xff\xfe\"}", ""}, // invalid UTF-8 becomes U+FFFD: read, printed clipped
	}
	var in strings.Builder
	for _, l := range lines {
		in.WriteString(l.line + "\n")
	}
	recs, bad := read(t, in.String())
	wantBad := 0
	for _, l := range lines {
		if l.want != "" {
			wantBad++
		}
	}
	if len(bad) != wantBad || len(recs) != len(lines)-wantBad {
		t.Fatalf("%d bad, %d records; want %d bad:\n%s", len(bad), len(recs), wantBad, strings.Join(bad, "\n"))
	}
	i := 0
	for _, l := range lines {
		if l.want == "" {
			continue
		}
		if !strings.Contains(bad[i], l.want) {
			t.Errorf("line %.60q: %q, want %q", l.line, bad[i], l.want)
		}
		if len(bad[i]) > 400 || strings.Contains(bad[i], "\x1b") {
			t.Errorf("the report echoes the line: %.100q", bad[i])
		}
		i++
	}
	if recs[0].RequestID != "??" {
		t.Errorf("request id %q", recs[0].RequestID)
	}
}

// A line over MaxLine is reported and skipped; the next line is read.
func TestReadOverlongLine(t *testing.T) {
	in := `{"msg":"decision","reason":"` + strings.Repeat("x", MaxLine) + `"}` + "\n" + `{"msg":"decision","reason":"ok"}` + "\n"
	recs, bad := read(t, in)
	if len(bad) != 1 || !strings.Contains(bad[0], "line over") || len(recs) != 1 {
		t.Fatalf("bad %q, records %d", bad, len(recs))
	}
}

func FuzzRead(f *testing.F) {
	f.Add(`{"msg":"decision","reason":"ok","facts":` + goodFacts + `}`)
	f.Add(`[{"path":"extauthz/decision","result":{"reason":"ok"},"input":{"facts":` + goodFacts + `}}]`)
	f.Fuzz(func(t *testing.T, s string) {
		_ = Read(strings.NewReader(s), func(r Record) {
			if r.Facts != nil {
				if err := r.Facts.Check(); err != nil {
					t.Fatalf("a record that does not check: %v", err)
				}
			}
		}, func(int, error) {})
	})
}
