package check

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/decision"
	"github.com/extauthz/extauthz/internal/decisionlog"
	"github.com/extauthz/extauthz/internal/engine"
	"github.com/extauthz/extauthz/internal/policy"
	"github.com/extauthz/extauthz/internal/replay"
	"github.com/extauthz/extauthz/policies"
)

// replayCase is a request and the reason the shipped policy gives it.
type replayCase struct {
	name, method, path string
	headers, ce        map[string]string
	reason             string
}

func replayCases() []replayCase {
	key := func(k string, extra ...string) map[string]string {
		h := map[string]string{"x-api-key": k, "x-tenant-id": "42"}
		for i := 0; i+1 < len(extra); i += 2 {
			h[extra[i]] = extra[i+1]
		}
		return h
	}
	bearer := func(tok string, extra ...string) map[string]string {
		h := map[string]string{"authorization": "Bearer " + tok}
		for i := 0; i+1 < len(extra); i += 2 {
			h[extra[i]] = extra[i+1]
		}
		return h
	}
	return []replayCase{
		{"allow api key", "GET", "/v1/orders", key(demoKey), nil, "ok"},
		{"allow read-only key, HEAD", "HEAD", "/v1/orders", key(readonlyKey), nil, "ok"},
		{"allow jwt", "GET", "/v1/orders", bearer(demoJWT, "x-tenant-id", "42"), nil, "ok"},
		{"allow minted jwt with scopes", "GET", "/v1/admin/users", bearer(mintJWT("user:admin", "42", "admin orders:read")), nil, "ok"},
		{"allow bearer api key, two tenant dimensions", "GET", "/v1/posts", bearer(aidellyKey, "x-workspace-id", "ws_1", "x-brand-id", "br_1"), nil, "ok"},
		{"public, anonymous", "GET", "/healthz", nil, nil, "ok"},
		{"path invalid", "GET", "/v1/orders/../admin", key(demoKey), nil, "path_invalid"},
		{"route not found", "GET", "/v2/unknown", key(demoKey), nil, "route_not_found"},
		{"credentials missing", "GET", "/v1/orders", map[string]string{"x-tenant-id": "42"}, nil, "credentials_missing"},
		{"credentials malformed", "GET", "/v1/orders", key(demoKey + "," + readonlyKey), nil, "credentials_malformed"},
		{"wrong scheme", "GET", "/v1/orders", map[string]string{"authorization": "Basic dTpw", "x-tenant-id": "42"}, nil, "wrong_scheme"},
		{"key invalid", "GET", "/v1/orders", key("xa_not_a_key"), nil, "key_invalid"},
		{"key expired", "GET", "/v1/orders", key(expiredKey), nil, "key_expired"},
		{"key revoked", "GET", "/v1/orders", key(revokedKey), nil, "key_revoked"},
		{"key suspended", "GET", "/v1/orders", key(suspendedKey), nil, "key_suspended"},
		{"token invalid", "GET", "/v1/orders", bearer("a.b.c", "x-tenant-id", "42"), nil, "token_invalid"},
		{"token expired", "GET", "/v1/orders", bearer(expiredJWT, "x-tenant-id", "42"), nil, "token_expired"},
		{"browser api key", "GET", "/v1/calls", map[string]string{"x-api-key": demoKey, "origin": "https://app.example.com"}, nil, "browser_api_key"},
		{"wrong auth mode (jwt where bearer keys)", "GET", "/v1/posts", bearer(demoJWT, "x-workspace-id", "ws_1"), nil, "wrong_auth_mode"},
		{"wrong auth mode (key on jwt route)", "GET", "/v1/admin/users", key(tenant7Key), nil, "wrong_auth_mode"},
		{"tenant header missing", "GET", "/v1/orders", map[string]string{"x-api-key": demoKey}, nil, "tenant_header_missing"},
		{"tenant header invalid", "GET", "/v1/orders", key(demoKey, "x-tenant-id", "abc"), nil, "tenant_header_invalid"},
		{"tenant forbidden", "GET", "/v1/orders", key(demoKey, "x-tenant-id", "43"), nil, "tenant_forbidden"},
		{"tenant forbidden, jwt", "GET", "/v1/orders", bearer(demoJWT, "x-tenant-id", "7"), nil, "tenant_forbidden"},
		{"ip not allowed", "GET", "/v1/orders", key(tenant7Key, "x-tenant-id", "7"), nil, "ip_not_allowed"},
		{"scope missing", "POST", "/v1/orders", key(readonlyKey, "idempotency-key", "k1"), nil, "scope_missing"},
		{"idempotency key missing", "POST", "/v1/orders", key(demoKey), nil, "idempotency_key_missing"},
		{"scope missing in shadow (context extension)", "POST", "/v1/orders", key(readonlyKey, "idempotency-key", "k1"), map[string]string{"shadow": "scope_missing", "profile": "dialektai"}, "scope_missing"},
		{"unknown route named by Envoy", "GET", "/v1/orders", key(demoKey), map[string]string{"route": "no-such-route"}, "internal_error"},
	}
}

