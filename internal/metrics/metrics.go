// Package metrics exposes the sidecar's Prometheus metrics. Label values are
// bounded: outcome (allow|deny), reason (the fixed set), profile (configured
// names only) — never credentials, subjects, tenants or raw paths.
package metrics

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/extauthz/extauthz/internal/authn/rediskeys"
	"github.com/extauthz/extauthz/internal/decision"
	"github.com/extauthz/extauthz/internal/ratelimit"
)

// Metrics holds the collectors.
type Metrics struct {
	Registry *prometheus.Registry

	checks   *prometheus.CounterVec
	duration *prometheus.HistogramVec
	reloads  *prometheus.CounterVec
	lastOK   prometheus.Gauge
	version  *prometheus.GaugeVec
	jwks     *prometheus.CounterVec
	quota    *prometheus.CounterVec
	quotaErr prometheus.Counter
	keys     *prometheus.CounterVec
	keysInv  prometheus.Counter
	shadow   *prometheus.CounterVec
	cand     *prometheus.CounterVec
	candDrop prometheus.Counter
	tlsFail  *prometheus.CounterVec
	logSupp  prometheus.Counter
	upload   atomic.Pointer[func() DecisionLogUpload]

	// The per-check series, resolved once: checkSeries maps a checkKey to
	// its *checkSeries (bounded as the labels are).
	checkSeries sync.Map
}

type checkSeries struct {
	count    prometheus.Counter
	duration prometheus.Observer
}

type checkKey struct {
	allow           bool
	reason, profile string
}

// DecisionLogUpload are the decision-log uploader's counters
// (decisionlog.Uploader).
type DecisionLogUpload struct {
	QueueFull, BufferFull, RateLimited, EncodingFailed uint64 // dropped
	ChunksUploaded, ChunksFailed                       uint64
}

// SetDecisionLogUpload makes the uploader's counters part of the metrics:
// extauthz_decision_log_upload_dropped_total by reason and
// extauthz_decision_log_upload_chunks_total by result. Without an uploader
// neither has series.
func (m *Metrics) SetDecisionLogUpload(stats func() DecisionLogUpload) { m.upload.Store(&stats) }

var (
	uploadDroppedDesc = prometheus.NewDesc("extauthz_decision_log_upload_dropped_total",
		"Decisions not uploaded to the decision-log service, by reason: queue_full (the hand-off to the uploader was full), buffer_full (the upload buffer's limit: events, or chunks of the size buffer), rate_limited (max_decisions_per_second), encoding_failed.",
		[]string{"reason"}, nil)
	uploadChunksDesc = prometheus.NewDesc("extauthz_decision_log_upload_chunks_total",
		"Gzip'd batches of decisions sent to the decision-log service, by result (uploaded, failed: kept and retried).",
		[]string{"result"}, nil)
)

// uploadCollector reads the uploader's counters at scrape time.
type uploadCollector struct{ m *Metrics }

func (c uploadCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- uploadDroppedDesc
	ch <- uploadChunksDesc
}

func (c uploadCollector) Collect(ch chan<- prometheus.Metric) {
	f := c.m.upload.Load()
	if f == nil {
		return
	}
	s := (*f)()
	for _, v := range []struct {
		desc  *prometheus.Desc
		n     uint64
		label string
	}{
		{uploadDroppedDesc, s.QueueFull, "queue_full"}, {uploadDroppedDesc, s.BufferFull, "buffer_full"},
		{uploadDroppedDesc, s.RateLimited, "rate_limited"}, {uploadDroppedDesc, s.EncodingFailed, "encoding_failed"},
		{uploadChunksDesc, s.ChunksUploaded, "uploaded"}, {uploadChunksDesc, s.ChunksFailed, "failed"},
	} {
		ch <- prometheus.MustNewConstMetric(v.desc, prometheus.CounterValue, float64(v.n), v.label)
	}
}

// Cache reports credential-cache counters (the JWT verifier's).
type Cache interface {
	Stats() (hits, misses uint64, entries int)
}

