package server

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// checkContext is a context with a deadline whose timer is made only if
// someone waits for it. context.WithTimeout makes a timer and a cancelable
// context and registers it with its parent for every check, while a check
// answered from the decision memo never waits: it only asks Err (before
// evaluating) and Deadline (to bound a Redis call). So Deadline and Err are
// answered from the deadline and the clock, and the first call to Done —
// a policy evaluation waiting for an evaluator, a Redis call, a JWKS fetch,
// a derived context — makes the real one, context.WithDeadline(parent,
// deadline), to which everything is delegated from then on. The guarantee
// is WithDeadline's: whoever waits is woken at the deadline (or when the
// parent is done), and Err is non-nil from the deadline on.
type checkContext struct {
	parent   context.Context
	deadline time.Time
	inner    atomic.Pointer[innerContext] // set once, by the first Done
	mu       sync.Mutex                   // making inner
	canceled atomic.Bool
}

type innerContext struct {
	ctx    context.Context
	cancel context.CancelFunc
}

// withCheckDeadline returns parent with a deadline at most d away; its
// release is to be called when the check is done (as context.WithTimeout's
// cancel).
func withCheckDeadline(parent context.Context, d time.Duration) *checkContext {
	dl := time.Now().Add(d)
	if pd, ok := parent.Deadline(); ok && pd.Before(dl) {
		dl = pd
	}
	return &checkContext{parent: parent, deadline: dl}
}

func (c *checkContext) Deadline() (time.Time, bool) { return c.deadline, true }

func (c *checkContext) Done() <-chan struct{} {
	if in := c.inner.Load(); in != nil {
		return in.ctx.Done()
	}
	return c.make().ctx.Done()
}

// make creates the real context once; after release it is created canceled.
func (c *checkContext) make() *innerContext {
	c.mu.Lock()
	defer c.mu.Unlock()
	if in := c.inner.Load(); in != nil {
		return in
	}
	ctx, cancel := context.WithDeadline(c.parent, c.deadline)
	if c.canceled.Load() {
		cancel()
	}
	in := &innerContext{ctx, cancel}
	c.inner.Store(in)
	return in
}

func (c *checkContext) Err() error {
	if in := c.inner.Load(); in != nil {
		return in.ctx.Err()
	}
	if c.canceled.Load() {
		return context.Canceled
	}
	if err := c.parent.Err(); err != nil {
		return err
	}
	if !time.Now().Before(c.deadline) {
		return context.DeadlineExceeded
	}
	return nil
}

// Value is the parent's, or the real context's once made: the context
// package finds its own cancelable context through Value, so a context
// derived from this one is registered with the real one rather than given a
// goroutine of its own.
func (c *checkContext) Value(key any) any {
	if in := c.inner.Load(); in != nil {
		return in.ctx.Value(key)
	}
	return c.parent.Value(key)
}

func (c *checkContext) release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.canceled.Store(true)
	if in := c.inner.Load(); in != nil {
		in.cancel()
	}
}

func (c *checkContext) String() string { return "server.checkContext" }
