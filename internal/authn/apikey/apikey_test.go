package apikey

import (
	"encoding/json"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/authn"
)

func mustParse(t *testing.T, js string) *Store {
	t.Helper()
	s, err := Parse(json.RawMessage(js))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestLookup(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	js := `{
	  "` + Hash("good") + `": {"id":"k1","subject":"svc-a","tenants":["42"],"scopes":["orders:read"],"expires_at":"2027-01-01T00:00:00Z","plan":"free"},
	  "` + Hash("old") + `": {"id":"k2","expires_at":"2026-11-22T12:00:00Z"},
	  "` + Hash("gone") + `": {"id":"k3","status":"revoked"},
	  "` + Hash("paused") + `": {"id":"k4","status":"suspended"},
	  "` + Hash("ws") + `": {"id":"k5","tenants":{"workspace":["w1"],"brand":["b1",7]}}
	}`
	s := mustParse(t, js)
	cases := []struct {
		key  string
		want authn.Status
		id   string
	}{
		{"good", authn.Valid, "k1"},
		{"old", authn.Expired, "k2"}, // expiry instant itself is expired
		{"gone", authn.Revoked, "k3"},
		{"paused", authn.Suspended, "k4"},
		{"ws", authn.Valid, "k5"},
		{"nope", authn.Unknown, ""},
		{"", authn.Unknown, ""},
		{Hash("good"), authn.Unknown, ""}, // the stored digest is not a key
	}
	for _, c := range cases {
		r := s.Lookup(c.key, now)
		if r.Status != c.want {
			t.Errorf("Lookup(%q) = %s, want %s", c.key, r.Status, c.want)
		}
		if c.id != "" && (r.Identity == nil || r.Identity.KeyID != c.id) {
			t.Errorf("Lookup(%q) identity = %+v", c.key, r.Identity)
		}
	}
	id := s.Lookup("good", now).Identity
	if id.Subject != "svc-a" || id.Plan != "free" || id.Tenants["tenant"][0] != "42" {
		t.Errorf("identity = %+v", id)
	}
	if got := s.Lookup("ws", now).Identity.Tenants["brand"]; len(got) != 2 || got[1] != "7" {
		t.Errorf("brand tenants = %v", got)
	}
	if v := id.Value().String(); !strings.Contains(v, `"orders:read"`) || strings.Contains(v, "good") {
		t.Errorf("policy value = %s", v)
	}
}

func TestParseErrorsNameTheField(t *testing.T) {
	cases := []struct{ js, want string }{
		{`{"plaintext-key": {"id":"a"}}`, `api_keys[<entry with id "a">]: key must be the lower-case hex SHA-256`},
		{`{"` + strings.ToUpper(Hash("x")) + `": {"id":"a"}}`, `lower-case hex SHA-256`},
		{`{"` + Hash("x") + `": {}}`, `.id: required`},
		{`{"` + Hash("x") + `": {"id":"a","status":"paused"}}`, `.status: "paused" is not one of`},
		{`{"` + Hash("x") + `": {"id":"a","expires_at":"tomorrow"}}`, `.expires_at: not an RFC 3339 time`},
		{`{"` + Hash("x") + `": {"id":"a","allowed_cidrs":["10.0.0.0/8","nope"]}}`, `.allowed_cidrs[1]: not a CIDR`},
		{`{"` + Hash("x") + `": {"id":"a","tenants":"42"}}`, `.tenants: want a list`},
		{`{"` + Hash("x") + `": {"id":"a","colour":"red"}}`, `api_keys["` + Hash("x")[:12] + `…"].colour: unknown field (known: id, subject,`},
		{`{"` + Hash("x") + `": {"id":"a"}, "` + Hash("y") + `": {"id":"a"}}`, `.id: "a" already used`},
		{`{"` + Hash("x") + `": {"id":"a"}, "` + Hash("x") + `": {"id":"b"}}`, `api_keys["` + Hash("x")[:12] + `…"]: listed twice`},
		{`{"` + Hash("x") + `": {"id":"a","scopes":"orders:read"}}`, `api_keys["` + Hash("x")[:12] + `…"].scopes: must be an array, got "orders:read"`},
		{`{"xa_live_secret": {"id":"a","scopes":"orders:read"}}`, `api_keys[<entry 1>].scopes: must be an array`},
		{`{"` + Hash("x") + `": {"id":"a","tenants":{"tenant":[100000000000000001, 2.5]}}}`, `.tenants: tenant: ids must be strings or integers, not 2.5`},
		{`{"` + Hash("x") + `": {"id":"a","tenants":[1e3]}}`, `.tenants: ids must be strings or integers, not 1e3`},
		{`{"` + Hash("x") + `": {"id":"a","tenants":{"workspace":["w\n1"]}}}`, `.tenants: workspace: id "w\n1" is empty, longer than 256 bytes, or has a comma, a control character`},
		{`{"` + Hash("x") + `": {"id":"a","tenants":["4,2"]}}`, `.tenants: id "4,2" is empty`},
		{`{"` + Hash("x") + `": {"id":"a","subject":"` + strings.Repeat("s", 257) + `"}}`, `.subject: 257 bytes; at most 256`},
		{`{"` + Hash("x") + `": {"id":"a","scopes":[` + strings.Repeat(`"s",`, 256) + `"s"]}}`, `.scopes: 257 scopes; at most 256`},
		{`{"` + Hash("x") + `": {"id":"a","tenants":{"":["w1"]}}}`, `.tenants: a dimension name must not be empty`},
		{`{"` + Hash("x") + `": {"id":"a","scopes":["orders:read","x admin"]}}`, `.scopes[1]: "x admin" is not a scope`},
		{`{"` + Hash("x") + `": {"id":"a","subject":"svc\r\nX-Evil: 1"}}`, `.subject: "svc\r\nX-Evil: 1" has a control character`},
		{`{"` + Hash("x") + `": {"id":"a\u0000"}}`, `.id: "a\x00" has a control character`},
		{`{"` + Hash("x") + `": {"id":"a","status":"revoked","status":"active"}}`, `.status: given twice`},
		{`{"` + Hash("x") + `": {"id":"a","status":"revoked","Status":"active"}}`, `.Status: given twice`},
		{`{"` + Hash("x") + `": {"id":"a","tenants":{"workspace":["w1"],"workspace":["w2"]}}}`, `.tenants: workspace: given twice`},
		{`{"` + Hash("x") + `": {"id":"a","subject":"svc` + "\xff" + `"}}`, `: not valid UTF-8`},
		{`["` + Hash("x") + `"]`, `api_keys: must be an object`},
		{`{"` + Hash("x") + `": {"id":"a"}`, `api_keys: `},
	}
	for _, c := range cases {
		_, err := Parse(json.RawMessage(c.js))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Parse(%s) error = %v, want it to contain %q", c.js, err, c.want)
		}
		if err != nil && (strings.Contains(err.Error(), "plaintext-key") || strings.Contains(err.Error(), "xa_live_secret")) {
			t.Errorf("Parse(%s) error echoes a plaintext key: %v", c.js, err)
		}
	}
}