// New registers everything on a fresh registry. cache may return nil when
// no JWT issuer is configured.
func New(cache func() Cache) *Metrics {
	r := prometheus.NewRegistry()
	m := &Metrics{
		Registry: r,
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "extauthz_checks_total", Help: "Checks answered, by outcome, reason and profile.",
		}, []string{"outcome", "reason", "profile"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "extauthz_check_duration_seconds", Help: "Time to answer one Check, inside the sidecar.",
			Buckets: []float64{25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3},
		}, []string{"outcome"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "extauthz_policy_reloads_total", Help: "Policy versions seen, by result (success: now serving; failure: rejected, last good kept).",
		}, []string{"result"}),
		lastOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "extauthz_policy_last_success_timestamp_seconds", Help: "When the serving policy version was loaded.",
		}),
		version: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "extauthz_policy_info", Help: "The serving policy version (value 1).",
		}, []string{"version"}),
	}
	m.jwks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "extauthz_jwks_fetches_total", Help: "JWKS URL fetches (first load, refreshes, unknown-kid refreshes), by issuer and result.",
	}, []string{"issuer", "result"})
	m.quota = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "extauthz_ratelimit_takes_total", Help: "Quota decisions, by backend and result (allowed, limited, degraded, untracked).",
	}, []string{"backend", "result"})
	m.quotaErr = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "extauthz_ratelimit_backend_errors_total", Help: "Failed calls to the shared rate-limit backend.",
	})
	m.shadow = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "extauthz_shadow_denies_total", Help: "Denies a route put in shadow (recorded, the request allowed), by reason, profile and route.",
	}, []string{"reason", "profile", "route"})
	m.cand = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "extauthz_candidate_decisions_total", Help: "Live checks compared with the candidate policy, by the serving and the candidate verdict (equal labels: agreement).",
	}, []string{"serving", "candidate"})
	m.candDrop = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "extauthz_candidate_dropped_total", Help: "Sampled checks not compared with the candidate policy because its queue was full.",
	})
	m.tlsFail = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "extauthz_tls_handshake_failures_total", Help: "Rejected TLS handshakes on the gRPC listener, by reason (client_cert_missing, client_cert_invalid, handshake_failed).",
	}, []string{"reason"})
	m.logSupp = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "extauthz_log_lines_suppressed_total", Help: "Repeated warning and error lines not written (counted in the next line or summary of their message).",
	})
	m.keys = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "extauthz_apikey_store_lookups_total", Help: "API-key lookups in the Redis key store, by result (hit, negative_hit: from the local cache; miss: one Redis round trip; error: Redis failed or held a bad record, denied auth_unavailable).",
	}, []string{"result"})
	m.keysInv = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "extauthz_apikey_store_invalidations_total", Help: "Invalidations the Redis key store applied to its local cache (pub/sub messages, and a flush on every (re)subscription).",
	})
	r.MustRegister(m.checks, m.duration, m.reloads, m.lastOK, m.version, m.jwks, m.quota, m.quotaErr, m.keys, m.keysInv, m.tlsFail, m.logSupp, m.shadow, m.cand, m.candDrop, uploadCollector{m},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	stat := func(pick func(h, mi uint64, n int) float64) func() float64 {
		return func() float64 {
			if cache == nil {
				return 0
			}
			c := cache()
			if c == nil {
				return 0
			}
			return pick(c.Stats())
		}
	}
	r.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "extauthz_credential_cache_hits_total", Help: "Verified-JWT cache hits."},
			stat(func(h, _ uint64, _ int) float64 { return float64(h) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "extauthz_credential_cache_misses_total", Help: "Verified-JWT cache misses."},
			stat(func(_, mi uint64, _ int) float64 { return float64(mi) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "extauthz_credential_cache_entries", Help: "Verified JWTs cached."},
			stat(func(_, _ uint64, n int) float64 { return float64(n) })),
	)
	return m
}

// Observe records one check. Its series are looked up by their labels
// once and kept (a lookup by label values hashes them and takes the
// vector's lock on every check).
func (m *Metrics) Observe(_ context.Context, d *decision.Decision, elapsed time.Duration) {
	k := checkKey{d.Allow, string(d.Reason), d.Profile}
	v, ok := m.checkSeries.Load(k)
	if !ok {
		outcome := "deny"
		if d.Allow {
			outcome = "allow"
		}
		v, _ = m.checkSeries.LoadOrStore(k, &checkSeries{m.checks.WithLabelValues(outcome, k.reason, k.profile), m.duration.WithLabelValues(outcome)})
	}
	cs := v.(*checkSeries)
	cs.count.Inc()
	if d.Shadow != nil {
		m.shadow.WithLabelValues(string(d.Shadow.Reason), d.Profile, d.Route).Inc()
	}
	cs.duration.Observe(elapsed.Seconds())
}

// Reloaded records a policy version seen by the reloader.
func (m *Metrics) Reloaded(ok bool, version string) {
	if !ok {
		m.reloads.WithLabelValues("failure").Inc()
		return
	}
	m.reloads.WithLabelValues("success").Inc()
	m.lastOK.SetToCurrentTime()
	m.version.Reset()
	m.version.WithLabelValues(version).Set(1)
}

// RateLimit returns the limiter's metric hooks.
func (m *Metrics) RateLimit() ratelimit.Metrics {
	return ratelimit.Metrics{
		Taken: func(backend string, allowed, degraded bool) {
			result := "allowed"
			switch {
			case degraded:
				result = "degraded"
			case !allowed:
				result = "limited"
			}
			m.quota.WithLabelValues(backend, result).Inc()
		},
		BackendError: func(error) { m.quotaErr.Inc() },
		Untracked:    func() { m.quota.WithLabelValues("local", "untracked").Inc() },
	}
}

// KeyStore returns the Redis key store's metric hooks. The counters are
// resolved once: a cached lookup pays one atomic add.
func (m *Metrics) KeyStore() rediskeys.Metrics {
	byResult := map[string]prometheus.Counter{}
	for _, r := range []string{rediskeys.ResultHit, rediskeys.ResultNegativeHit, rediskeys.ResultMiss, rediskeys.ResultError} {
		byResult[r] = m.keys.WithLabelValues(r)
	}
	return rediskeys.Metrics{
		Lookup: func(result string) {
			if c := byResult[result]; c != nil {
				c.Inc()
			}
		},
		Invalidated: m.keysInv.Inc,
	}
}

// JWKSFetched counts one JWKS URL fetch. Issuers come from configuration, so
// the label stays bounded.
func (m *Metrics) JWKSFetched(issuer string, ok bool) {
	result := "success"
	if !ok {
		result = "failure"
	}
	m.jwks.WithLabelValues(issuer, result).Inc()
}

// TLSRejected counts one rejected TLS handshake; reason is one of a fixed set.
func (m *Metrics) TLSRejected(reason string) {
	m.tlsFail.WithLabelValues(reason).Inc()
}

// LogSuppressed counts one fault log line not written (internal/logthrottle).
func (m *Metrics) LogSuppressed(string) {
	m.logSupp.Inc()
}

// CandidateCompared counts one comparison with the candidate policy.
func (m *Metrics) CandidateCompared(serving, candidate decision.Reason) {
	m.cand.WithLabelValues(string(serving), string(candidate)).Inc()
}

// CandidateDropped counts a sample the candidate's queue refused.
func (m *Metrics) CandidateDropped() { m.candDrop.Inc() }
