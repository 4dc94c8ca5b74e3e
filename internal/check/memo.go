package check

import (
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

const memoCap = 65536

type memoKey struct {
	route       string
	ce          string
	profile     string
	kind        credential.Kind
	via         credential.Via
	status      authn.Status
	identity    string
	pathProblem string
	clientIP    netip.Addr
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
	eng *engine.Engine
	mu  sync.RWMutex
	m   map[memoKey]*memoEntry
}

// memoEntry is a remembered decision, plus the parts of its OK response that
// depend only on the key (identity, route, tenant): built on first use.
type memoEntry struct {
	out  policy.Output
	ok   atomic.Pointer[okParts]
	meta atomic.Pointer[[]byte] // encoded dynamic metadata but decision_id (see encode.go)
	deny atomic.Pointer[denyParts]
}

// okParts are read-only once stored; responses share them.
type okParts struct {
	set    []*corev3.HeaderValueOption
	remove []string
	head   []byte // encoded status and ok_response (see encode.go)
}

func (m *memo) get(k memoKey) *memoEntry {
	m.mu.RLock()
	e := m.m[k]
	m.mu.RUnlock()
	return e
}

func (m *memo) put(k memoKey, o policy.Output) *memoEntry {
	e := &memoEntry{out: o}
	m.mu.Lock()
	if len(m.m) >= memoCap {
		clear(m.m)
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
		pathProblem: r.path.Problem, clientIP: r.clientIP,
		browser: r.browser, idempotency: r.idempotency,
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
