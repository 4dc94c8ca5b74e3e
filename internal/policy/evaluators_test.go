package policy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
)

// The decision depends on the input: allow exactly when input.n is even.
const parityPolicy = `package extauthz

default decision := {"allow": false, "reason": "odd"}

decision := {"allow": true, "reason": "ok", "details": {"n": sprintf("%d", [input.n])}} if input.n % 2 == 0
`

// A decision that takes long to compute (seconds), whatever the input.
const slowPolicy = `package extauthz

decision := {"allow": true, "reason": "ok"} if count([x | some x in numbers.range(1, 50000000); x % 7 == 0]) > 0
`

func nInput(n int) ast.Value {
	return ast.NewObject(ast.Item(ast.StringTerm("n"), ast.IntNumberTerm(n)))
}

// TestEvalConcurrentAnswersItsOwnInput: evaluations from many goroutines
// at once, through the evaluators, each get the decision for their own
// input, never another check's.
func TestEvalConcurrentAnswersItsOwnInput(t *testing.T) {
	e, err := compile(t, parityPolicy)
	if err != nil {
		t.Fatal(err)
	}
	if e.blocking {
		t.Fatal("a policy without I/O is evaluated inline")
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 100 {
				n := g*1000 + i
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				out, err := e.Eval(ctx, nInput(n))
				cancel()
				switch {
				case err != nil:
					errs <- err
					return
				case out.Allow != (n%2 == 0):
					errs <- fmt.Errorf("n=%d: allow=%v", n, out.Allow)
					return
				case out.Allow && out.Details["n"] != fmt.Sprint(n):
					errs <- fmt.Errorf("n=%d: the decision of %s", n, out.Details["n"])
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestEvalHonoursDeadline: an evaluation that cannot finish within its
// context's deadline returns the deadline's error, never a decision: while
// it runs (cancelled), while it waits behind busy evaluators, and when the
// deadline passed before it asked.
func TestEvalHonoursDeadline(t *testing.T) {
	e, err := compile(t, slowPolicy)
	if err != nil {
		t.Fatal(err)
	}
	// Keep every evaluator busy with a slow evaluation that is cancelled
	// at the end of the test.
	busyCtx, stopBusy := context.WithCancel(context.Background())
	var busy sync.WaitGroup
	for range evaluatorCount() {
		busy.Add(1)
		go func() {
			defer busy.Done()
			_, _ = e.Eval(busyCtx, nInput(0))
		}()
	}
	defer func() { stopBusy(); busy.Wait() }()

	for _, c := range []struct {
		name    string
		timeout time.Duration
	}{{"running or waiting", 50 * time.Millisecond}, {"expired before", -time.Second}} {
		ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
		out, err := e.Eval(ctx, nInput(0))
		cancel()
		if !isCancelError(err) {
			t.Errorf("%s: %+v, %v; want the deadline's error", c.name, out, err)
		}
		if out.Allow {
			t.Errorf("%s: allowed", c.name)
		}
	}
}

func isCancelError(err error) bool {
	return err != nil && (errors.Is(err, context.DeadlineExceeded) || strings.Contains(err.Error(), "eval_cancel_error"))
}

// TestEvalPanicIsAnError: a panic inside an evaluation on an evaluator is
// that evaluation's error; the evaluator goes on serving.
func TestEvalPanicIsAnError(t *testing.T) {
	j := &evalJob{ctx: context.Background(), input: nInput(1)} // no engine: eval panics
	j.run()
	if j.err == nil || j.out.Allow {
		t.Fatalf("%+v, %v; want an error", j.out, j.err)
	}
	e, err := compile(t, parityPolicy)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := e.Eval(context.Background(), nInput(2)); err != nil || !out.Allow {
		t.Fatalf("after a panic: %+v, %v", out, err)
	}
}

// TestBlockingPolicyEvaluatedInline: a policy that can wait on the
// network is not given to the evaluators.
func TestBlockingPolicyEvaluatedInline(t *testing.T) {
	for _, c := range []struct {
		rego     string
		blocking bool
	}{
		{"package extauthz\ndecision := http.send({\"method\": \"get\", \"url\": \"http://127.0.0.1:1\"})", true},
		{"package extauthz\nips := [x | x := net.lookup_ip_addr(\"localhost\")]\ndecision := {\"allow\": false, \"reason\": \"x\"}", true},
		{parityPolicy, false},
	} {
		e, err := compile(t, c.rego)
		if err != nil {
			t.Fatal(err)
		}
		if e.blocking != c.blocking {
			t.Errorf("%q: blocking %v, want %v", c.rego, e.blocking, c.blocking)
		}
	}
}
