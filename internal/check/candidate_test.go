package check

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/clientip"
	"github.com/extauthz/extauthz/internal/decision"
)

// A candidate policy beside the serving one: every sampled check is
// compared off the request's path, agreements and differences are counted
// by (serving, candidate) verdict, and differences are logged with the
// facts.
func TestCandidateComparesLiveChecks(t *testing.T) {
	serving := newServer(t, demoEngine(t))
	cand := NewCandidate(staticEngines{variantEngine(t, policyVariants[2])}, clientip.Resolver{}, 1, 64) // denies HEAD for demo-readonly
	defer cand.Close()
	var logs bytes.Buffer
	var mu sync.Mutex
	counts := map[[2]decision.Reason]int{}
	cand.Log = slog.New(slog.NewJSONHandler(&logs, nil))
	cand.srv.Now = serving.Now
	cand.Result = func(s, c decision.Reason) { mu.Lock(); counts[[2]decision.Reason{s, c}]++; mu.Unlock() }
	serving.Candidate = cand
	reqs := map[string]int{"GET": 3, "HEAD": 2}
	for m, n := range reqs {
		for range n {
			if reason, _, _ := decide(t, serving, req(m, "/v1/orders", map[string]string{"x-api-key": readonlyKey, "x-tenant-id": "42"})); reason != "ok" {
				t.Fatalf("serving %s: %s", m, reason)
			}
		}
	}
	for i := 0; cand.done.Load() < 5; i++ { // the worker is asynchronous
		if i > 5000 {
			t.Fatalf("%d of 5 comparisons made", cand.done.Load())
		}
		time.Sleep(time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if counts[[2]decision.Reason{"ok", "ok"}] != 3 || counts[[2]decision.Reason{"ok", "key_revoked"}] != 2 {
		t.Fatalf("comparisons %v", counts)
	}
	if n := strings.Count(logs.String(), `"msg":"candidate differs"`); n != 2 || !strings.Contains(logs.String(), `"candidate_reason":"key_revoked"`) ||
		!strings.Contains(logs.String(), `"method":"HEAD"`) || !strings.Contains(logs.String(), `"key_id":"demo-readonly"`) {
		t.Errorf("%d difference lines: %s", n, logs.String())
	}
}

// The queue is bounded: a sample that does not fit is dropped and counted,
// never waited for.
func TestCandidateDropsWhenFull(t *testing.T) {
	cand := NewCandidate(staticEngines{demoEngine(t)}, clientip.Resolver{}, 1, 1)
	cand.Close() // no worker: nothing leaves the queue
	dropped := 0
	cand.Dropped = func() { dropped++ }
	d := &decision.Decision{Reason: decision.OK}
	for range 3 {
		cand.Offer(req("GET", "/v1/orders", nil), d)
	}
	if dropped != 2 {
		t.Fatalf("dropped %d of 3 with a queue of 1", dropped)
	}
}
