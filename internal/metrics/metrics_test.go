package metrics

import (
	"strings"
	"testing"

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
