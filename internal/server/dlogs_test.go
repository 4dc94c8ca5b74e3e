package server

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/config"
	"github.com/extauthz/extauthz/internal/replay"
)

// logService is a loopback decision-log service keeping every upload raw.
type logService struct {
	mu     sync.Mutex
	bodies []string
	events []map[string]any
}

func (l *logService) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	zr, err := gzip.NewReader(r.Body)
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	b, _ := io.ReadAll(zr)
	var batch []map[string]any
	if err := json.Unmarshal(b, &batch); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.bodies = append(l.bodies, string(b))
	l.events = append(l.events, batch...)
}

func writeServiceConfig(t *testing.T, url, extra string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "opa.yaml")
	cfg := fmt.Sprintf("services:\n  logs:\n    url: %s\ndecision_logs:\n  service: logs\n  reporting:\n    min_delay_seconds: 1\n    max_delay_seconds: 1\n%s", url, extra)
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestDecisionLogUpload: every check's decision reaches the decision-log
// service with the verified facts, and no credential is ever uploaded.
func TestDecisionLogUpload(t *testing.T) {
	svc := &logService{}
	srv := httptest.NewServer(svc)
	defer srv.Close()
	file := writeServiceConfig(t, srv.URL, "")
	r := startRun(t, func(c *config.Config) { c.DecisionLogServiceConfig = file })
	token, _ := os.ReadFile("../../testdata/demo.jwt")
	secrets := []string{"xa_demo_7Qm2vK9pL4sT8wZ1", string(token), "xa_not_a_real_key_123"}
	for _, h := range []map[string]string{
		{"x-api-key": secrets[0], "x-tenant-id": "42"},
		{"authorization": "Bearer " + secrets[1], "x-tenant-id": "42"},
		{"x-api-key": secrets[2], "x-tenant-id": "42"},
		{"x-tenant-id": "42"},
	} {
		if _, err := r.client.Check(context.Background(), checkReq(h)); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		svc.mu.Lock()
		n := len(svc.events)
		svc.mu.Unlock()
		if n >= 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d events uploaded, want 4", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	svc.mu.Lock()
	all := strings.Join(svc.bodies, "\n")
	events := svc.events
	svc.mu.Unlock()
	for _, s := range secrets {
		if strings.Contains(all, s) {
			t.Errorf("a credential was uploaded: %.12s…", s)
		}
	}
	var kinds []string
	for _, e := range events {
		in := e["input"].(map[string]any)
		cred := in["credential"].(map[string]any)
		kinds = append(kinds, fmt.Sprintf("%v/%v/%v", cred["kind"], cred["status"], e["result"].(map[string]any)["reason"]))
		if e["path"] != "extauthz/decision" || e["decision_id"] == "" || in["route"] == nil {
			t.Errorf("event %v", e)
		}
	}
	got := strings.Join(kinds, " ")
	for _, want := range []string{"api_key/valid/ok", "jwt/valid/ok", "api_key/invalid/key_invalid", "none/missing/credentials_missing"} {
		if !strings.Contains(got, want) {
			t.Errorf("events %s lack %s", got, want)
		}
	}
	_, metrics := get(t, r.admin+"/metrics")
	if !strings.Contains(metrics, `extauthz_decision_log_upload_chunks_total{result="uploaded"}`) ||
		!strings.Contains(metrics, `extauthz_decision_log_upload_dropped_total{reason="queue_full"} 0`) {
		t.Errorf("metrics lack the uploader's:\n%s", grepLines(metrics, "decision_log"))
	}
}

// TestDecisionLogServiceDown: with the service unreachable every check is
// still answered, promptly, and the decisions that cannot be kept are
// dropped and counted.
func TestDecisionLogServiceDown(t *testing.T) {
	file := writeServiceConfig(t, "http://"+closedAddr(t), "    buffer_type: event\n    buffer_size_limit_events: 10\n")
	r := startRun(t, func(c *config.Config) {
		c.DecisionLogServiceConfig, c.DecisionLog, c.DrainTimeout = file, "none", time.Second
	})
	const workers, per = 8, 50
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Go(func() {
			for range per {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, err := r.client.Check(ctx, checkReq(map[string]string{"x-api-key": "xa_demo_7Qm2vK9pL4sT8wZ1", "x-tenant-id": "42"}))
				cancel()
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	t.Logf("%d checks answered in %v", workers*per, time.Since(start))
	// The uploader's goroutine hands the decisions to the plugin, whose
	// buffer (10 events) drops and counts the rest.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, metrics := get(t, r.admin+"/metrics")
		if strings.Contains(metrics, `extauthz_decision_log_upload_dropped_total{reason="buffer_full"}`) &&
			!strings.Contains(metrics, `extauthz_decision_log_upload_dropped_total{reason="buffer_full"} 0`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no buffer drops counted:\n%s", grepLines(metrics, "decision_log"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := r.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
}

func grepLines(s, sub string) string {
	var out []string
	for l := range strings.Lines(s) {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "")
}

// TestDecisionLogFactsFlag: --decision-log-facts reaches both sinks — every
// logged record and every uploaded event carries the facts it was decided
// on, which internal/replay reads back — and still no credential.
func TestDecisionLogFactsFlag(t *testing.T) {
	svc := &logService{}
	srv := httptest.NewServer(svc)
	defer srv.Close()
	file := writeServiceConfig(t, srv.URL, "")
	r := startRun(t, func(c *config.Config) { c.DecisionLogServiceConfig, c.DecisionLogFacts = file, true })
	token, _ := os.ReadFile("../../testdata/demo.jwt")
	secrets := []string{"xa_demo_7Qm2vK9pL4sT8wZ1", string(token)}
	for _, h := range []map[string]string{
		{"x-api-key": secrets[0], "x-tenant-id": "42"},
		{"authorization": "Bearer " + secrets[1], "x-tenant-id": "42"},
		{"x-api-key": secrets[0], "x-tenant-id": "43"},
	} {
		if _, err := r.client.Check(context.Background(), checkReq(h)); err != nil {
			t.Fatal(err)
		}
	}
	for polls := 0; ; polls++ { // bounded by count: the upload interval is short
		svc.mu.Lock()
		n := len(svc.events)
		svc.mu.Unlock()
		if n >= 3 {
			break
		}
		if polls == 300 {
			t.Fatalf("%d events uploaded, want 3", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	svc.mu.Lock()
	uploaded := strings.Join(svc.bodies, "\n")
	for _, e := range svc.events {
		if f, ok := e["input"].(map[string]any)["facts"].(map[string]any); !ok || f["method"] != "GET" {
			t.Errorf("uploaded event without facts: %v", e)
		}
	}
	svc.mu.Unlock()
	logs := r.logs.String()
	var reasons []string
	err := replay.Read(strings.NewReader(logs), func(rec replay.Record) {
		if rec.Facts == nil {
			t.Errorf("record %s without facts", rec.DecisionID)
		}
		reasons = append(reasons, string(rec.Reason))
	}, func(line int, err error) { t.Errorf("log line %d: %v", line, err) })
	if err != nil || strings.Join(reasons, " ") != "ok ok tenant_forbidden" {
		t.Errorf("replayable records: %v %v\n%s", reasons, err, logs)
	}
	for _, s := range secrets {
		if strings.Contains(logs, s) || strings.Contains(uploaded, s) {
			t.Errorf("a credential reached the decision log: %.12s…", s)
		}
	}
}
