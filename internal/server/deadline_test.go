package server

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/extauthz/extauthz/internal/check"
	"github.com/extauthz/extauthz/internal/clientip"
	"github.com/extauthz/extauthz/internal/engine"
	"github.com/extauthz/extauthz/internal/policy"
)

// waitDone fails the test when ctx is not done within a generous bound
// (a failure bound, not a measurement).
func waitDone(t *testing.T, ctx context.Context, what string) {
	t.Helper()
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: Done not closed", what)
	}
}

type ctxKey struct{}

// The check context behaves as context.WithTimeout would: its deadline is
// the earlier of the parent's and its own, Err turns DeadlineExceeded at
// the deadline whether or not anyone waited, Done closes at the deadline,
// on the parent's cancellation and on release, values pass through, and
// contexts derived from it end with it.
func TestCheckContext(t *testing.T) {
	bg := context.WithValue(context.Background(), ctxKey{}, "v")

	t.Run("deadline", func(t *testing.T) {
		c := withCheckDeadline(bg, time.Hour)
		release := c.release
		defer release()
		if dl, ok := c.Deadline(); !ok || time.Until(dl) > time.Hour || time.Until(dl) < 59*time.Minute {
			t.Errorf("deadline %v %v, want about an hour ahead", dl, ok)
		}
		parent, cancel := context.WithDeadline(bg, time.Now().Add(time.Minute))
		defer cancel()
		pd, _ := parent.Deadline()
		c2 := withCheckDeadline(parent, time.Hour)
		release2 := c2.release
		defer release2()
		if dl, _ := c2.Deadline(); !dl.Equal(pd) {
			t.Errorf("deadline %v, want the parent's earlier %v", dl, pd)
		}
		if c.Value(ctxKey{}) != "v" || c.Err() != nil {
			t.Errorf("value %v, err %v", c.Value(ctxKey{}), c.Err())
		}
	})

	t.Run("past the deadline, nobody waiting", func(t *testing.T) {
		c := withCheckDeadline(bg, time.Millisecond)
		release := c.release
		defer release()
		dl, _ := c.Deadline()
		for time.Now().Before(dl) {
			time.Sleep(time.Millisecond)
		}
		if !errors.Is(c.Err(), context.DeadlineExceeded) {
			t.Errorf("Err %v past the deadline", c.Err())
		}
		select { // made now, already past its deadline
		case <-c.Done():
		default:
			t.Error("Done not closed past the deadline")
		}
		if c.Value(ctxKey{}) != "v" {
			t.Error("value lost")
		}
	})

	t.Run("waiting", func(t *testing.T) {
		c := withCheckDeadline(bg, 20*time.Millisecond)
		release := c.release
		defer release()
		if c.Err() != nil {
			t.Fatalf("Err %v before the deadline", c.Err())
		}
		waitDone(t, c, "deadline")
		if !errors.Is(c.Err(), context.DeadlineExceeded) {
			t.Errorf("Err %v", c.Err())
		}
	})

	t.Run("derived", func(t *testing.T) {
		c := withCheckDeadline(bg, 20*time.Millisecond)
		release := c.release
		defer release()
		d, cancel := context.WithTimeout(c, time.Hour) // as an evaluation budget or a Redis call
		defer cancel()
		if dl, _ := d.Deadline(); !dl.Equal(c.deadline) {
			t.Errorf("derived deadline %v, want %v", dl, c.deadline)
		}
		waitDone(t, d, "derived")
		if !errors.Is(d.Err(), context.DeadlineExceeded) || d.Value(ctxKey{}) != "v" {
			t.Errorf("derived Err %v value %v", d.Err(), d.Value(ctxKey{}))
		}
	})

	t.Run("parent canceled", func(t *testing.T) {
		for _, waitFirst := range []bool{false, true} {
			parent, cancel := context.WithCancel(bg)
			c := withCheckDeadline(parent, time.Hour)
			release := c.release
			if waitFirst {
				_ = c.Done()
			}
			cancel()
			waitDone(t, c, "parent canceled")
			if !errors.Is(c.Err(), context.Canceled) {
				t.Errorf("Err %v after the parent's cancel", c.Err())
			}
			release()
		}
	})

	t.Run("released", func(t *testing.T) {
		for _, waitFirst := range []bool{false, true} {
			c := withCheckDeadline(bg, time.Hour)
			release := c.release
			if waitFirst {
				_ = c.Done()
			}
			release()
			waitDone(t, c, "released")
			if !errors.Is(c.Err(), context.Canceled) {
				t.Errorf("Err %v after release", c.Err())
			}
		}
	})

	t.Run("concurrent", func(t *testing.T) {
		c := withCheckDeadline(bg, time.Hour)
		release := c.release
		chans := make([]<-chan struct{}, 16)
		var wg sync.WaitGroup
		for i := range chans {
			wg.Go(func() { chans[i] = c.Done(); _ = c.Err() })
		}
		wg.Wait()
		for _, ch := range chans[1:] {
			if ch != chans[0] {
				t.Fatal("Done returned different channels")
			}
		}
		release()
		waitDone(t, c, "released")
	})
}

