package loadtest

import (
	"os"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
)

func TestPercentile(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = i + 1
	}
	cases := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one sample", ms(7), 99, 7 * time.Millisecond},
		{"median of odd", ms(1, 2, 3, 4, 5), 50, 3 * time.Millisecond},
		{"median of even is the lower middle", ms(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{"p90 of 1..100", ms(hundred...), 90, 90 * time.Millisecond},
		{"p99 of 1..100", ms(hundred...), 99, 99 * time.Millisecond},
		{"p100 is the max", ms(hundred...), 100, 100 * time.Millisecond},
		{"p99 of 10 is the max", ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 99, 10 * time.Millisecond},
		{"tiny p is the min", ms(1, 2, 3), 0.1, time.Millisecond},
	}
	for _, c := range cases {
		if got := Percentile(c.sorted, c.p); got != c.want {
			t.Errorf("%s: Percentile(p=%v) = %v, want %v", c.name, c.p, got, c.want)
		}
	}
}

func TestSummarizeSorts(t *testing.T) {
	s := []time.Duration{5, 1, 4, 2, 3}
	l := Summarize(s)
	if l.N != 5 || l.P50 != 3 || l.Max != 5 || l.P99 != 5 {
		t.Fatalf("Summarize = %+v", l)
	}
}

func TestParseProcStat(t *testing.T) {
	// A command name with spaces and parentheses; utime=1234, stime=567.
	line := "4242 (my (odd) proc) S 1 4242 4242 0 -1 4194560 12345 0 0 0 1234 567 0 0 20 0 9 0 100 123456789 2500 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"
	got, err := ParseProcStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if got.UTime != 1234 || got.STime != 567 || got.Ticks() != 1801 {
		t.Fatalf("ParseProcStat = %+v", got)
	}
	for _, bad := range []string{"", "4242 no-parens S 1", "4242 (x) S 1 2 3", "4242 (x) S 1 2 3 4 5 6 7 8 9 10 x 5"} {
		if _, err := ParseProcStat([]byte(bad)); err == nil {
			t.Errorf("ParseProcStat(%q): no error", bad)
		}
	}
	// The real thing parses and grows with work.
	a, err := ReadProcCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		b, err := ReadProcCPU(os.Getpid())
		if err != nil {
			t.Fatal(err)
		}
		if b.Ticks() > a.Ticks() {
			return
		}
		x := 0
		for i := range 10_000_000 {
			x += i
		}
		_ = x
	}
	t.Fatal("own CPU time never advanced")
}

func TestParseProcStatus(t *testing.T) {
	status := "Name:\textauthz\nUmask:\t0022\nState:\tS (sleeping)\nVmPeak:\t 1300000 kB\nVmSize:\t 1290000 kB\nVmHWM:\t   51200 kB\nVmRSS:\t   43008 kB\nThreads:\t9\n"
	m, err := ParseProcStatus([]byte(status))
	if err != nil {
		t.Fatal(err)
	}
	if m.Peak != 50<<20 || m.RSS != 42<<20 {
		t.Fatalf("ParseProcStatus = %+v", m)
	}
	if _, err := ParseProcStatus([]byte("Name:\tkthreadd\nState:\tS\n")); err == nil {
		t.Error("no VmRSS/VmHWM: no error")
	}
	if _, err := ParseProcStatus([]byte("VmHWM:\t12 MB\nVmRSS:\t1 kB\n")); err == nil {
		t.Error("odd unit: no error")
	}
	self, err := ReadProcMem(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if self.RSS <= 0 || self.Peak < self.RSS {
		t.Fatalf("own memory %+v", self)
	}
}

func TestClockTicks(t *testing.T) {
	hz, assumed := ClockTicks()
	if hz <= 0 {
		t.Fatalf("ClockTicks = %d", hz)
	}
	t.Logf("CLK_TCK %d (assumed %v)", hz, assumed)
}

func TestMixes(t *testing.T) {
	for _, name := range MixNames() {
		m, err := NewMix(name, "a.b.c")
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		counts := map[string]int{}
		for _, i := range m.Schedule {
			counts[m.Cases[i].Name]++
		}
		if name == ScaleMix {
			continue // one case per synthetic key; see TestScaleMix
		}
		if name == ManyIPsMix {
			if len(m.Cases) != 2 || m.Cases[0].FreshSource == nil || m.Cases[1].FreshSource == nil || counts["apikey_allow_fresh_ip"] != counts["allowlisted_fresh_ip"] {
				t.Errorf("%s: %v", name, counts)
			}
			continue
		}
		if name != "blend" {
			if len(m.Cases) != 1 || counts[name] != len(m.Schedule) {
				t.Errorf("%s: %v", name, counts)
			}
			continue
		}
		want := map[string]int{"apikey_allow": 70, "jwt_allow": 15, "deny_missing": 4, "deny_unknown_key": 4, "deny_tenant": 4, "deny_scope": 3}
		if len(m.Schedule) != 100 || len(counts) != len(want) {
			t.Fatalf("blend: %d requests, %v", len(m.Schedule), counts)
		}
		for k, v := range want {
			if counts[k] != v {
				t.Errorf("blend: %s %d times, want %d", k, counts[k], v)
			}
		}
	}
	if _, err := NewMix("jwt_allow", ""); err == nil {
		t.Error("jwt_allow without a JWT: no error")
	}
	if _, err := NewMix("nope", ""); err == nil {
		t.Error("unknown mix: no error")
	}
	// Envoy-shaped request: lower-case headers with the pseudo-headers.
	m, _ := NewMix("deny_scope", "")
	h := m.Cases[0].Request().GetAttributes().GetRequest().GetHttp().GetHeaders()
	for _, k := range []string{":authority", ":method", ":path", ":scheme", "user-agent", "accept", "x-forwarded-proto", "x-forwarded-for", "x-envoy-external-address", "x-request-id", "x-api-key", "x-tenant-id", "idempotency-key"} {
		if _, ok := h[k]; !ok {
			t.Errorf("header %s missing", k)
		}
	}
	if h[":method"] != "POST" || h[":path"] != "/v1/orders" {
		t.Errorf("pseudo-headers %s %s", h[":method"], h[":path"])
	}
}

func TestDecision(t *testing.T) {
	ok := &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(codes.OK)}}
	deny := func(code typev3.StatusCode) *authv3.CheckResponse {
		return &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(codes.PermissionDenied)},
			HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{Status: &typev3.HttpStatus{Code: code}}}}
	}
	for _, c := range []struct {
		r    *authv3.CheckResponse
		want int
	}{
		{ok, 200}, {&authv3.CheckResponse{}, 200}, {deny(typev3.StatusCode_Unauthorized), 401}, {deny(typev3.StatusCode_Forbidden), 403},
		{&authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(codes.PermissionDenied)}}, 403},
	} {
		if got := Decision(c.r); got != c.want {
			t.Errorf("Decision(%v) = %d, want %d", c.r, got, c.want)
		}
		// The driver reads the same decision from the encoded reply.
		b, err := proto.Marshal(c.r)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := DecisionOf(b); err != nil || got != c.want {
			t.Errorf("DecisionOf(%v) = %d, %v; want %d", c.r, got, err, c.want)
		}
	}
}

