package ratelimit

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Quotas is the long-lived quota service. Its counters outlive policy
// versions: For gives it each version's limits, and a version with the same
// backend keeps the counters (Reloader); one that needs another backend
// replaces the limiter. It is safe for concurrent use.
type Quotas struct {
	opts Options
	mu   sync.Mutex
	cur  atomic.Pointer[quotaState]
}

type quotaState struct {
	cfg *Config
	lim Limiter // nil: quotas are off for cfg (it failed to start)
}

// NewQuotas returns the service; opts configure every limiter it starts.
func NewQuotas(opts Options) *Quotas { return &Quotas{opts: opts} }

// For returns the limiter for cfg (nil without limits), applying cfg first
// when it is not the one in force.
func (q *Quotas) For(cfg *Config) Limiter {
	if cfg == nil {
		return nil
	}
	if st := q.cur.Load(); st != nil && st.cfg == cfg {
		return st.lim
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	st := q.cur.Load()
	if st != nil && (st.cfg == cfg || cfg.gen != 0 && st.cfg.gen > cfg.gen) {
		// A check still running on an older policy version uses the
		// newer limits: the limiter never swings back to an old config.
		return st.lim
	}
	if st != nil && st.lim != nil {
		if rl, ok := st.lim.(Reloader); ok && rl.Reload(cfg) == nil {
			q.cur.Store(&quotaState{cfg: cfg, lim: st.lim})
			return st.lim
		}
	}
	lim, err := New(cfg, q.opts)
	if err != nil {
		log := q.opts.Logger
		if log == nil {
			log = slog.Default()
		}
		log.Error("rate limiter not started; every authenticated check is denied auth_unavailable until a version whose limits start", "error", err.Error())
		lim = broken{err}
	}
	if st != nil {
		if c, ok := st.lim.(io.Closer); ok {
			_ = c.Close()
		}
	}
	q.cur.Store(&quotaState{cfg: cfg, lim: lim})
	return lim
}

// Close releases the current limiter's backend.
func (q *Quotas) Close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if st := q.cur.Swap(nil); st != nil {
		if c, ok := st.lim.(io.Closer); ok {
			_ = c.Close()
		}
	}
}

// broken is the Limiter of a config New refused: every Take fails, so a
// quota that could not start denies (auth_unavailable) rather than letting
// every request through unlimited.
type broken struct{ err error }

func (b broken) Take(context.Context, Subject, time.Time) (Result, error) {
	return Result{}, fmt.Errorf("%w: %w", ErrUnavailable, b.err)
}
