// Package httpheader says which header names and values the sidecar may
// hand Envoy to set. Envoy (validate_mutations) answers a check whose
// mutation it cannot apply with a bare 500 and no body, and without that
// option a CR or LF would split the header: so every name and value that
// reaches a CheckResponse from configuration or a policy is checked here,
// at load or before the response is built, and refused with a deny in the
// API's envelope instead.
package httpheader

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Name reports whether name is a lower-case HTTP token (RFC 9110, field
// names as Envoy keeps them).
func Name(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// Value reports whether v may be sent as a header value: no control
// character but horizontal tab (no NUL, CR, LF: RFC 9110 field-value, as
// HTTP/2 enforces it), and valid UTF-8 (a CheckResponse's strings are
// protobuf strings: one that is not UTF-8 fails the whole reply's
// encoding, and Envoy would get a gRPC error instead of the decision).
func Value(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c < 0x20 && c != '\t' || c == 0x7f {
			return false
		}
	}
	return utf8.ValidString(v)
}

// Upstream says why name may not be set on the request Envoy sends
// upstream (nil when it may): it must be a lower-case token, and not a
// pseudo-header (":path" would send another path than the one decided on),
// host, content-length or a hop-by-hop header.
func Upstream(name string) error {
	switch {
	case strings.HasPrefix(name, ":"):
		return fmt.Errorf("%q is a pseudo-header: the upstream would get another request than the one decided on", name)
	case !Name(name):
		return fmt.Errorf("%q is not a lower-case header name (an HTTP token)", name)
	}
	switch name {
	case "host", "content-length", "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "upgrade":
		return fmt.Errorf("%q cannot be set on the upstream request", name)
	}
	return nil
}

// Credential reports whether name (lower-case) carries credentials whatever
// the settings say: its value must never be echoed, logged or set as an
// identity header. The API-key header a policy names is checked beside it.
func Credential(name string) bool {
	return name == "authorization" || name == "proxy-authorization" || name == "cookie"
}
