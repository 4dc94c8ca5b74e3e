// Package logthrottle keeps fault logs readable under a flood. A Handler
// wraps a slog.Handler: records below its level pass through; a record at or above it is written the first time its message is
// seen, and further records with the same message within the interval are
// counted, not written. The next record after the interval is written with
// "suppressed" (how many were dropped since the last written one) and
// "suppressed_for" (the interval) added, so a fault that lasts produces one
// line per message per interval, with the count. Flush writes a summary
// line ("log lines suppressed") for every message whose count is pending and
// whose interval has passed; call it periodically and at shutdown so the
// count of a flood that ended is not lost.
//
// Decision logs are not fault logs: give them an unthrottled logger.
package logthrottle

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// DefaultInterval is the summary interval when none is given.
const DefaultInterval = 10 * time.Second

// maxKeys bounds the messages tracked; messages are constants in this code,
// so the bound is only a guard. Beyond it, new messages share one entry.
const maxKeys = 1024

// overflowKey is the shared entry for messages beyond maxKeys.
const overflowKey = "(other messages)"

// SummaryMsg is the message of the summary lines Flush writes.
const SummaryMsg = "log lines suppressed"

// Options configure a Handler.
type Options struct {
	Interval time.Duration    // default DefaultInterval
	Level    slog.Level       // records below it pass through (the zero value is Info; servers use Warn)
	Now      func() time.Time // default time.Now (tests inject a fake clock)
	// OnSuppress is called once per dropped record (a metric).
	OnSuppress func(msg string)
}

// state is shared by a Handler and every handler derived from it with
// WithAttrs or WithGroup.
type state struct {
	mu       sync.Mutex
	interval time.Duration
	now      func() time.Time
	onSupp   func(string)
	entries  map[string]*entry
}

type entry struct {
	level      slog.Level
	lastWrite  time.Time // when a line for this message was last written
	suppressed int64     // dropped since then
	out        slog.Handler
}

// Handler is the throttling slog.Handler.
type Handler struct {
	next  slog.Handler
	level slog.Level
	st    *state
}

// New wraps next.
func New(next slog.Handler, o Options) *Handler {
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Handler{next: next, level: o.Level, st: &state{
		interval: o.Interval, now: o.Now, onSupp: o.OnSuppress, entries: map[string]*entry{},
	}}
}

// Enabled implements slog.Handler.
func (h *Handler) Enabled(ctx context.Context, l slog.Level) bool { return h.next.Enabled(ctx, l) }

// WithAttrs implements slog.Handler; the result shares the throttle state.
func (h *Handler) WithAttrs(as []slog.Attr) slog.Handler {
	return &Handler{next: h.next.WithAttrs(as), level: h.level, st: h.st}
}

// WithGroup implements slog.Handler; the result shares the throttle state.
func (h *Handler) WithGroup(name string) slog.Handler {
	return &Handler{next: h.next.WithGroup(name), level: h.level, st: h.st}
}

// Handle implements slog.Handler.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < h.level {
		return h.next.Handle(ctx, r)
	}
	st := h.st
	now := st.now()
	st.mu.Lock()
	key := r.Message
	e := st.entries[key]
	if e == nil && len(st.entries) >= maxKeys {
		key = overflowKey
		e = st.entries[key]
	}
	if e == nil {
		st.entries[key] = &entry{level: r.Level, lastWrite: now, out: h.next}
		st.mu.Unlock()
		return h.next.Handle(ctx, r)
	}
	if now.Sub(e.lastWrite) < st.interval {
		e.suppressed++
		st.mu.Unlock()
		if st.onSupp != nil {
			st.onSupp(r.Message)
		}
		return nil
	}
	n := e.suppressed
	e.suppressed, e.lastWrite, e.level, e.out = 0, now, r.Level, h.next
	st.mu.Unlock()
	if n > 0 {
		r = r.Clone()
		r.AddAttrs(slog.Int64("suppressed", n), slog.String("suppressed_for", st.interval.String()))
	}
	return h.next.Handle(ctx, r)
}

// Flush writes one summary line for each message with suppressed records
// whose interval has passed (all of them when force is set, at shutdown).
func (h *Handler) Flush(force bool) {
	st := h.st
	now := st.now()
	type pending struct {
		msg   string
		level slog.Level
		n     int64
		out   slog.Handler
	}
	var out []pending
	st.mu.Lock()
	for msg, e := range st.entries {
		if e.suppressed == 0 || (!force && now.Sub(e.lastWrite) < st.interval) {
			continue
		}
		out = append(out, pending{msg, e.level, e.suppressed, e.out})
		e.suppressed, e.lastWrite = 0, now
	}
	st.mu.Unlock()
	for _, p := range out {
		r := slog.NewRecord(now, p.level, SummaryMsg, 0)
		r.AddAttrs(slog.String("msg_suppressed", p.msg), slog.Int64("suppressed", p.n), slog.String("suppressed_for", st.interval.String()))
		_ = p.out.Handle(context.Background(), r)
	}
}

// Run calls Flush every interval until ctx is done, then flushes everything.
func (h *Handler) Run(ctx context.Context) {
	t := time.NewTicker(h.st.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			h.Flush(true)
			return
		case <-t.C:
			h.Flush(false)
		}
	}
}