// A key's plan must be one the limits define: an unknown one (a typo) would
// leave the key without any quota.
func TestCheckPlans(t *testing.T) {
	js := `{"` + Hash("x") + `": {"id":"a","plan":"starter"}, "` + Hash("y") + `": {"id":"b","plan":"gold"}, "` + Hash("z") + `": {"id":"c"}}`
	s, err := Parse(json.RawMessage(js))
	if err != nil {
		t.Fatal(err)
	}
	known := func(p string) bool { return p == "starter" }
	err = s.CheckPlans(known, 10)
	if err == nil || err.Error() != `api_keys["`+Hash("y")[:12]+`…"].plan: unknown plan "gold"` {
		t.Errorf("CheckPlans: %v", err)
	}
	js = `{"` + Hash("x") + `": {"id":"a","plan":"p1"}, "` + Hash("y") + `": {"id":"b","plan":"p2"}, "` + Hash("z") + `": {"id":"c","plan":"p3"}}`
	s, _ = Parse(json.RawMessage(js))
	if err := s.CheckPlans(known, 1); err == nil || !strings.Contains(err.Error(), "api_keys: 2 more keys with an unknown plan") {
		t.Errorf("CheckPlans capped: %v", err)
	}
}

// Field errors of several records are all reported, not just the first.
func TestParseReportsEveryRecordsUnknownField(t *testing.T) {
	js := `{"` + Hash("x") + `": {"id":"a","scopse":["r"]}, "` + Hash("y") + `": {"id":"b","plna":"free"}}`
	_, err := Parse(json.RawMessage(js))
	if err == nil || !strings.Contains(err.Error(), `.scopse: unknown field`) || !strings.Contains(err.Error(), `.plna: unknown field`) {
		t.Errorf("Parse: %v", err)
	}
}