// Through WithDeadline, a check whose policy evaluation would take hours
// (10^10 steps, the evaluation budget an hour) is denied internal_error at
// the check deadline; one the memo answers is allowed as before.
func TestWithDeadlineFailsClosed(t *testing.T) {
	build := func(rego string) *check.Server {
		t.Helper()
		src := &policy.Source{Origin: "test", Modules: map[string]string{"p.rego": rego}, Data: map[string]any{}}
		e, err := engine.Build(context.Background(), src, engine.Options{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(e.Close)
		var h engine.Holder
		h.Store(e)
		s := check.NewServer(&h, clientip.Resolver{})
		s.Timeout = time.Hour
		return s
	}
	slow := build("package extauthz\ndecision := {\"allow\": true, \"reason\": \"ok\"} if count([1 | some x in numbers.range(1, 100000); some y in numbers.range(1, 100000); x > y]) > 0\n")
	req := checkReq(nil)
	for _, wire := range []bool{false, true} {
		var resp *authv3.CheckResponse
		if wire {
			out := WithDeadline(slow, 20*time.Millisecond).(wireChecker).CheckWire(context.Background(), req)
			resp, _ = out.(*authv3.CheckResponse)
		} else {
			resp, _ = WithDeadline(slow, 20*time.Millisecond).Check(context.Background(), req)
		}
		if reason := resp.GetDynamicMetadata().GetFields()["reason"].GetStringValue(); reason != "internal_error" || resp.GetDeniedResponse().GetStatus().GetCode() != 500 {
			t.Errorf("wire %v: got %q/%v, want internal_error/500", wire, reason, resp.GetDeniedResponse().GetStatus().GetCode())
		}
	}

	// The caller's earlier deadline wins over the check timeout.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	resp, _ := WithDeadline(slow, time.Hour).Check(ctx, req)
	if reason := resp.GetDynamicMetadata().GetFields()["reason"].GetStringValue(); reason != "internal_error" {
		t.Errorf("caller's deadline: got %q", reason)
	}
}

// BenchmarkCheckDeadline: the deadline of a check that never waits (a memo
// hit: Err and Deadline only), as context.WithTimeout and as the check
// context, under a parent like gRPC's (cancelable, with Envoy's deadline).
func BenchmarkCheckDeadline(b *testing.B) {
	parent, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	b.Run("WithTimeout", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ctx, cancel := context.WithTimeout(parent, 200*time.Millisecond)
			_ = ctx.Err()
			cancel()
		}
	})
	b.Run("checkContext", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			ctx := withCheckDeadline(parent, 200*time.Millisecond)
			_ = ctx.Err()
			ctx.release()
		}
	})
}
