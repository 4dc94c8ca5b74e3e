package decisionlog

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/decision"
)

// receiver is a loopback decision-log service: it decodes each upload, a
// gzip'd JSON array of events, as OPA's plugin sends it.
type receiver struct {
	mu      sync.Mutex
	batches int
	events  []map[string]any
	errs    []error
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if r.Method != http.MethodPost || r.URL.Path != "/logs" || r.Header.Get("Content-Encoding") != "gzip" {
		rc.errs = append(rc.errs, fmt.Errorf("unexpected %s %s encoding %q", r.Method, r.URL.Path, r.Header.Get("Content-Encoding")))
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	zr, err := gzip.NewReader(r.Body)
	if err != nil {
		rc.errs = append(rc.errs, err)
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	var batch []map[string]any
	if err := json.NewDecoder(zr).Decode(&batch); err != nil {
		rc.errs = append(rc.errs, err)
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	rc.batches++
	rc.events = append(rc.events, batch...)
}

func (rc *receiver) snapshot() (int, []map[string]any, []error) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.batches, append([]map[string]any(nil), rc.events...), append([]error(nil), rc.errs...)
}

// waitEvents waits until the receiver holds n events.
func (rc *receiver) waitEvents(t *testing.T, n int) (int, []map[string]any) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		b, ev, errs := rc.snapshot()
		if len(errs) > 0 {
			t.Fatalf("receiver: %v", errs)
		}
		if len(ev) >= n {
			return b, ev
		}
		if time.Now().After(deadline) {
			t.Fatalf("received %d events in %d batches, want %d", len(ev), b, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func serviceConfig(url, extra string) []byte {
	return fmt.Appendf(nil, `
services:
  logsvc:
    url: %s
labels:
  app: extauthz
decision_logs:
  service: logsvc
  reporting:
    min_delay_seconds: 1
    max_delay_seconds: 1
%s`, url, extra)
}

func startUploader(t *testing.T, opts UploaderOptions) *Uploader {
	t.Helper()
	u, err := NewUploader(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := u.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		u.Stop(ctx)
	})
	return u
}

func sample(i int) *decision.Decision {
	return &decision.Decision{
		Allow: i%2 == 0, Reason: map[bool]decision.Reason{true: decision.OK, false: decision.ScopeMissing}[i%2 == 0],
		ID: fmt.Sprintf("d%d", i), RequestID: fmt.Sprintf("r%d", i), Profile: "default", Route: "orders-read",
		KeyID: "demo-orders", Tenant: "42", PolicyVersion: "v7",
	}
}

// TestUploadBatched: decisions reach the service in gzip'd batches, each
// event carrying the OPA fields and the verified facts only.
func TestUploadBatched(t *testing.T) {
	rc := &receiver{}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	u := startUploader(t, UploaderOptions{Config: serviceConfig(srv.URL, "")})
	const n = 50
	for i := range n {
		u.Observe(context.Background(), sample(i), 1500*time.Microsecond)
	}
	batches, events := rc.waitEvents(t, n)
	if batches >= n {
		t.Errorf("%d events in %d uploads: not batched", n, batches)
	}
	byID := map[string]map[string]any{}
	for _, e := range events {
		byID[e["decision_id"].(string)] = e
	}
	e := byID["d0"]
	if e == nil {
		t.Fatalf("d0 missing: %v", events)
	}
	if e["path"] != EventPath {
		t.Errorf("path = %v", e["path"])
	}
	if _, err := time.Parse(time.RFC3339Nano, e["timestamp"].(string)); err != nil {
		t.Errorf("timestamp: %v", err)
	}
	if l := e["labels"].(map[string]any); l["app"] != "extauthz" || l["id"] != "extauthz" {
		t.Errorf("labels = %v", l)
	}
	if got := e["metrics"].(map[string]any)["timer_extauthz_check_ns"]; got != float64(1500000) {
		t.Errorf("metrics = %v", e["metrics"])
	}
	if got := e["bundles"].(map[string]any)["extauthz"].(map[string]any)["revision"]; got != "v7" {
		t.Errorf("bundles = %v", e["bundles"])
	}
	want := `{"credential":{"key_id":"demo-orders","kind":"api_key","status":"valid"},"profile":"default","request_id":"r0","route":"orders-read","tenant":"42"}`
	if got, _ := json.Marshal(e["input"]); string(got) != want {
		t.Errorf("input = %s\nwant    %s", got, want)
	}
	if got, _ := json.Marshal(byID["d1"]["result"]); string(got) != `{"allow":false,"reason":"scope_missing"}` {
		t.Errorf("result = %s", got)
	}
	// The plugin counts an upload once the receiver has answered it, which
	// may be just after the events arrived here.
	for i := 0; ; i++ {
		s := u.Stats()
		if s.QueueFull != 0 {
			t.Fatalf("queue drops with a live receiver: %+v", s)
		}
		if s.ChunksUploaded > 0 {
			break
		}
		if i > 1000 {
			t.Fatalf("no upload counted: %+v", s)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestMaskAndDrop: the plugin's mask and drop rules, in Rego, loaded into
// the manager.
func TestMaskAndDrop(t *testing.T) {
	dir := t.TempDir()
	policy := `package system.log

mask contains "/input/credential/key_id"

mask contains {"op": "upsert", "path": "/input/tenant", "value": "redacted"}

drop if input.input.route == "healthz"
`
	if err := os.WriteFile(filepath.Join(dir, "log.rego"), []byte(policy), 0o600); err != nil {
		t.Fatal(err)
	}
	rc := &receiver{}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	u := startUploader(t, UploaderOptions{Config: serviceConfig(srv.URL, ""), Policies: []string{dir}})
	d := sample(0)
	u.Observe(context.Background(), &decision.Decision{Allow: true, Reason: decision.OK, ID: "dropme", Route: "healthz"}, time.Millisecond)
	u.Observe(context.Background(), d, time.Millisecond)
	// One feeder, in order: once d0 has arrived, "dropme" was decided
	// before it and would have come in the same or an earlier upload.
	rc.waitEvents(t, 1)
	_, events, _ := rc.snapshot()
	if len(events) != 1 || events[0]["decision_id"] != "d0" {
		t.Fatalf("events = %v", events)
	}
	e := events[0]
	in := e["input"].(map[string]any)
	if _, ok := in["credential"].(map[string]any)["key_id"]; ok || in["tenant"] != "redacted" {
		t.Errorf("input not masked: %v", in)
	}
	if got, _ := json.Marshal(e["erased"]); string(got) != `["/input/credential/key_id"]` {
		t.Errorf("erased = %s", got)
	}
	if got, _ := json.Marshal(e["masked"]); string(got) != `["/input/tenant"]` {
		t.Errorf("masked = %s", got)
	}
}

// TestServiceDown: with the service unreachable, Observe still returns at
// once for every decision, and what cannot be kept is dropped and counted.
func TestServiceDown(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close() // nothing listens there now
	extra := `    buffer_type: event
    buffer_size_limit_events: 100
`
	u := startUploader(t, UploaderOptions{Config: serviceConfig(url, extra), Queue: 64})
	// Observe never waits for the service: with nothing listening, a
	// burst far larger than the queue completes (a blocking Observe would
	// hang the test), and what does not fit is dropped and counted.
	const workers, per = 8, 5000
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range per {
				u.Observe(context.Background(), sample(w*per+i), time.Millisecond)
			}
		})
	}
	wg.Wait()
	if s := u.Stats(); s.QueueFull == 0 {
		t.Errorf("a burst of %d into a queue of 64: no queue drops counted: %+v", workers*per, s)
	}
	// Past the burst, decisions reach the plugin, whose buffer (100
	// events) fills and drops, counted.
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; ; i++ {
		s := u.Stats()
		if s.BufferFull > 0 {
			t.Logf("stats %+v", s)
			if total := s.QueueFull + s.BufferFull; total > uint64(workers*per+i) {
				t.Errorf("more drops (%d) than decisions", total)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no buffer drops counted: %+v", s)
		}
		u.Observe(context.Background(), sample(i), time.Millisecond)
		time.Sleep(time.Millisecond)
	}
}

func TestUploaderConfigErrors(t *testing.T) {
	for name, cfg := range map[string]string{
		"no decision_logs": "services:\n  s:\n    url: http://127.0.0.1:1\n",
		"unknown service":  "services:\n  s:\n    url: http://127.0.0.1:1\ndecision_logs:\n  service: other\n",
		"not yaml":         "{",
	} {
		if _, err := NewUploader(UploaderOptions{Config: []byte(cfg)}); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// BenchmarkUploaderObserve is the cost on the check path: a copy into the
// queue (the service is down and the queue full: the worst case, a drop).
func BenchmarkUploaderObserve(b *testing.B) {
	u, err := NewUploader(UploaderOptions{Config: serviceConfig("http://127.0.0.1:1", ""), Queue: 1})
	if err != nil {
		b.Fatal(err)
	}
	d := sample(0)
	b.ReportAllocs()
	for b.Loop() {
		u.Observe(context.Background(), d, time.Millisecond)
	}
}
