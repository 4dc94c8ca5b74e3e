package check

import (
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/extauthz/extauthz/internal/authn"
	"github.com/extauthz/extauthz/internal/credential"
	"github.com/extauthz/extauthz/internal/engine"
	"github.com/extauthz/extauthz/internal/policy"
)

// The decision memo. When a policy provably reads nothing but
// input.extauthz and data and calls no time- or I/O-dependent builtin
// (policy.Engine.Pure), its decision is a function of the resolved facts, so
// it is remembered per engine version, keyed by exactly those facts. A memo
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

type memoKey struct {
	route       string
	ce          string
	profile     string
	kind        credential.Kind
	via         credential.Via
	status      authn.Status
	identity    string
	pathProblem string
	clientIP    netip.Addr // zero when ipTraced
	ipTraced    bool       // the address is matched against each variant's tests
	browser     bool
	idempotency bool
	// The tenant headers' values: one header's name and value in the
	// first two fields (no allocation for the common case), more joined in
	// tenants.
	tenantName, tenantValue string
	tenants                 string
	method                  string
	path                    string
	noRoute                 bool
}

type memo struct {
	eng   *engine.Engine
	mu    sync.RWMutex
	m     map[memoKey]*memoEntry
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
func (m *memo) get(k memoKey, ip netip.Addr) *memoEntry {
	m.mu.RLock()
	e := m.m[k]
	m.mu.RUnlock()
	if !k.ipTraced {
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
	e = m.m[byAddress(k, ip)]
	m.mu.RUnlock()
	return e
}

// byAddress is traced key k for one address.
func byAddress(k memoKey, ip netip.Addr) memoKey {
	k.ipTraced, k.clientIP = false, ip
	return k
}

// put remembers o for k (and, for a traced key, the requests whose address
// answers o's tests alike; ip is this request's).
func (m *memo) put(k memoKey, o policy.Output, ip netip.Addr) *memoEntry {
	if k.ipTraced && len(o.IPTests) > maxTraceTests {
		k, o.IPTests = byAddress(k, ip), nil
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
	if k.ipTraced && n < maxVariants {
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
	m := &memo{eng: eng, m: make(map[memoKey]*memoEntry, 1024)}
	s.memo.Store(m)
	return m
}

func (r *request) memoKey() memoKey {
	k := memoKey{
		ce: r.ceKey, profile: r.profile,
		kind: r.cred.Kind, via: r.cred.Via, status: r.status,
		pathProblem: r.path.Problem,
		browser:     r.browser, idempotency: r.idempotency,
	}
	// An address the policy can trace: valid, and text net.ParseIP reads
	// (no zone), as the policy sees it.
	if r.purity.TracesClientIP && r.clientIP.IsValid() && r.clientIP.Zone() == "" {
		k.ipTraced = true
	} else {
		k.clientIP = r.clientIP
	}
	if r.route != nil {
		k.route = r.route.ID
	} else {
		k.noRoute = true
	}
	if pu := r.purity; pu.ReadsPath {
		k.path = r.path.Canonical
	}
	if r.purity.ReadsMethod {
		k.method = r.method
	}
	if r.identity != nil {
		k.identity = r.identity.Key()
	}
	switch len(r.tenantValues) {
	case 0:
	case 1:
		k.tenantName, k.tenantValue = r.tenantValues[0][0], r.tenantValues[0][1]
	default:
		var b strings.Builder
		for _, tv := range r.tenantValues {
			b.WriteString(tv[0])
			b.WriteByte(0)
			b.WriteString(tv[1])
			b.WriteByte(0)
		}
		k.tenants = b.String()
	}
	return k
}