// recordAll answers every case with a server whose decision log carries
// facts, and returns the log.
func recordAll(t *testing.T, eng *engine.Engine, cases []replayCase) []byte {
	t.Helper()
	var buf bytes.Buffer
	s := newServer(t, eng)
	l := decisionlog.New(slog.New(slog.NewJSONHandler(&buf, nil)), "all", 1)
	l.Facts = true
	s.Observers = []Observer{l}
	for _, c := range cases {
		r := req(c.method, c.path, c.headers)
		r.Attributes.ContextExtensions = c.ce
		if reason, _, _ := decide(t, s, r); reason != c.reason && (c.ce["shadow"] == "" || reason != "ok") {
			t.Fatalf("%s: served %s, want %s", c.name, reason, c.reason)
		}
	}
	return buf.Bytes()
}

func readRecords(t *testing.T, log []byte) []replay.Record {
	t.Helper()
	var recs []replay.Record
	if err := replay.Read(bytes.NewReader(log), func(r replay.Record) { recs = append(recs, r) },
		func(line int, err error) { t.Errorf("line %d: %v", line, err) }); err != nil {
		t.Fatal(err)
	}
	return recs
}

// A record the real logger wrote replays, on the policy that decided it,
// to the reason it recorded: allows with a key and a JWT and every deny
// that depends on the facts.
func TestReplayReproducesTheRecordedDecision(t *testing.T) {
	eng := demoEngine(t)
	cases := replayCases()
	recs := readRecords(t, recordAll(t, eng, cases))
	if len(recs) != len(cases) {
		t.Fatalf("%d records for %d checks", len(recs), len(cases))
	}
	s := newServer(t, eng)
	for i, rec := range recs {
		c := cases[i]
		if rec.Facts == nil {
			t.Fatalf("%s: no facts in the record", c.name)
		}
		if string(rec.Reason) != c.reason {
			t.Errorf("%s: recorded %s, want %s", c.name, rec.Reason, c.reason)
		}
		d, err := s.Replay(context.Background(), &rec)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if got := Verdict(d); string(got) != c.reason {
			t.Errorf("%s: replayed %s, recorded %s", c.name, got, rec.Reason)
		}
	}
}

// A record with facts holds no credential: no API key, no token, no part of
// a token's signature.
func TestFactsRecordsHoldNoCredential(t *testing.T) {
	log := string(recordAll(t, demoEngine(t), replayCases()))
	if !strings.Contains(log, `"facts":{`) {
		t.Fatalf("no facts recorded:\n%s", log)
	}
	for _, secret := range []string{demoKey, readonlyKey, expiredKey, revokedKey, suspendedKey, tenant7Key, aidellyKey, "xa_not_a_key", demoJWT, expiredJWT, "a.b.c", "dTpw"} {
		if strings.Contains(log, secret) {
			t.Errorf("the decision log holds a credential %.12s…", secret)
		}
	}
	for _, part := range strings.Split(demoJWT, ".") {
		if len(part) > 8 && strings.Contains(log, part) {
			t.Errorf("the decision log holds a part of the JWT %.12s…", part)
		}
	}
}

