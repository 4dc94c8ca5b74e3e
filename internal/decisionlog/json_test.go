package decisionlog

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/decision"
)

// pieces of generated strings: what JSON must escape, what slog escapes
// beyond it, what it must leave alone, invalid UTF-8.
var pieces = []string{"", "a", "orders-read", `"`, `\`, "\n", "\r", "\t", "\x00", "\x1f", "\x7f", "<", ">", "&",
	"\u2028", "\u2029", "é", "日本", "\U0001F600", "\xff", "\xe2\x82", "/", "'", " ", "\ufffd", "u:42"}

func genString(r *rand.Rand) string {
	var b strings.Builder
	for range r.IntN(6) {
		b.WriteString(pieces[r.IntN(len(pieces))])
	}
	return b.String()
}

func genDecision(r *rand.Rand) *decision.Decision {
	reasons := append([]decision.Reason{decision.OK, decision.InternalError}, decision.Precedence...)
	d := &decision.Decision{Allow: r.IntN(2) == 0, Reason: reasons[r.IntN(len(reasons))],
		ID: genString(r), RequestID: genString(r), Profile: genString(r), Route: genString(r), PolicyVersion: genString(r)}
	opt := func() string {
		if r.IntN(2) == 0 {
			return ""
		}
		return genString(r)
	}
	d.Variant, d.KeyID, d.Subject, d.Tenant = opt(), opt(), opt(), opt()
	if r.IntN(3) == 0 {
		d.Shadow = &decision.Shadow{Reason: reasons[r.IntN(len(reasons))], Status: r.IntN(600), Body: genString(r)}
	}
	return d
}

// stripTime cuts the time off a record ({"time":"…", is the first field of
// both encodings), checking it is RFC 3339.
func stripTime(t *testing.T, line string) string {
	t.Helper()
	rest, ok := strings.CutPrefix(line, `{"time":"`)
	i := strings.Index(rest, `",`)
	if !ok || i < 0 {
		t.Fatalf("no time first: %q", line)
	}
	if _, err := time.Parse(time.RFC3339Nano, rest[:i]); err != nil {
		t.Fatalf("time %q: %v", rest[:i], err)
	}
	return rest[i:]
}

// TestDirectEqualsSlog: a decision record written directly (JSONHandler) is
// the record slog's JSON handler writes, byte for byte but the time, for
// generated decisions holding every character JSON or slog escapes, with
// and without facts, at both levels.
func TestDirectEqualsSlog(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 3000 {
		d := genDecision(r)
		var viaSlog, direct bytes.Buffer
		a := New(slog.New(slog.NewJSONHandler(&viaSlog, nil)), "all", 1)
		b := New(slog.New(NewJSONHandler(&direct, nil)), "all", 1)
		a.Facts, b.Facts = i%2 == 0, i%2 == 0
		src := benchSource()
		src.Facts.Path = "/v1/" + genString(r)
		elapsed := time.Duration(r.Int64N(int64(time.Second)))
		a.ObserveFacts(context.Background(), d, src, elapsed)
		b.ObserveFacts(context.Background(), d, src, elapsed)
		if direct.Len() == 0 || strings.Count(direct.String(), "\n") != 1 {
			t.Fatalf("direct record %q", direct.String())
		}
		if got, want := stripTime(t, direct.String()), stripTime(t, viaSlog.String()); got != want {
			t.Fatalf("decision %+v:\n direct %s\n slog   %s", d, got, want)
		}
		if !json.Valid(direct.Bytes()) {
			t.Fatalf("not JSON: %s", direct.String())
		}
	}
}

// TestDirectTimeEqualsSlog: the time field too, in UTC and another zone.
func TestDirectTimeEqualsSlog(t *testing.T) {
	d := &decision.Decision{Allow: true, Reason: decision.OK, ID: "d1"}
	for _, tm := range []time.Time{
		time.Date(2026, 12, 5, 2, 24, 11, 123456789, time.UTC),
		time.Date(2026, 12, 5, 2, 24, 11, 0, time.FixedZone("x", 5*3600+1800)),
		time.Now(), // with a monotonic reading, which slog strips
	} {
		var want bytes.Buffer
		rec := slog.NewRecord(tm, slog.LevelInfo, "decision", 0)
		rec.AddAttrs(slog.String("decision_id", "d1"), slog.String("request_id", ""), slog.String("outcome", "allow"), slog.String("reason", "ok"),
			slog.String("profile", ""), slog.String("route", ""), slog.String("policy_version", ""), slog.Int64("latency_us", 7))
		if err := slog.NewJSONHandler(&want, nil).Handle(context.Background(), rec); err != nil {
			t.Fatal(err)
		}
		if got := string(appendDecision(nil, tm, slog.LevelInfo, d, nil, 7*time.Microsecond)); got != want.String() {
			t.Errorf("direct %s slog   %s", got, want.String())
		}
	}
}

// TestJSONHandlerOptions: the handler honours its level for decision
// records and other records alike, and with ReplaceAttr it is slog's own
// (the records go through it).
func TestJSONHandlerOptions(t *testing.T) {
	var buf bytes.Buffer
	h := NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn})
	l := New(slog.New(h), "all", 1)
	l.Observe(context.Background(), &decision.Decision{Reason: decision.KeyInvalid, ID: "d1"}, time.Millisecond)
	l.Observe(context.Background(), &decision.Decision{Reason: decision.InternalError, ID: "d2"}, time.Millisecond)
	slog.New(h).Info("other info")
	slog.New(h).Warn("other warn")
	out := buf.String()
	if strings.Contains(out, `"d1"`) || strings.Contains(out, "other info") || !strings.Contains(out, `"level":"WARN","msg":"decision","decision_id":"d2"`) || !strings.Contains(out, "other warn") {
		t.Fatalf("level warn:\n%s", out)
	}

	buf.Reset()
	h = NewJSONHandler(&buf, &slog.HandlerOptions{ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == "tenant" {
			a.Value = slog.StringValue("-")
		}
		return a
	}})
	if _, direct := h.(*JSONHandler); direct {
		t.Fatal("ReplaceAttr must leave the records to slog")
	}
	New(slog.New(h), "all", 1).Observe(context.Background(), &decision.Decision{Allow: true, Reason: decision.OK, ID: "d3", Tenant: "42"}, time.Millisecond)
	if !strings.Contains(buf.String(), `"tenant":"-"`) {
		t.Fatalf("ReplaceAttr not applied: %s", buf.String())
	}
}

