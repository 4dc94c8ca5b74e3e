// Package decisionlog writes one structured log record per decision with
// log/slog: who (key id or subject, tenant), what (route, profile, reason),
// the ids to join with Envoy's access log, and the latency. It never sees a
// credential or a header value, so none can leak; allows can be sampled.
// With Facts, a record also carries the facts the decision was taken on
// (internal/replay), bounded, so that extauthz check --decision-log can
// decide it again.
package decisionlog

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/extauthz/extauthz/internal/decision"
	"github.com/extauthz/extauthz/internal/replay"
)

// Logger is a check.Observer.
type Logger struct {
	Log        *slog.Logger
	Denies     bool    // log denies
	Allows     bool    // log allows ...
	SampleRate float64 // ... this fraction of them
	Facts      bool    // add the facts the decision was taken on ("facts")
}

// New returns a decision logger for mode all, deny or none.
func New(log *slog.Logger, mode string, allowSample float64) *Logger {
	return &Logger{Log: log, Denies: mode != "none", Allows: mode == "all", SampleRate: allowSample}
}

// Observe logs d.
func (l *Logger) Observe(ctx context.Context, d *decision.Decision, elapsed time.Duration) {
	l.observe(ctx, d, nil, elapsed)
}

// ObserveFacts logs d with the facts it was taken on when l.Facts is set.
func (l *Logger) ObserveFacts(ctx context.Context, d *decision.Decision, src replay.Source, elapsed time.Duration) {
	if !l.Facts {
		l.observe(ctx, d, nil, elapsed)
		return
	}
	l.observe(ctx, d, &src, elapsed)
}

func (l *Logger) observe(ctx context.Context, d *decision.Decision, src *replay.Source, elapsed time.Duration) {
	if d.Allow && d.Shadow == nil { // a shadowed deny is logged as denies are
		if !l.Allows || (l.SampleRate < 1 && rand.Float64() >= l.SampleRate) {
			return
		}
	} else if !l.Denies {
		return
	}
	level := slog.LevelInfo
	if d.Reason == decision.InternalError {
		level = slog.LevelWarn
	}
	h := l.Log.Handler()
	if !h.Enabled(ctx, level) {
		return
	}
	if jh, ok := h.(*JSONHandler); ok {
		// The same record, encoded without slog (json.go).
		_ = jh.writeDecision(time.Now(), level, d, src, elapsed)
		return
	}
	outcome := "deny"
	if d.Allow {
		outcome = "allow"
	}
	var buf [14]slog.Attr // on the stack: LogAttrs copies the attributes
	attrs := append(buf[:0],
		slog.String("decision_id", d.ID),
		slog.String("request_id", d.RequestID),
		slog.String("outcome", outcome),
		slog.String("reason", string(d.Reason)),
		slog.String("profile", d.Profile),
		slog.String("route", d.Route),
		slog.String("policy_version", d.PolicyVersion),
		slog.Int64("latency_us", elapsed.Microseconds()),
	)
	if d.Variant != "" {
		attrs = append(attrs, slog.String("variant", d.Variant))
	}
	if d.KeyID != "" {
		attrs = append(attrs, slog.String("key_id", d.KeyID))
	}
	if d.Subject != "" {
		attrs = append(attrs, slog.String("subject", d.Subject))
	}
	if d.Tenant != "" {
		attrs = append(attrs, slog.String("tenant", d.Tenant))
	}
	if sh := d.Shadow; sh != nil {
		// The deny that was not enforced, as the client would have seen it.
		attrs = append(attrs, slog.Group("shadow", slog.String("reason", string(sh.Reason)), slog.Int("status", sh.Status), slog.String("body", sh.Body)))
	}
	if src != nil && src.Facts != nil {
		attrs = append(attrs, slog.Any("facts", replay.Of(*src)))
	}
	// The record is built here rather than by Logger.LogAttrs, which would
	// capture the caller's program counter (runtime.Callers: a third of the
	// cost of a record under load) for a source location nobody asked for.
	r := slog.NewRecord(time.Now(), level, "decision", 0)
	r.AddAttrs(attrs...)
	_ = h.Handle(ctx, r) // slog handlers write regardless of cancellation
}
