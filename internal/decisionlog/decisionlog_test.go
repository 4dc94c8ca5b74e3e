package decisionlog

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/authn"
	cred "github.com/extauthz/extauthz/internal/credential"
	"github.com/extauthz/extauthz/internal/decision"
	"github.com/extauthz/extauthz/internal/facts"
	"github.com/extauthz/extauthz/internal/replay"
)

func TestModesAndFields(t *testing.T) {
	allow := &decision.Decision{Allow: true, Reason: decision.OK, ID: "d1", RequestID: "r1", Profile: "default", Route: "orders-read", KeyID: "demo-orders", Tenant: "42"}
	deny := &decision.Decision{Reason: decision.KeyInvalid, ID: "d2", RequestID: "r2", Profile: "dialektai"}
	for _, c := range []struct {
		mode        string
		rate        float64
		allow, deny bool
	}{{"all", 1, true, true}, {"all", 0, false, true}, {"deny", 1, false, true}, {"none", 1, false, false}} {
		var buf bytes.Buffer
		l := New(slog.New(slog.NewJSONHandler(&buf, nil)), c.mode, c.rate)
		l.Observe(context.Background(), allow, 1500*time.Microsecond)
		l.Observe(context.Background(), deny, time.Millisecond)
		out := buf.String()
		if strings.Contains(out, `"decision_id":"d1"`) != c.allow || strings.Contains(out, `"decision_id":"d2"`) != c.deny {
			t.Errorf("mode %s rate %v:\n%s", c.mode, c.rate, out)
		}
	}
	var buf bytes.Buffer
	New(slog.New(slog.NewJSONHandler(&buf, nil)), "all", 1).Observe(context.Background(), allow, 1500*time.Microsecond)
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]any{"outcome": "allow", "reason": "ok", "route": "orders-read", "key_id": "demo-orders", "tenant": "42", "latency_us": float64(1500), "request_id": "r1"} {
		if rec[k] != v {
			t.Errorf("%s = %v, want %v", k, rec[k], v)
		}
	}
}

func BenchmarkObserve(b *testing.B) {
	l := New(slog.New(slog.NewJSONHandler(io.Discard, nil)), "all", 1)
	d := &decision.Decision{Allow: true, Reason: decision.OK, ID: "dn1g51kso7jf-k", RequestID: "c015d7a0-f96e-4fa9-80d7-130912045a6d", Profile: "default", Route: "orders-read", KeyID: "demo-orders", Subject: "svc:orders-demo", Tenant: "42", PolicyVersion: "efe3876aa0c2"}
	b.ReportAllocs()
	for b.Loop() {
		l.Observe(context.Background(), d, 80*time.Microsecond)
	}
}

// TestHandlerLevel: decision records honour the handler's level like any
// slog record (denies and allows are Info, internal errors Warn).
func TestHandlerLevel(t *testing.T) {
	var buf bytes.Buffer
	l := New(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn})), "all", 1)
	l.Observe(context.Background(), &decision.Decision{Reason: decision.KeyInvalid, ID: "d1"}, time.Millisecond)
	l.Observe(context.Background(), &decision.Decision{Reason: decision.InternalError, ID: "d2"}, time.Millisecond)
	out := buf.String()
	if strings.Contains(out, `"d1"`) || !strings.Contains(out, `"decision_id":"d2"`) || !strings.Contains(out, `"level":"WARN"`) {
		t.Fatalf("level warn:\n%s", out)
	}
}

// benchSource is what the check path hands a FactsObserver.
func benchSource() replay.Source {
	f := &facts.Facts{Method: "GET", Path: "/v1/orders", ClientIP: netip.MustParseAddr("127.0.0.1"),
		Credential: facts.Credential{Kind: cred.APIKey, Via: cred.ViaHeader, Status: authn.Valid, Identity: &authn.Identity{Kind: "api_key", KeyID: "demo-orders"}}}
	return replay.Source{Facts: f}
}

// BenchmarkObserveFacts is a record as the server writes it since
// --decision-log-facts: through ObserveFacts, with facts off (the default)
// and on.
func BenchmarkObserveFacts(b *testing.B) {
	d := &decision.Decision{Allow: true, Reason: decision.OK, ID: "dn1g51kso7jf-k", RequestID: "c015d7a0-f96e-4fa9-80d7-130912045a6d", Profile: "default", Route: "orders-read", KeyID: "demo-orders", Subject: "svc:orders-demo", Tenant: "42", PolicyVersion: "efe3876aa0c2"}
	src := benchSource()
	for _, on := range []bool{false, true} {
		b.Run(map[bool]string{false: "off", true: "on"}[on], func(b *testing.B) {
			l := New(slog.New(slog.NewJSONHandler(io.Discard, nil)), "all", 1)
			l.Facts = on
			b.ReportAllocs()
			for b.Loop() {
				l.ObserveFacts(context.Background(), d, src, 80*time.Microsecond)
			}
		})
	}
}

// With facts off (the default) a record is what it always was; with facts
// on it carries them, and never a credential.
func TestFactsOptIn(t *testing.T) {
	d := &decision.Decision{Allow: true, Reason: decision.OK, ID: "d1", KeyID: "demo-orders"}
	for _, on := range []bool{false, true} {
		var buf bytes.Buffer
		l := New(slog.New(slog.NewJSONHandler(&buf, nil)), "all", 1)
		l.Facts = on
		l.ObserveFacts(context.Background(), d, benchSource(), time.Millisecond)
		var rec map[string]any
		if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
			t.Fatal(err)
		}
		f, has := rec["facts"].(map[string]any)
		if has != on {
			t.Fatalf("facts %v: record %s", on, buf.String())
		}
		if on && (f["method"] != "GET" || f["credential"].(map[string]any)["key_id"] != "demo-orders") {
			t.Errorf("facts %v", f)
		}
	}
}