// TestJSONHandlerWholeLines: decision records and other records written
// concurrently to an unsynchronised writer come out as whole lines.
func TestJSONHandlerWholeLines(t *testing.T) {
	var buf bytes.Buffer // not safe for concurrent use: the handler's lock is
	h := NewJSONHandler(&buf, nil)
	l := New(slog.New(h), "all", 1)
	done := make(chan struct{})
	for g := range 4 {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := range 200 {
				if g%2 == 0 {
					l.Observe(context.Background(), &decision.Decision{Allow: true, Reason: decision.OK, ID: "d", Subject: strings.Repeat("s", i)}, time.Millisecond)
				} else {
					slog.New(h).Info("other", "i", i)
				}
			}
		}()
	}
	for range 4 {
		<-done
	}
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 800 {
		t.Fatalf("%d lines, want 800", len(lines))
	}
	for _, line := range lines {
		if !json.Valid([]byte(line)) {
			t.Fatalf("not a whole record: %q", line)
		}
	}
}

func BenchmarkObserveDirect(b *testing.B) {
	l := New(slog.New(NewJSONHandler(io.Discard, nil)), "all", 1)
	d := &decision.Decision{Allow: true, Reason: decision.OK, ID: "dn1g51kso7jf-k", RequestID: "c015d7a0-f96e-4fa9-80d7-130912045a6d", Profile: "default", Route: "orders-read", KeyID: "demo-orders", Subject: "svc:orders-demo", Tenant: "42", PolicyVersion: "efe3876aa0c2"}
	b.ReportAllocs()
	for b.Loop() {
		l.Observe(context.Background(), d, 80*time.Microsecond)
	}
}
