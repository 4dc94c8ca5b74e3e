package check

import (
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/extauthz/extauthz/internal/engine"
	"github.com/extauthz/extauthz/internal/facts"
	"github.com/extauthz/extauthz/internal/policy"
)

// The decision memo. When a policy provably reads nothing but
// input.extauthz and data, and calls only builtins known to be deterministic
// and time-independent (policy.Engine.Pure), its decision is a function of
// the facts it was given, so it is remembered per engine version, keyed by
// those facts themselves (facts.Key: the same type as input.extauthz, less
// what the policy provably does not read). A memo
// never outlives its engine: a reload starts an empty one. Its size is capped:
// when full it is cleared, so nothing a client sends can grow it.
//
// The client address is the exception when the policy traces it
// (policy.Purity.TracesClientIP: it only tests the address against CIDRs).
// Such a key leaves the address out and holds up to maxVariants decisions,
// each with the tests its evaluation made; a request takes the first whose
// tests its own address answers alike (policy.IPTrace.Matches). Most
// decisions test nothing (no allowlist applies) and hold for every address;
// the others hold for every address on the same side of the allowlists.

const memoCap = 65536

// maxVariants bounds the decisions one address-free key holds, and
// maxTraceTests the tests one of them may carry: a decision whose
// evaluation tested the address more often (a long allowlist it is not in)
// is keyed by the address instead, so neither an entry's size nor a
// lookup's cost grows with allowlists.
// The memo is also cleared when its decisions carry maxMemoTests tests in
// all (about 80 bytes each).
const (
	maxVariants   = 8
	maxTraceTests = 16
	maxMemoTests  = 1 << 18
)

type memo struct {
	eng   *engine.Engine
	mu    sync.RWMutex
	m     map[facts.Key]*memoEntry
	tests int // address tests the entries in m carry; under mu
}

// memoEntry is a remembered decision, plus the parts of its OK response that
// depend only on the key (identity, route, tenant): built on first use.
type memoEntry struct {
	out  policy.Output
	ok   atomic.Pointer[okParts]
	meta atomic.Pointer[[]byte] // encoded dynamic metadata but decision_id (see encode.go)
	deny atomic.Pointer[denyParts]
	next *memoEntry // the key's other variants (traced keys only); immutable
}

// okParts are read-only once stored; responses share them.
type okParts struct {
	set    []*corev3.HeaderValueOption
	remove []string
	head   []byte // encoded status and ok_response (see encode.go)
}

// get returns the decision remembered for k and, for a traced key, for
// client address ip; nil when there is none.
func (m *memo) get(k facts.Key, ip netip.Addr) *memoEntry {
	m.mu.RLock()
	e := m.m[k]
	m.mu.RUnlock()
	if !k.Traced() {
		return e
	}
	b := ip.As16() // the bytes net.ParseIP gives for ip's text
	for ; e != nil; e = e.next {
		if e.out.IPTests.Matches(net.IP(b[:])) {
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
func (m *memo) put(k facts.Key, o policy.Output, ip netip.Addr) *memoEntry {
	if k.Traced() && len(o.IPTests) > maxTraceTests {
		k, o.IPTests = k.WithAddress(ip), nil
	}
	e := &memoEntry{out: o}
	m.mu.Lock()
	if len(m.m) >= memoCap || m.tests+len(o.IPTests) > maxMemoTests {
		clear(m.m)
		m.tests = 0
	}
	m.tests += len(o.IPTests)
	n, tests := 0, 0
	for v := m.m[k]; v != nil; v = v.next {
		n, tests = n+1, tests+len(v.out.IPTests)
	}
	if k.Traced() && n < maxVariants {
		e.next = m.m[k]
	} else {
		m.tests -= tests // the entries e replaces
	}
	m.m[k] = e
	m.mu.Unlock()
	return e
}

// memoFor returns the memo of eng, or nil when eng's policy is not pure.
func (s *Server) memoFor(eng *engine.Engine) *memo {
	if s.NoMemo || !eng.Policy.Pure() {
		return nil
	}
	if m := s.memo.Load(); m != nil && m.eng == eng {
		return m
	}
	m := &memo{eng: eng, m: make(map[facts.Key]*memoEntry, 1024)}
	s.memo.Store(m)
	return m
}
