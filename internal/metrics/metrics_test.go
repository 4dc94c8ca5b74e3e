package metrics

import (
	"context"
	"time"

	"strings"
	"testing"

	"github.com/extauthz/extauthz/internal/decision"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestDecisionLogUpload(t *testing.T) {
	m := New(nil)
	if n, err := testutil.GatherAndCount(m.Registry, "extauthz_decision_log_upload_dropped_total"); err != nil || n != 0 {
		t.Fatalf("without an uploader: %d series, %v", n, err)
	}
	m.SetDecisionLogUpload(func() DecisionLogUpload {
		return DecisionLogUpload{QueueFull: 3, BufferFull: 2, ChunksUploaded: 5, ChunksFailed: 1}
	})
	want := `# HELP extauthz_decision_log_upload_chunks_total Gzip'd batches of decisions sent to the decision-log service, by result (uploaded, failed: kept and retried).
# TYPE extauthz_decision_log_upload_chunks_total counter
extauthz_decision_log_upload_chunks_total{result="failed"} 1
extauthz_decision_log_upload_chunks_total{result="uploaded"} 5
`
	if err := testutil.GatherAndCompare(m.Registry, strings.NewReader(want), "extauthz_decision_log_upload_chunks_total"); err != nil {
		t.Error(err)
	}
	if n, _ := testutil.GatherAndCount(m.Registry, "extauthz_decision_log_upload_dropped_total"); n != 4 {
		t.Errorf("dropped series = %d, want 4", n)
	}
}

// Checks are counted by outcome, reason and profile, and timed by outcome,
// each series appearing with its first check.
func TestObserveChecks(t *testing.T) {
	m := New(nil)
	if n, _ := testutil.GatherAndCount(m.Registry, "extauthz_checks_total", "extauthz_check_duration_seconds"); n != 0 {
		t.Fatalf("%d series before any check", n)
	}
	for range 3 {
		m.Observe(context.Background(), &decision.Decision{Allow: true, Reason: decision.OK, Profile: "default"}, 30*time.Microsecond)
	}
	m.Observe(context.Background(), &decision.Decision{Reason: decision.KeyInvalid, Profile: "default"}, time.Millisecond)
	m.Observe(context.Background(), &decision.Decision{Reason: decision.KeyInvalid, Profile: "aisafe"}, time.Millisecond)
	m.Observe(context.Background(), &decision.Decision{Reason: decision.TenantForbidden, Profile: "default"}, time.Millisecond)
	want := `# HELP extauthz_checks_total Checks answered, by outcome, reason and profile.
# TYPE extauthz_checks_total counter
extauthz_checks_total{outcome="allow",profile="default",reason="ok"} 3
extauthz_checks_total{outcome="deny",profile="aisafe",reason="key_invalid"} 1
extauthz_checks_total{outcome="deny",profile="default",reason="key_invalid"} 1
extauthz_checks_total{outcome="deny",profile="default",reason="tenant_forbidden"} 1
`
	if err := testutil.GatherAndCompare(m.Registry, strings.NewReader(want), "extauthz_checks_total"); err != nil {
		t.Error(err)
	}
	for outcome, n := range map[string]uint64{"allow": 3, "deny": 3} {
		if got := histogramCount(t, m, outcome); got != n {
			t.Errorf("duration %s: %d observations, want %d", outcome, got, n)
		}
	}
}

func histogramCount(t *testing.T, m *Metrics, outcome string) uint64 {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "extauthz_check_duration_seconds" {
			continue
		}
		for _, s := range mf.GetMetric() {
			if s.GetLabel()[0].GetValue() == outcome {
				return s.GetHistogram().GetSampleCount()
			}
		}
	}
	return 0
}

func BenchmarkObserve(b *testing.B) {
	m := New(nil)
	d := &decision.Decision{Allow: true, Reason: decision.OK, Profile: "default"}
	b.ReportAllocs()
	for b.Loop() {
		m.Observe(context.Background(), d, 30*time.Microsecond)
	}
}
