// Package clientip decides which address an IP allowlist may trust.
//
// With TrustedHops 0 (Envoy is the edge, use_remote_address: true) the client
// is the CheckRequest's source address, the TCP peer. With N trusted hops the
// client is the (N+1)-th entry from the right of x-forwarded-for, because Envoy
// (use_remote_address: true) has already appended the peer it saw; see
// docs/envoy.md. Anything a client can write itself is never trusted beyond
// that.
package clientip

import (
	"net/netip"
	"strings"
)

// Resolver picks the client address.
type Resolver struct {
	TrustedHops int
}

// Resolve returns the client address, unmapped (::ffff:a.b.c.d becomes
// a.b.c.d) and without zone. ok is false when no address could be parsed.
func (r Resolver) Resolve(source, xff string) (netip.Addr, bool) {
	if r.TrustedHops > 0 && xff != "" {
		if a, ok := nthFromRight(xff, r.TrustedHops); ok {
			return a, true
		}
	}
	return Parse(source)
}

// Parse reads one address the way Envoy's XFF parser does: trimmed, no port.
func Parse(s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(strings.TrimSpace(s))
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap().WithZone(""), true
}

// nthFromRight returns entry n (0 = rightmost) of a comma-separated list.
func nthFromRight(list string, n int) (netip.Addr, bool) {
	end := len(list)
	for i := len(list) - 1; i >= -1; i-- {
		if i >= 0 && list[i] != ',' {
			continue
		}
		if n == 0 {
			return Parse(list[i+1 : end])
		}
		n--
		end = i
	}
	return netip.Addr{}, false
}
