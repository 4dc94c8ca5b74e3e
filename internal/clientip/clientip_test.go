package clientip

import "testing"

func TestResolve(t *testing.T) {
	cases := []struct {
		name        string
		hops        int
		source, xff string
		want        string
	}{
		{"edge uses peer", 0, "203.0.113.7", "", "203.0.113.7"},
		{"edge ignores spoofed xff", 0, "203.0.113.7", "10.0.0.1, 192.0.2.1", "203.0.113.7"},
		{"ipv4-mapped peer unmapped", 0, "::ffff:10.1.2.3", "", "10.1.2.3"},
		{"ipv6 peer", 0, "2001:db8::1", "", "2001:db8::1"},
		{"zone dropped", 0, "fe80::1%eth0", "", "fe80::1"},
		{"one trusted hop", 1, "10.0.0.9", "198.51.100.4, 10.0.0.2, 10.0.0.9", "10.0.0.2"},
		{"one trusted hop spoof prefix", 1, "10.0.0.9", "1.1.1.1,198.51.100.4,10.0.0.9", "198.51.100.4"},
		{"two trusted hops", 2, "10.0.0.9", "198.51.100.4, 10.0.0.2, 10.0.0.9", "198.51.100.4"},
		{"too few entries falls back to peer", 3, "10.0.0.9", "10.0.0.2, 10.0.0.9", "10.0.0.9"},
		{"unparsable entry falls back", 1, "10.0.0.9", "garbage, 10.0.0.9", "10.0.0.9"},
		{"mapped in xff", 1, "10.0.0.9", "::ffff:192.0.2.5, 10.0.0.9", "192.0.2.5"},
	}
	for _, c := range cases {
		got, ok := Resolver{TrustedHops: c.hops}.Resolve(c.source, c.xff)
		if !ok || got.String() != c.want {
			t.Errorf("%s: got %v %v, want %s", c.name, got, ok, c.want)
		}
	}
	if _, ok := (Resolver{}).Resolve("not-an-ip", ""); ok {
		t.Error("unparsable source must not resolve")
	}
	if _, ok := (Resolver{}).Resolve("", ""); ok {
		t.Error("empty source must not resolve")
	}
}

func FuzzResolve(f *testing.F) {
	f.Add("127.0.0.1", "1.2.3.4, 5.6.7.8", 1)
	f.Add("::ffff:1.2.3.4", ",,,", 3)
	f.Fuzz(func(t *testing.T, src, xff string, hops int) {
		if hops < 0 || hops > 64 {
			return
		}
		a, ok := Resolver{TrustedHops: hops}.Resolve(src, xff)
		if ok && (!a.IsValid() || a.Is4In6() || a.Zone() != "") {
			t.Fatalf("resolved %v from %q %q", a, src, xff)
		}
	})
}
