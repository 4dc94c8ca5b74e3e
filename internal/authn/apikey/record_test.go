package apikey

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// ParseRecord takes and refuses exactly the records Parse does, and a key
// looked up through either gives the same status and the same identity as
// the policy sees it, at every time.
func TestParseRecordMatchesParse(t *testing.T) {
	records := []string{
		`{"id":"k1","subject":"svc-a","tenants":["42"],"scopes":["orders:read"],"expires_at":"2027-01-01T00:00:00Z","plan":"free"}`,
		`{"id":"k2","expires_at":"2026-11-22T12:00:00Z"}`,
		`{"id":"k3","status":"revoked","tenants":[42, 7]}`,
		`{"id":"k4","status":"suspended","allowed_cidrs":["10.0.0.0/8","2001:db8::/32"]}`,
		`{"id":"k5","tenants":{"workspace":["w1"],"brand":["b1",7]}}`,
		`{"id":"k6","status":"active","scopes":[],"tenants":[]}`,
		`{"id":"k7","tenants":{}}`,
		`{"id":"k8","subject":"k8"}`,
		// refused
		`{"id":""}`,
		`{"subject":"x"}`,
		`{"id":"b1","status":"paused"}`,
		`{"id":"b2","expires_at":"tomorrow"}`,
		`{"id":"b3","allowed_cidrs":["10.0.0.0/33"]}`,
		`{"id":"b4","tenants":"42"}`,
		`{"id":"b5","extra":1}`,
		`{"id":"b6","scopes":"orders:read"}`,
		`{"id":"b8","tenants":{"tenant":[100000000000000001, 2.5]}}`,
		`{"id":"b9","scopes":["x admin"]}`,
		`{"id":"b10","subject":"a\nb"}`,
		`{"id":"b11","tenants":["t\u0000"]}`,
		`{"id":"b12","status":"revoked","status":"active"}`,
		`{"id":"b13","subject":"a` + "\xff" + `"}`,
		`{"id":"b7"} trailing`,
		`[]`,
		`null`,
		``,
	}
	times := []time.Time{
		time.Date(2026, 11, 22, 11, 59, 59, 0, time.UTC),
		time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC),
		time.Date(2028, 1, 1, 0, 0, 0, 0, time.UTC),
	}
	for _, raw := range records {
		key := "key-" + raw
		whole, werr := Parse(json.RawMessage(`{"` + Hash(key) + `": ` + raw + `}`))
		e, rerr := ParseRecord([]byte(raw))
		if (werr == nil) != (rerr == nil) {
			t.Errorf("%s: Parse error %v, ParseRecord error %v", raw, werr, rerr)
			continue
		}
		if rerr != nil {
			if e != nil {
				t.Errorf("%s: an entry with an error", raw)
			}
			continue
		}
		if e.Identity() != e.At(times[0]).Identity {
			t.Errorf("%s: the entry's identity is not one pointer", raw)
		}
		for _, now := range times {
			w, g := whole.Lookup(key, now), e.At(now)
			if w.Status != g.Status || w.Identity.Key() != g.Identity.Key() {
				t.Errorf("%s at %s: Parse gives %s %s, ParseRecord %s %s", raw, now, w.Status, w.Identity.Key(), g.Status, g.Identity.Key())
			}
			if w.Identity.KeyID != g.Identity.KeyID || w.Identity.Subject != g.Identity.Subject || w.Identity.Plan != g.Identity.Plan {
				t.Errorf("%s: identities differ: %+v vs %+v", raw, w.Identity, g.Identity)
			}
		}
	}
}

// An error names the field, never echoes more of the record than the bad
// value.
func TestParseRecordNamesFields(t *testing.T) {
	_, err := ParseRecord([]byte(`{"id":"","status":"paused","expires_at":"x","allowed_cidrs":["1.2.3.4/99"]}`))
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{"id: required", "status:", "expires_at:", "allowed_cidrs[0]:"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
}
