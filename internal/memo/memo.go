// Package memo decides requests with a policy, remembering decisions.
//
// A Decider answers a request's facts with the policy's decision. Plain
// evaluates the policy every time. Memo wraps it: when a policy provably
// reads nothing but the facts and data, and calls only builtins known to be
// deterministic and time-independent (policy.Engine.Pure), its decision is a
// function of the facts it was given, so Memo remembers it keyed by those
// facts themselves (facts.Key: the same type as input.extauthz, less what
// the policy provably does not read). A Memo belongs to one policy version
// (engine.Engine holds it): a reload starts an empty one. Its size is
// capped: when full it is cleared, so nothing a client sends can grow it.
//
// The client address is the exception when the policy traces it
// (policy.Purity.TracesClientIP: it tests the address only through
// extauthz.client_in). Such a key leaves the address out and holds up to
// MaxVariants decisions, each with the tests its evaluation made; a request
// takes the first whose tests its own address answers alike
// (policy.IPTrace.Matches). Most decisions test nothing (no allowlist
// applies) and hold for every address; the others hold for every address
// on the same side of the allowlists.
package memo

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/extauthz/extauthz/internal/facts"
	"github.com/extauthz/extauthz/internal/policy"
)

// Input builds the policy input of a request; it is called only when the
// policy has to be evaluated.
type Input interface{ Input() ast.Value }

// Decider decides a request: the policy's output for facts f, evaluated
// within timeout, and the remembered entry it came from or went to (nil
// when it is not remembered). An evaluation that fails, runs late or whose
// caller gave up is an error, never an output.
type Decider interface {
	Decide(ctx context.Context, f *facts.Facts, in Input, timeout time.Duration) (policy.Output, *Entry, error)
}

// Plain evaluates the policy on every request.
type Plain struct{ Policy *policy.Engine }

// Decide evaluates the policy.
func (p Plain) Decide(ctx context.Context, _ *facts.Facts, in Input, timeout time.Duration) (policy.Output, *Entry, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	out, err := p.Policy.Eval(ctx, in.Input())
	if err == nil {
		err = ctx.Err() // a cancelled or late evaluation is not trusted
	}
	return out, nil, err
}

// For returns the decider for a policy version: a Memo around Plain when
// the policy is pure, Plain otherwise.
func For(p *policy.Engine) Decider {
	if !p.Pure() {
		return Plain{Policy: p}
	}
	return &Memo{plain: Plain{Policy: p}, reads: p.Purity().Reads(), m: make(map[facts.Key]*Entry, 1024)}
}

// The memo holds at most memoCap keys and about maxMemoBytes: each entry
// is counted as its key's strings (facts.Key.Size, which a client sets:
// a 50 KB tenant header), its output's strings and entryOverhead, so that
// neither many keys nor large ones grow it past the budget.
// A key over maxKeyBytes (a request no client of the API sends: a tenant
// header of kilobytes) is evaluated every time, not remembered, so such
// requests neither fill the budget nor clear what others use.
const (
	memoCap       = 65536
	maxMemoBytes  = 64 << 20
	maxKeyBytes   = 4 << 10
	entryOverhead = 800 // the key and entry structs, map slot, rendered reply (measured: 776 bytes)
)

// MaxVariants bounds the decisions one address-free key holds, and
// MaxTraceTests the tests one of them may carry: a decision whose
// evaluation tested the address more often (a long allowlist it is not in)
// is keyed by the address instead, so neither an entry's size nor a
// lookup's cost grows with allowlists.
// The memo is also cleared when its decisions carry maxMemoTests tests in
// all (about 80 bytes each).
const (
	MaxVariants   = 8
	MaxTraceTests = 16
	maxMemoTests  = 1 << 18
)

// Memo remembers a pure policy's decisions.
type Memo struct {
	plain Plain
	reads facts.Reads
	mu    sync.RWMutex
	m     map[facts.Key]*Entry
	tests int // address tests the entries in m carry; under mu
	bytes int // the entries' cost (Entry.cost); under mu
}

