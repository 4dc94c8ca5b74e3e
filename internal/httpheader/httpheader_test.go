package httpheader

import "testing"

func TestNameValueUpstream(t *testing.T) {
	for s, want := range map[string]bool{"x-auth-subject": true, "x_a": true, "": false, "X-A": false, "x a": false, ":path": false, "x\r\n": false, "é": false} {
		if Name(s) != want {
			t.Errorf("Name(%q) = %v", s, !want)
		}
	}
	for s, want := range map[string]bool{"": true, "a b\tc": true, "zoë": true, "a\r\nx-injected: 1": false, "a\x00": false, "a\x7f": false, "a\x01": false, "caf\xe9": false, "\xff": false} {
		if Value(s) != want {
			t.Errorf("Value(%q) = %v", s, !want)
		}
	}
	for s, ok := range map[string]bool{"x-auth-subject": true, "x-user": true, ":path": false, ":authority": false, "host": false, "content-length": false, "connection": false, "transfer-encoding": false, "te": false, "x bad": false, "X-Up": false} {
		if (Upstream(s) == nil) != ok {
			t.Errorf("Upstream(%q) = %v", s, Upstream(s))
		}
	}
}
