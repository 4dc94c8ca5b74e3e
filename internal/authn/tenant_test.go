package authn

import "testing"

func TestIntegerID(t *testing.T) {
	for n, want := range map[string]bool{
		"0": true, "42": true, "-7": true, "12345678901234567890123": true,
		"": false, "-": false, "042": false, "4.2e1": false, "42.0": false, "1e3": false,
		"+42": false, "-0": false, " 42": false, "42 ": false, "0x2a": false, "NaN": false, "--1": false,
	} {
		if got := IntegerID(n); got != want {
			t.Errorf("IntegerID(%q) = %v, want %v", n, got, want)
		}
	}
}