func TestParseReportsEveryProblem(t *testing.T) {
	js := `{"` + Hash("x") + `": {"status":"nope","expires_at":"x"}}`
	_, err := Parse(json.RawMessage(js))
	for _, want := range []string{".id:", ".status:", ".expires_at:"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
}

func BenchmarkLookup(b *testing.B) {
	for _, n := range []int{10, 100_000} {
		m := map[string]Record{}
		for i := range n {
			m[Hash("key-"+string(rune('a'+i%26))+strings.Repeat("x", i%7)+itoa(i))] = Record{ID: "id" + itoa(i)}
		}
		raw, _ := json.Marshal(m)
		s, err := Parse(raw)
		if err != nil {
			b.Fatal(err)
		}
		now := time.Now()
		b.Run(itoa(n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				s.Lookup("key-b1", now)
			}
		})
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// TestSharedValuesStayDistinct: records share equal tenant sets and scope
// lists in memory, but lists that merely look alike when joined never do.
func TestSharedValuesStayDistinct(t *testing.T) {
	js := `{
	  "` + Hash("a") + `": {"id":"a","tenants":["42"],"scopes":["x,y"]},
	  "` + Hash("b") + `": {"id":"b","tenants":["42"],"scopes":["x","y"]},
	  "` + Hash("c") + `": {"id":"c","tenants":[42],"scopes":["x","y"],"allowed_cidrs":["10.0.0.0/8"]},
	  "` + Hash("d") + `": {"id":"d","tenants":["43"],"scopes":["xy"]}
	}`
	s := mustParse(t, js)
	get := func(k string) *authn.Identity { return s.Lookup(k, time.Now()).Identity }
	a, b, c, d := get("a"), get("b"), get("c"), get("d")
	if len(a.Scopes) != 1 || a.Scopes[0] != "x,y" || len(b.Scopes) != 2 || len(d.Scopes) != 1 || d.Scopes[0] != "xy" {
		t.Fatalf("scopes a=%q b=%q d=%q", a.Scopes, b.Scopes, d.Scopes)
	}
	if a.Tenants["tenant"][0] != "42" || c.Tenants["tenant"][0] != "42" || d.Tenants["tenant"][0] != "43" {
		t.Fatalf("tenants a=%v c=%v d=%v", a.Tenants, c.Tenants, d.Tenants)
	}
	if len(b.AllowedCIDRs) != 0 || len(c.AllowedCIDRs) != 1 {
		t.Fatalf("cidrs b=%v c=%v", b.AllowedCIDRs, c.AllowedCIDRs)
	}
	if &a.Tenants["tenant"][0] != &b.Tenants["tenant"][0] {
		t.Error("equal tenant sets are not shared")
	}
}

// TestManyKeysFewObjects: a store of 100,000 keys is a handful of heap
// objects, not several per key, so the garbage collector's work per cycle
// does not grow with the key count (every check would pay for it).
func TestManyKeysFewObjects(t *testing.T) {
	const n = 100000
	var b strings.Builder
	b.WriteString("{")
	for i := range n {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `%q:{"id":"k%d","subject":"svc:%d","tenants":["%d"],"scopes":["orders:read"],"plan":"pro"}`, Hash(strconv.Itoa(i)), i, i, i%50)
	}
	b.WriteString("}")
	raw := json.RawMessage(b.String())
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	s, err := Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if s.Len() != n {
		t.Fatalf("%d keys", s.Len())
	}
	if live := int64(after.HeapObjects) - int64(before.HeapObjects); live > 5000 {
		t.Errorf("%d keys hold %d heap objects", n, live)
	}
	// Identities are built on first use and kept: the same one every lookup.
	res := s.Lookup("12345", time.Now())
	if res.Status != authn.Valid || res.Identity.KeyID != "k12345" || res.Identity.Subject != "svc:12345" ||
		res.Identity.Plan != "pro" || res.Identity.Tenants["tenant"][0] != "45" || res.Identity != s.Lookup("12345", time.Now()).Identity {
		t.Fatalf("lookup: %+v", res)
	}
	runtime.KeepAlive(s)
}

// TestMemoryAfterTrafficIsBounded: serving every key of a large store once
// keeps a bounded number of identities, none holding its policy value, so
// the heap after traffic does not grow with the keys served (keeping every
// identity with its value cost about 2.4 KiB per key served: 2.3 GiB for a
// million). The identities of the 65,536 keys served last (as many as the
// decision memo remembers decisions for) are kept: looked up again, each is
// the same identity, so its remembered decision still serves it. A key
// looked up again after its identity was evicted gets one with the same
// content.
func TestMemoryAfterTrafficIsBounded(t *testing.T) {
	const recent = 65536
	n := MaxIdentities + 1000
	var b strings.Builder
	b.WriteString("{")
	for i := range n {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `%q:{"id":"k%d","tenants":{"workspace":["w%d"]},"scopes":["orders:read","orders:write"],"plan":"pro"}`, Hash(strconv.Itoa(i)), i, i)
	}
	b.WriteString("}")
	s, err := Parse(json.RawMessage(b.String()))
	if err != nil {
		t.Fatal(err)
	}
	b = strings.Builder{}
	now := time.Now()
	first := s.Lookup("0", now).Identity
	firstKey := first.Key()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	last := make([]*authn.Identity, 0, recent)
	for i := range n {
		res := s.Lookup(strconv.Itoa(i), now)
		if res.Status != authn.Valid || res.Identity.KeyID != "k"+strconv.Itoa(i) {
			t.Fatalf("key %d: %s %+v", i, res.Status, res.Identity)
		}
		_ = res.Identity.Value() // what an evaluation asks of it
		if i >= n-recent {
			last = append(last, res.Identity)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	for j, id := range last {
		if i := n - recent + j; s.Lookup(strconv.Itoa(i), now).Identity != id {
			t.Fatalf("key %d, among the %d served last, got a new identity", i, recent)
		}
	}
	if grown := int64(after.HeapAlloc) - int64(before.HeapAlloc); grown > int64(n)*256 {
		t.Errorf("heap grew %d bytes (%d per key) serving %d keys once; want at most 256 per key", grown, grown/int64(n), n)
	}
	again := s.Lookup("0", now).Identity
	if again.Key() != firstKey || again.KeyID != "k0" || again.Tenants["workspace"][0] != "w0" {
		t.Errorf("key 0 after eviction: %s; want %s", again.Key(), firstKey)
	}
	if again != s.Lookup("0", now).Identity {
		t.Error("a key looked up twice in a row got two identities")
	}
	runtime.KeepAlive(first)
	runtime.KeepAlive(s)
}

// TestConcurrentFirstLookups: keys looked up for the first time from many
// goroutines at once all get one identity (run with -race).
func TestConcurrentFirstLookups(t *testing.T) {
	s := mustParse(t, `{"`+Hash("a")+`":{"id":"a"},"`+Hash("b")+`":{"id":"b","status":"revoked"}}`)
	var wg sync.WaitGroup
	got := make([]*authn.Identity, 16)
	for i := range got {
		wg.Go(func() {
			key := "a"
			if i%2 == 1 {
				key = "b"
			}
			got[i] = s.Lookup(key, time.Now()).Identity
		})
	}
	wg.Wait()
	for i, id := range got {
		if id != got[i%2] || id.KeyID != string(rune('a'+i%2)) {
			t.Fatalf("lookup %d: identity %p %q, want %p", i, id, id.KeyID, got[i%2])
		}
	}
	if s.Lookup("b", time.Now()).Status != authn.Revoked {
		t.Fatal("revoked key not revoked")
	}
}

// Integer tenant ids keep their digits in both forms: a float64 on the way
// would make 100000000000000001 grant tenant 100000000000000000.
func TestTenantIDsAreExact(t *testing.T) {
	for _, raw := range []string{`[100000000000000001, "w1"]`, `{"tenant":[100000000000000001, "w1"]}`} {
		got, err := ParseTenants(json.RawMessage(raw))
		if err != nil {
			t.Fatalf("ParseTenants(%s): %v", raw, err)
		}
		if want := []string{"100000000000000001", "w1"}; !slices.Equal(got[authn.DefaultDimension], want) {
			t.Errorf("ParseTenants(%s) = %q, want tenant %q", raw, got, want)
		}
	}
}
