package policy

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// Evaluators: Eval runs the evaluation on one of a few long-lived
// goroutines, in the order the checks asked, instead of on the gRPC
// handler's goroutine.
//
// OPA's evaluation recurses deeply. On a goroutine that has not evaluated
// before (gRPC starts a fresh one for every call once its stream workers
// are busy, which is always the case under load) the stack grows from a
// few KiB by repeated doubling, each time copying every frame: in a CPU
// profile of the OPA-Envoy mode under load, runtime.newstack/copystack was
// a fifth of the process. An evaluator's stack grows once and stays grown
// while it is busy.
//
// The evaluators also bound how many evaluations interleave: with every
// handler evaluating at once on two cores, each evaluation took as long as
// all of them together, and under overload checks ran past --eval-timeout
// and were denied. Here a check waits its turn in a FIFO queue, the wait
// counting against its deadline; one whose deadline passed while it waited
// is not evaluated at all (it is denied, as before).
//
// A policy that can block on I/O (http.send, net.lookup_ip_addr) is
// evaluated on the caller's goroutine: a slow server must not hold an
// evaluator that every other check is waiting for.

// ioBuiltins are the builtins that may block on the network.
var ioBuiltins = map[string]bool{"http.send": true, "net.lookup_ip_addr": true}

// callsIO reports whether a compiled policy calls a builtin of ioBuiltins
// anywhere (rule bodies, comprehensions, arguments).
func callsIO(c *ast.Compiler) bool {
	found := false
	for _, m := range c.Modules {
		walkCalls(m, func(op ast.Ref, _ []*ast.Term, _ *ast.Location) {
			found = found || ioBuiltins[op.String()]
		})
	}
	return found
}

type evalJob struct {
	e     *Engine
	ctx   context.Context
	input ast.Value
	out   Output
	err   error
	done  chan struct{} // capacity 1: the evaluator never waits on it
}

var (
	evalOnce  sync.Once
	evalQueue chan *evalJob
	evalJobs  = sync.Pool{New: func() any { return &evalJob{done: make(chan struct{}, 1)} }}
)

// evaluatorCount is the number of evaluators: twice the processors, so the
// CPUs stay busy while one evaluator is descheduled.
func evaluatorCount() int { return max(2*runtime.GOMAXPROCS(0), 4) }

func startEvaluators() {
	n := evaluatorCount()
	evalQueue = make(chan *evalJob, n)
	for range n {
		go evaluator()
	}
}

func evaluator() {
	for j := range evalQueue {
		j.run()
		j.done <- struct{}{}
	}
}

// run evaluates j. A panic in the evaluation is j's error: the check that
// asked fails closed, as a panic on its own goroutine would have made it,
// and the evaluator goes on.
func (j *evalJob) run() {
	defer func() {
		if p := recover(); p != nil {
			j.out, j.err = Output{}, fmt.Errorf("evaluate policy: panic: %v\n%s", p, debug.Stack())
		}
	}()
	// eval returns at once when the check gave up or ran out of time
	// while it waited.
	j.out, j.err = j.e.eval(j.ctx, j.input)
}

// Eval evaluates the decision for input. Unless the policy can block on
// I/O, it runs on an evaluator (see above); either way the evaluation is
// cancelled when ctx is done, and a check that waits past ctx's deadline
// gets its error.
func (e *Engine) Eval(ctx context.Context, input ast.Value) (Output, error) {
	if e.blocking {
		return e.eval(ctx, input)
	}
	evalOnce.Do(startEvaluators)
	j := evalJobs.Get().(*evalJob)
	j.e, j.ctx, j.input = e, ctx, input
	select {
	case evalQueue <- j:
	case <-ctx.Done():
		j.e, j.ctx, j.input = nil, nil, nil
		evalJobs.Put(j)
		return Output{}, fmt.Errorf("evaluate policy: %w", ctx.Err())
	}
	select {
	case <-j.done:
		out, err := j.out, j.err
		*j = evalJob{done: j.done}
		evalJobs.Put(j)
		return out, err
	case <-ctx.Done():
		// The evaluation is cancelled with ctx and ends soon; the job is
		// left to it (and to the collector), not reused.
		return Output{}, fmt.Errorf("evaluate policy: %w", ctx.Err())
	}
}

// ctxCancel is the cancellation of an evaluation under a context: the
// evaluation polls Cancelled, which reads the context (an atomic load). It
// replaces the goroutine rego starts per evaluation to watch a context
// that can be done (its default), and the channel and flag that go with it.
type ctxCancel struct{ ctx context.Context }

// Cancel is never called: the context is the only way to cancel.
func (*ctxCancel) Cancel() {}

func (c *ctxCancel) Cancelled() bool { return c.ctx.Err() != nil }

var _ topdown.Cancel = (*ctxCancel)(nil)
