package check

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/extauthz/extauthz/internal/clientip"
	"github.com/extauthz/extauthz/internal/decision"
)

// Candidate evaluates a second policy version (a candidate for promotion)
// on a sampled share of live checks and reports where it would decide
// otherwise than the serving one. It works after the serving decision is
// taken and off the request's path: a sampled check is queued without
// waiting, one worker evaluates the queue, and a full queue drops the
// sample (counted). The candidate decides as the server would (credential,
// route, policy, shadow) but never counts quotas.
type Candidate struct {
	// Rate is the share of checks compared (0..1).
	Rate float64
	// Result is told every comparison: the serving and the candidate's
	// verdict (the policy's reason; a shadowed deny counts as its reason,
	// a quota denial as the allow it was before the quota).
	Result func(serving, candidate decision.Reason)
	// Dropped is told of each sample the full queue refused.
	Dropped func()
	Log     *slog.Logger

	srv   *Server
	queue chan candidateJob
	stop  chan struct{}
	wg    sync.WaitGroup
	once  sync.Once
	done  atomic.Int64 // comparisons made, for tests
}

type candidateJob struct {
	req     *authv3.CheckRequest
	serving decision.Reason
	id      string
}

// NewCandidate starts comparing against the policy versions engines serves;
// queue bounds the samples waiting. Close stops it.
func NewCandidate(engines Engines, ip clientip.Resolver, rate float64, queue int) *Candidate {
	c := &Candidate{Rate: rate, queue: make(chan candidateJob, max(queue, 1)), stop: make(chan struct{})}
	c.srv = NewServer(engines, ip)
	c.srv.NoQuota = true
	c.wg.Add(1)
	go c.work()
	return c
}

// Verdict is what a decision says of the policy's view of the request: the
// reason, with a shadowed deny counted as its reason and a quota denial as
// the allow it was before the quota.
func Verdict(d *decision.Decision) decision.Reason { return verdict(d) }

func verdict(d *decision.Decision) decision.Reason {
	switch {
	case d.Shadow != nil:
		return d.Shadow.Reason
	case d.Reason == decision.RateLimited:
		return decision.OK
	}
	return d.Reason
}

// Offer queues a finished check for comparison when it is sampled.
func (c *Candidate) Offer(req *authv3.CheckRequest, d *decision.Decision) {
	if c.Rate <= 0 || (c.Rate < 1 && rand.Float64() >= c.Rate) {
		return
	}
	select {
	case c.queue <- candidateJob{req: req, serving: verdict(d), id: d.ID}:
	default:
		if c.Dropped != nil {
			c.Dropped()
		}
	}
}

func (c *Candidate) work() {
	defer c.wg.Done()
	for {
		select {
		case <-c.stop:
			return
		case j := <-c.queue:
			c.compare(j)
		}
	}
}

// compare evaluates one sample on the candidate.
func (c *Candidate) compare(j candidateJob) {
	if c.srv.Engines.Current() == nil {
		return // no candidate version loaded (yet): nothing to compare with
	}
	if c.Log != nil {
		c.srv.Log = c.Log
	}
	d, r, _, _ := c.srv.check(context.Background(), j.req, false)
	got := verdict(d)
	defer c.done.Add(1)
	if c.Result != nil {
		c.Result(j.serving, got)
	}
	if got == j.serving || c.Log == nil {
		return
	}
	attrs := []slog.Attr{
		slog.String("decision_id", j.id), slog.String("request_id", d.RequestID),
		slog.String("serving_reason", string(j.serving)), slog.String("candidate_reason", string(got)),
		slog.String("candidate_version", d.PolicyVersion), slog.String("route", d.Route),
	}
	if r != nil {
		attrs = append(attrs, slog.String("method", capClient(r.f.Method)), slog.String("path", capClient(r.f.Path)))
		if id := r.f.Identity(); id != nil {
			attrs = append(attrs, slog.String("key_id", id.KeyID), slog.String("subject", id.Subject), slog.String("tenant", r.tenant))
		}
	}
	c.Log.LogAttrs(context.Background(), slog.LevelInfo, "candidate differs", attrs...)
}

// capClient makes a value the client sent safe for a log line: printable
// ASCII, at most 256 bytes.
func capClient(s string) string {
	if len(s) > 256 {
		s = s[:256]
	}
	return strings.Map(func(c rune) rune {
		if c < 0x20 || c > 0x7e {
			return '?'
		}
		return c
	}, s)
}

// Close stops the worker; queued samples are dropped.
func (c *Candidate) Close() {
	c.once.Do(func() { close(c.stop) })
	c.wg.Wait()
}