// editedEngine builds the shipped policy with its data edited.
func editedEngine(t *testing.T, section string, edit func(root map[string]any)) *engine.Engine {
	t.Helper()
	src, err := policy.LoadFS(policies.FS, "policies")
	if err != nil {
		t.Fatal(err)
	}
	root := src.Data["extauthz"].(map[string]any)
	if sec, ok := root[section].(*policy.Section); ok { // a raw section: decode to edit
		raw, err := sec.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		var x any
		if err := json.Unmarshal(raw, &x); err != nil {
			t.Fatal(err)
		}
		root[section] = x
	}
	edit(root)
	e, err := engine.Build(context.Background(), src, engine.Options{Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// replayOn replays every record on eng: the replayed verdict by case name,
// or "not replayable: why".
func replayOn(t *testing.T, eng *engine.Engine, recs []replay.Record, cases []replayCase) map[string]string {
	t.Helper()
	s := newServer(t, eng)
	out := map[string]string{}
	for i, rec := range recs {
		d, err := s.Replay(context.Background(), &rec)
		var nr *replay.NotReplayable
		switch {
		case errors.As(err, &nr):
			out[cases[i].name] = "not replayable: " + nr.Why
		case err != nil:
			t.Fatalf("%s: %v", cases[i].name, err)
		default:
			out[cases[i].name] = string(Verdict(d))
		}
	}
	return out
}

// Against a changed policy, exactly the records whose decision the change
// touches differ, and a record the changed policy cannot decide from its
// facts says why.
func TestReplayOnAChangedPolicy(t *testing.T) {
	cases := replayCases()
	recs := readRecords(t, recordAll(t, demoEngine(t), cases))
	same := func(got map[string]string, want map[string]string) {
		t.Helper()
		for _, c := range cases {
			w, changed := want[c.name]
			if !changed {
				w = c.reason
			}
			if got[c.name] != w {
				t.Errorf("%s: replayed %q, want %q", c.name, got[c.name], w)
			}
		}
	}

	// A rule change: HEAD with the read-only key is refused.
	same(replayOn(t, variantEngine(t, policyVariants[2]), recs, cases), map[string]string{"allow read-only key, HEAD": "key_revoked"})

	// A data change: the read-only key may now write, the tenant-7 key is
	// gone, the demo key is suspended. The API keys differ, so a key no
	// record matched cannot be decided; the JWT issuers did not change.
	changed := editedEngine(t, "api_keys", func(root map[string]any) {
		keys := root["api_keys"].(map[string]any)
		for h, v := range keys {
			k := v.(map[string]any)
			switch k["id"] {
			case "demo-readonly":
				k["scopes"] = []any{"orders:read", "orders:write"}
			case "demo-tenant7":
				delete(keys, h)
			case "demo-orders":
				k["status"] = "suspended"
			}
		}
	})
	notFound := "not replayable: the key id is not in this policy's api_keys"
	same(replayOn(t, changed, recs, cases), map[string]string{
		"allow api key":                               "key_suspended",
		"path invalid":                                "path_invalid", // decided before the credential
		"route not found":                             "route_not_found",
		"credentials malformed":                       "credentials_malformed",
		"browser api key":                             "key_suspended",
		"tenant header missing":                       "key_suspended",
		"tenant header invalid":                       "key_suspended",
		"tenant forbidden":                            "key_suspended",
		"idempotency key missing":                     "key_suspended",
		"unknown route named by Envoy":                "internal_error",
		"key invalid":                                 "not replayable: an API key no record matched, and this policy's api_keys differ from the recording's",
		"wrong auth mode (key on jwt route)":          notFound,
		"ip not allowed":                              notFound,
		"scope missing":                               "ok",
		"scope missing in shadow (context extension)": "ok",
	})

	// A changed issuer list: bearer JWTs cannot be verified again.
	noJWT := editedEngine(t, "jwt", func(root map[string]any) {
		root["jwt"].(map[string]any)["cache_entries"] = 100
	})
	got := replayOn(t, noJWT, recs, cases)
	for _, name := range []string{"allow jwt", "token invalid", "token expired", "tenant forbidden, jwt"} {
		if !strings.HasPrefix(got[name], "not replayable: a bearer JWT") {
			t.Errorf("%s on changed jwt issuers: %q", name, got[name])
		}
	}
	if got["allow api key"] != "ok" {
		t.Errorf("an API-key record on changed jwt issuers: %q", got["allow api key"])
	}
}

// Records the logger wrote without facts, and ones with facts withheld, are
// not replayable and say why.
func TestReplayRefusesWhatItCannotDecide(t *testing.T) {
	eng := demoEngine(t)
	s := newServer(t, eng)
	long := "/v1/orders/" + strings.Repeat("a", replay.MaxPath)
	var buf bytes.Buffer
	srv := newServer(t, eng)
	l := decisionlog.New(slog.New(slog.NewJSONHandler(&buf, nil)), "all", 1)
	srv.Observers = []Observer{l}
	decide(t, srv, req("GET", "/v1/orders", map[string]string{"x-api-key": demoKey, "x-tenant-id": "42"}))
	l.Facts = true
	decide(t, srv, req("GET", long, map[string]string{"x-api-key": demoKey, "x-tenant-id": "42"}))
	decide(t, srv, req("GET", "/v1/orders", map[string]string{"x-api-key": demoKey, "x-tenant-id": strings.Repeat("4", replay.MaxValue+1)}))
	recs := readRecords(t, buf.Bytes())
	if len(recs) != 3 {
		t.Fatalf("%d records", len(recs))
	}
	if strings.Contains(buf.String(), strings.Repeat("a", replay.MaxPath)) || strings.Contains(buf.String(), strings.Repeat("4", replay.MaxValue+1)) {
		t.Error("a value over its bound reached the log")
	}
	for i, want := range []string{"no facts", "withheld: path", "withheld: tenant_headers.x-tenant-id"} {
		_, err := s.Replay(context.Background(), &recs[i])
		var nr *replay.NotReplayable
		if !errors.As(err, &nr) || !strings.Contains(nr.Why+": "+nr.Detail, strings.TrimPrefix(strings.TrimPrefix(want, "withheld: "), "")) {
			t.Errorf("record %d: %v, want %s", i, err, want)
		}
	}
	// A policy that reads the request itself cannot be replayed on facts.
	impure := variantEngine(t, policyVariants[7])
	recs[1].Facts.Withheld = nil
	recs[1].Facts.Path = "/v1/orders"
	if _, err := newServer(t, impure).Replay(context.Background(), &recs[1]); err == nil || !strings.Contains(err.Error(), "not memoizable") {
		t.Errorf("impure policy: %v", err)
	}
	// Quotas are not replayed: a rate-limited record counts as ok.
	if d, err := s.Replay(context.Background(), &replay.Record{Reason: decision.OK, Facts: recs[1].Facts}); err != nil || d.Reason != decision.OK {
		t.Errorf("replay: %v %v", d, err)
	}
}

// eventSink is a decision-log service keeping each upload's body (a JSON
// array of events, gunzipped) as one line.
type eventSink struct {
	mu     sync.Mutex
	lines  [][]byte
	events int
}

func (s *eventSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	zr, err := gzip.NewReader(r.Body)
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	b, _ := io.ReadAll(zr)
	var evs []json.RawMessage
	if json.Unmarshal(b, &evs) != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	s.lines, s.events = append(s.lines, b), s.events+len(evs)
	s.mu.Unlock()
}

// The OPA upload carries the same facts: the service's bodies, one per
// line, replay to the recorded reasons.
func TestReplayUploadedEvents(t *testing.T) {
	sink := &eventSink{}
	hs := httptest.NewServer(sink)
	defer hs.Close()
	u, err := decisionlog.NewUploader(decisionlog.UploaderOptions{Facts: true, Config: fmt.Appendf(nil, `
services: {logsvc: {url: %q}}
decision_logs: {service: logsvc, reporting: {min_delay_seconds: 1, max_delay_seconds: 1}}
`, hs.URL)})
	if err != nil {
		t.Fatal(err)
	}
	if err := u.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	eng := demoEngine(t)
	s := newServer(t, eng)
	s.Observers = []Observer{u}
	cases := replayCases()
	for _, c := range cases {
		r := req(c.method, c.path, c.headers)
		r.Attributes.ContextExtensions = c.ce
		decide(t, s, r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	u.Stop(ctx) // hands the queue to the plugin and uploads what it holds
	cancel()
	sink.mu.Lock()
	body := bytes.Join(sink.lines, []byte("\n"))
	n := sink.events
	sink.mu.Unlock()
	if n != len(cases) {
		t.Fatalf("%d events uploaded of %d", n, len(cases))
	}
	for _, secret := range []string{demoKey, readonlyKey, demoJWT, "xa_not_a_key"} {
		if bytes.Contains(body, []byte(secret)) {
			t.Errorf("an uploaded event holds a credential %.12s…", secret)
		}
	}
	want := map[string]int{} // reasons made by the cases, less those replayed
	for _, c := range cases {
		want[c.reason]++
	}
	replayer := newServer(t, eng)
	for _, rec := range readRecords(t, body) {
		d, err := replayer.Replay(context.Background(), &rec)
		if err != nil {
			t.Errorf("%s: %v", rec.DecisionID, err)
			continue
		}
		if Verdict(d) != rec.Reason {
			t.Errorf("%s %s %s: recorded %s, replayed %s", rec.DecisionID, rec.Facts.Method, rec.Facts.Path, rec.Reason, Verdict(d))
		}
		want[string(rec.Reason)]--
	}
	for r, n := range want {
		if n != 0 {
			t.Errorf("reason %s: %d more made than replayed", r, n)
		}
	}
}