// A reply sent as two concatenated messages (the sidecar's memoized
// responses) is read as their merge, as any protobuf parser reads it.
func TestDecisionOfMergedReply(t *testing.T) {
	first, _ := proto.Marshal(&authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(codes.PermissionDenied)},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{Status: &typev3.HttpStatus{Code: typev3.StatusCode_Unauthorized}}}})
	second, _ := proto.Marshal(&authv3.CheckResponse{HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{Body: "{}"}}})
	if got, err := DecisionOf(append(first, second...)); err != nil || got != 401 {
		t.Fatalf("merged deny: %d, %v; want 401", got, err)
	}
}

func TestDecisionOfMalformed(t *testing.T) {
	for _, b := range [][]byte{{0x0a}, {0x0a, 0x05, 0x08}, {0x12, 0x02, 0x0a, 0x09}, {0xff}} {
		if got, err := DecisionOf(b); err == nil {
			t.Errorf("DecisionOf(%x) = %d, no error", b, got)
		}
	}
}

func TestParseScale(t *testing.T) {
	var s Scale
	if err := ParseScale("keys=1M, tenants=10k,routes=1000", &s); err != nil {
		t.Fatal(err)
	}
	if s != (Scale{Keys: 1000000, Tenants: 10000, Routes: 1000}) {
		t.Fatalf("%+v", s)
	}
	if err := ParseScale("keys=5", &s); err != nil || s.Keys != 5 || s.Tenants != 10000 {
		t.Fatalf("%+v %v", s, err)
	}
	for _, bad := range []string{"keys", "users=3", "keys=-1", "keys=x"} {
		if err := ParseScale(bad, &s); err == nil {
			t.Errorf("ParseScale(%q): no error", bad)
		}
	}
}

// TestMergeRounds: rounds add up their checks and CPU; the percentiles are
// the median round's.
func TestMergeRounds(t *testing.T) {
	ms := time.Millisecond
	round := func(sent int, cpu, p50 time.Duration) Level {
		return Level{Concurrency: 16, DecisionsChecked: true, ServerCPU: cpu,
			Outcome: Outcome{Sent: sent, Elapsed: time.Second, Latency: Latencies{N: sent, P50: p50, P99: 10 * p50, Max: 20 * p50}}}
	}
	m := mergeRounds([]Level{round(100, 10*ms, 1*ms), round(300, 20*ms, 3*ms), round(200, 30*ms, 2*ms)})
	if m.Sent != 600 || m.ServerCPU != 60*ms || m.CPUPerCheck != 100*time.Microsecond || m.Elapsed != 3*time.Second {
		t.Errorf("sums: %+v", m)
	}
	if m.Latency.P50 != 2*ms || m.Latency.P99 != 20*ms || m.Latency.Max != 60*ms || m.Latency.N != 600 || !m.DecisionsChecked || m.Concurrency != 16 {
		t.Errorf("latency %+v", m.Latency)
	}
}

func TestFreshAddr(t *testing.T) {
	seen := map[string]bool{}
	for _, seq := range []uint64{0, 1, 255, 256, 65535, 65536, 1<<24 - 1} {
		a := FreshAddr(seq)
		if seen[a] || !strings.HasPrefix(a, "10.") {
			t.Errorf("FreshAddr(%d) = %s", seq, a)
		}
		seen[a] = true
	}
}
