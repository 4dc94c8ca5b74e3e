package decisionlog

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/extauthz/extauthz/internal/decision"
	"github.com/extauthz/extauthz/internal/replay"
)

// JSONHandler is log/slog's JSON handler, which a Logger can also bypass:
// a decision record is appended field by field to a pooled buffer — the
// same bytes slog.JSONHandler writes for it (TestDirectEqualsSlog) — and
// written through the same lock, without a slog.Record, its attributes and
// the handler's per-record state. Every other record goes through slog.
type JSONHandler struct {
	slog.Handler // a *slog.JSONHandler writing to out
	out          *lockedWriter
}

// NewJSONHandler returns a JSON handler writing to w with opts. With
// opts.ReplaceAttr or opts.AddSource it is slog.NewJSONHandler itself (a
// record is then whatever those make of it, so it is always built by slog).
func NewJSONHandler(w io.Writer, opts *slog.HandlerOptions) slog.Handler {
	if opts != nil && (opts.ReplaceAttr != nil || opts.AddSource) {
		return slog.NewJSONHandler(w, opts)
	}
	out := &lockedWriter{w: w}
	return &JSONHandler{Handler: slog.NewJSONHandler(out, opts), out: out}
}

// lockedWriter serialises the writes of slog's handler and the direct
// records: each is one Write of one whole line.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// writeDecision writes d's record (see Logger.observe for its fields).
func (h *JSONHandler) writeDecision(t time.Time, level slog.Level, d *decision.Decision, src *replay.Source, elapsed time.Duration) error {
	bp := bufPool.Get().(*[]byte)
	b := appendDecision((*bp)[:0], t, level, d, src, elapsed)
	_, err := h.out.Write(b)
	if cap(b) <= 64<<10 { // a rare huge record (facts) does not stay pooled
		*bp = b
		bufPool.Put(bp)
	}
	return err
}

// appendDecision appends the JSON line slog.JSONHandler writes for the
// record Logger.observe builds: time, level, msg, then the attributes in
// the same order, strings escaped as slog escapes them.
func appendDecision(b []byte, t time.Time, level slog.Level, d *decision.Decision, src *replay.Source, elapsed time.Duration) []byte {
	b = append(b, `{"time":"`...)
	b = t.Round(0).AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","level":`...)
	b = appendString(b, level.String())
	b = append(b, `,"msg":"decision","decision_id":`...)
	b = appendString(b, d.ID)
	b = append(b, `,"request_id":`...)
	b = appendString(b, d.RequestID)
	if d.Allow {
		b = append(b, `,"outcome":"allow","reason":`...)
	} else {
		b = append(b, `,"outcome":"deny","reason":`...)
	}
	b = appendString(b, string(d.Reason))
	b = append(b, `,"profile":`...)
	b = appendString(b, d.Profile)
	b = append(b, `,"route":`...)
	b = appendString(b, d.Route)
	b = append(b, `,"policy_version":`...)
	b = appendString(b, d.PolicyVersion)
	b = append(b, `,"latency_us":`...)
	b = strconv.AppendInt(b, elapsed.Microseconds(), 10)
	b = appendOptional(b, `,"variant":`, d.Variant)
	b = appendOptional(b, `,"key_id":`, d.KeyID)
	b = appendOptional(b, `,"subject":`, d.Subject)
	b = appendOptional(b, `,"tenant":`, d.Tenant)
	if sh := d.Shadow; sh != nil {
		b = append(b, `,"shadow":{"reason":`...)
		b = appendString(b, string(sh.Reason))
		b = append(b, `,"status":`...)
		b = strconv.AppendInt(b, int64(sh.Status), 10)
		b = append(b, `,"body":`...)
		b = appendString(b, sh.Body)
		b = append(b, '}')
	}
	if src != nil && src.Facts != nil {
		b = append(b, `,"facts":`...)
		b = appendMarshal(b, replay.Of(*src))
	}
	return append(b, "}\n"...)
}

func appendOptional(b []byte, key, v string) []byte {
	if v == "" {
		return b
	}
	return appendString(append(b, key...), v)
}

// appendMarshal is slog's encoding of a value of kind Any: encoding/json
// without HTML escaping, or the error in its place.
func appendMarshal(b []byte, v any) []byte {
	var bb bytes.Buffer
	enc := json.NewEncoder(&bb)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return appendString(b, fmt.Sprintf("!ERROR:%v", err))
	}
	return append(b, bytes.TrimSuffix(bb.Bytes(), []byte("\n"))...)
}

// appendString appends s as a quoted JSON string, escaped as slog's JSON
// handler escapes it: `"`, `\` and control characters, invalid UTF-8 as
// U+FFFD, and U+2028 and U+2029; HTML characters are left alone.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(append(b, s[start:i]...), `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(append(b, s[start:i]...), '\\', 'u', '2', '0', '2', hex[r&0xF])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

const hex = "0123456789abcdef"
