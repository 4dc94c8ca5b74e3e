package authn

import "unicode/utf8"

// HeaderSafe reports whether an identity value (a key id, subject, plan or
// tenant id) may reach the upstream as an identity header and the logs as
// is: valid UTF-8 with no control character (C0, DEL or C1). A credential
// carrying any other value is refused, never sent on: Envoy would turn a
// header with CR, LF or NUL into a bare 500 (or, unvalidated, into header
// injection).
func HeaderSafe[T string | []byte](s T) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return false
		} else if c >= 0x80 {
			return headerSafeUTF8(string(s[i:]))
		}
	}
	return true
}

func headerSafeUTF8(s string) bool {
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 || r < 0x20 || r >= 0x7f && r <= 0x9f {
			return false // invalid UTF-8, or a control character
		}
		i += n
	}
	return true
}

// ScopeToken reports whether s is an OAuth 2.0 scope-token (RFC 6749,
// section 3.3): one or more of the printable ASCII characters other than
// space, '"' and '\'. Scopes travel space-separated (x-auth-scopes, the
// "scope" claim), so a scope with a space in it would read as two.
func ScopeToken[T string | []byte](s T) bool {
	if len(s) == 0 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}