// Entry is a remembered decision. Derived values (what a caller renders
// from it) can be attached once.
type Entry struct {
	Out     policy.Output
	derived atomic.Value
	next    *Entry // the key's other variants (traced keys only); immutable
	cost    int    // bytes counted against maxMemoBytes
}

// Derived returns the value derived from e, made by mk on first use.
func (e *Entry) Derived(mk func() any) any {
	if v := e.derived.Load(); v != nil {
		return v
	}
	e.derived.CompareAndSwap(nil, mk())
	return e.derived.Load()
}

// Decide answers from the memo, or evaluates and remembers.
func (m *Memo) Decide(ctx context.Context, f *facts.Facts, in Input, timeout time.Duration) (policy.Output, *Entry, error) {
	k := f.Key(m.reads)
	if e := m.Get(k, f.ClientIP); e != nil {
		return e.Out, e, nil
	}
	out, _, err := m.plain.Decide(ctx, f, in, timeout)
	if err != nil {
		return out, nil, err
	}
	return out, m.put(k, out, f.ClientIP), nil
}

// Get returns the decision remembered for k and, for a traced key, for
// client address ip; nil when there is none.
func (m *Memo) Get(k facts.Key, ip netip.Addr) *Entry {
	m.mu.RLock()
	e := m.m[k]
	m.mu.RUnlock()
	if !k.Traced() {
		return e
	}
	b := ip.As16() // the bytes net.ParseIP gives for ip's text
	for ; e != nil; e = e.next {
		if e.Out.IPTests.Matches(net.IP(b[:])) {
			return e
		}
	}
	// A decision with too many tests to share is kept by address.
	m.mu.RLock()
	e = m.m[k.WithAddress(ip)]
	m.mu.RUnlock()
	return e
}

// put remembers o for k (and, for a traced key, the requests whose address
// answers o's tests alike; ip is this request's).
func (m *Memo) put(k facts.Key, o policy.Output, ip netip.Addr) *Entry {
	if k.Traced() && len(o.IPTests) > MaxTraceTests {
		k, o.IPTests = k.WithAddress(ip), nil
	}
	size := k.Size()
	e := &Entry{Out: o, cost: entryOverhead + size + outputSize(o)}
	if size > maxKeyBytes {
		return e // answered, not remembered
	}
	k = k.Clone()
	m.mu.Lock()
	if len(m.m) >= memoCap || m.tests+len(o.IPTests) > maxMemoTests || m.bytes+e.cost > maxMemoBytes {
		clear(m.m)
		m.tests, m.bytes = 0, 0
	}
	m.tests += len(o.IPTests)
	m.bytes += e.cost
	n, tests, cost := 0, 0, 0
	for v := m.m[k]; v != nil; v = v.next {
		n, tests, cost = n+1, tests+len(v.Out.IPTests), cost+v.cost
	}
	if k.Traced() && n < MaxVariants {
		e.next = m.m[k]
	} else {
		m.tests -= tests // the entries e replaces
		m.bytes -= cost
	}
	m.m[k] = e
	m.mu.Unlock()
	return e
}

// outputSize is the bytes o's strings hold.
func outputSize(o policy.Output) int {
	n := len(o.Reason) + len(o.Variant)
	for k, v := range o.Details {
		n += len(k) + len(v)
	}
	for k, v := range o.UpstreamHeaders {
		n += len(k) + len(v)
	}
	return n
}

// Range calls fn for every remembered key and each of its decisions, and
// returns the number of address tests they carry (for inspection and tests).
func (m *Memo) Range(fn func(k facts.Key, e *Entry)) (tests int) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	for k, e := range m.m {
		for ; e != nil; e = e.next {
			fn(k, e)
		}
	}
	return m.tests
}
