package decisionlog

// Uploading decision logs to an OPA-compatible decision-log service with
// OPA's own machinery: a plugins.Manager configured from an OPA config file
// (services, labels, decision_logs) runs the decision_logs plugin
// (plugins/logs), which batches, gzips, uploads and retries, and evaluates
// the mask_decision and drop_decision rules (data.system.log.mask and
// data.system.log.drop by default) against the manager's compiler, loaded
// with the Rego modules given to NewUploader.
//
// The check path never waits for it: Observe copies the decision's facts
// into a bounded queue and returns; one goroutine builds each event and
// hands it to the plugin (drop and mask rules are evaluated there). A full
// queue drops the decision and counts it; the plugin counts its own drops
// (buffer limit, max_decisions_per_second).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/loader"
	"github.com/open-policy-agent/opa/v1/logging"
	opametrics "github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/plugins"
	"github.com/open-policy-agent/opa/v1/plugins/logs"
	opaserver "github.com/open-policy-agent/opa/v1/server"
	"github.com/open-policy-agent/opa/v1/storage/inmem"

	"github.com/extauthz/extauthz/internal/decision"
	"github.com/extauthz/extauthz/internal/replay"
)

// EventPath is the path of every uploaded event: the decision
// data.extauthz.decision, written as OPA writes paths in decision logs.
const EventPath = "extauthz/decision"

// DefaultQueue is how many decisions wait for the plugin at most.
const DefaultQueue = 4096

// DefaultBufferSizeLimitBytes bounds the plugin's size buffer when the
// configuration sets no buffer_size_limit_bytes (OPA's default is unbounded).
const DefaultBufferSizeLimitBytes = int64(32 << 20)

// UploaderOptions configure NewUploader.
type UploaderOptions struct {
	// Config is an OPA configuration (JSON or YAML): services, labels and
	// decision_logs are used.
	Config []byte
	// Policies are Rego files or directories loaded into the manager: the
	// mask and drop rules (package system.log by default).
	Policies []string
	// Queue bounds the decisions waiting to be handed to the plugin
	// (DefaultQueue when 0).
	Queue int
	// Log receives the plugin's own log lines (upload failures, drops).
	Log *slog.Logger
	// ID names this instance in the manager (labels.id); default "extauthz".
	ID string
	// Facts adds the facts each decision was taken on as input.facts
	// (internal/replay), as the slog records carry them.
	Facts bool
}

// UploadStats are the uploader's counters.
type UploadStats struct {
	QueueFull      uint64 // decisions dropped before the plugin: the queue was full
	BufferFull     uint64 // the plugin's buffer limit drops (events, or chunks of the size buffer)
	RateLimited    uint64 // dropped by the plugin's max_decisions_per_second
	EncodingFailed uint64 // the plugin could not encode an event or chunk
	ChunksUploaded uint64 // gzip'd batches accepted by the service
	ChunksFailed   uint64 // batch uploads that failed (kept and retried)
}

// Uploader is a check.Observer shipping decisions to a decision-log service.
type Uploader struct {
	manager *plugins.Manager
	plugin  *logs.Plugin
	metrics opametrics.Metrics
	facts   bool
	queue   chan entry // never closed: Observe may run after Stop
	dropped atomic.Uint64
	stop    chan struct{}
	done    chan struct{}
	startMu sync.Mutex
	started bool
	closed  bool
}

// entry is what Observe copies off a decision: the decision may be reused
// once Observe returns.
type entry struct {
	at                              time.Time
	elapsed                         time.Duration
	id, requestID, profile, route   string
	keyID, subject, tenant, version string
	reason, shadowReason, credKind  string
	credStatus                      string
	allow                           bool
	facts                           *replay.Facts
}

// ReadUploaderConfig reads an OPA configuration file.
func ReadUploaderConfig(file string) ([]byte, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("decision-log-service-config: %w", err)
	}
	return b, nil
}

// NewUploader builds the manager and the decision_logs plugin from
// opts.Config. Nothing is sent until Start.
func NewUploader(opts UploaderOptions) (*Uploader, error) {
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.ID == "" {
		opts.ID = "extauthz"
	}
	if opts.Queue <= 0 {
		opts.Queue = DefaultQueue
	}
	mopts := []func(*plugins.Manager){plugins.Logger(slogLogger{opts.Log.With("component", "decision_logs")})}
	if len(opts.Policies) > 0 {
		files, err := loader.NewFileLoader().All(opts.Policies)
		if err != nil {
			return nil, fmt.Errorf("decision log policy: %w", err)
		}
		mopts = append(mopts, plugins.InitFiles(*files))
	}
	m, err := plugins.New(opts.Config, opts.ID, inmem.New(), mopts...)
	if err != nil {
		return nil, fmt.Errorf("decision-log-service-config: %w", err)
	}
	if m.Config.DecisionLogs == nil {
		return nil, errors.New("decision-log-service-config: no decision_logs section")
	}
	cfg, err := logs.NewConfigBuilder().
		WithBytes(m.Config.DecisionLogs).
		WithServices(m.Services()).
		WithPlugins(m.Plugins()).
		Parse()
	if err != nil {
		return nil, fmt.Errorf("decision-log-service-config: %w", err)
	}
	if cfg.Service == "" && !cfg.ConsoleLogs {
		return nil, errors.New("decision-log-service-config: decision_logs names no service (and console is off)")
	}
	if cfg.Reporting.BufferType == "size" && *cfg.Reporting.BufferSizeLimitBytes == 0 {
		// OPA's size buffer is unbounded by default: with the service
		// down it would grow without limit.
		limit := DefaultBufferSizeLimitBytes
		cfg.Reporting.BufferSizeLimitBytes = &limit
	}
	met := opametrics.New()
	p := logs.New(cfg, m).WithMetrics(met)
	m.Register(logs.Name, p)
	return &Uploader{facts: opts.Facts, manager: m, plugin: p, metrics: met, queue: make(chan entry, opts.Queue), stop: make(chan struct{}), done: make(chan struct{})}, nil
}

// Start initialises the manager (compiles the mask and drop policies) and
// starts the plugin and the goroutine feeding it.
func (u *Uploader) Start(ctx context.Context) error {
	u.startMu.Lock()
	defer u.startMu.Unlock()
	if u.started || u.closed {
		return nil
	}
	if err := u.manager.Init(ctx); err != nil {
		return fmt.Errorf("decision log uploader: %w", err)
	}
	if err := u.manager.Start(ctx); err != nil {
		return fmt.Errorf("decision log uploader: %w", err)
	}
	u.started = true
	go u.run()
	return nil
}

// Stop stops taking decisions, hands the queued ones to the plugin and
// stops it; with a deadline on ctx the plugin uploads what it holds first
// (OPA's flush on stop).
func (u *Uploader) Stop(ctx context.Context) {
	u.startMu.Lock()
	defer u.startMu.Unlock()
	if u.closed {
		return
	}
	u.closed = true
	if !u.started {
		return
	}
	close(u.stop)
	select {
	case <-u.done:
	case <-ctx.Done():
	}
	u.manager.Stop(ctx)
}

// Trigger uploads what the plugin holds now (tests; trigger "manual").
func (u *Uploader) Trigger(ctx context.Context) error { return u.plugin.Trigger(ctx) }

// Stats reads the counters.
func (u *Uploader) Stats() UploadStats {
	c := func(name string) uint64 {
		v, _ := u.metrics.Counter(name).Value().(uint64)
		return v
	}
	return UploadStats{
		QueueFull:      u.dropped.Load(),
		BufferFull:     c("decision_logs_dropped_buffer_size_limit_exceeded"),
		RateLimited:    c("decision_logs_dropped_rate_limit_exceeded"),
		EncodingFailed: c("decision_logs_encoding_failure"),
		ChunksUploaded: c("decision_logs_chunks_uploaded"),
		ChunksFailed:   c("decision_logs_chunks_upload_failed"),
	}
}

// Observe queues d for upload; a full queue drops it (counted). It never
// blocks and never fails the check.
func (u *Uploader) Observe(_ context.Context, d *decision.Decision, elapsed time.Duration) {
	u.observe(d, nil, elapsed)
}

// ObserveFacts is Observe, with the facts d was taken on when the uploader
// adds them.
func (u *Uploader) ObserveFacts(_ context.Context, d *decision.Decision, src replay.Source, elapsed time.Duration) {
	if !u.facts {
		u.observe(d, nil, elapsed)
		return
	}
	u.observe(d, &src, elapsed)
}

func (u *Uploader) observe(d *decision.Decision, src *replay.Source, elapsed time.Duration) {
	e := entry{
		at: time.Now(), elapsed: elapsed,
		id: d.ID, requestID: d.RequestID, profile: d.Profile, route: d.Route,
		keyID: d.KeyID, subject: d.Subject, tenant: d.Tenant, version: d.PolicyVersion,
		reason: string(d.Reason), allow: d.Allow,
	}
	if d.Shadow != nil {
		e.shadowReason = string(d.Shadow.Reason)
	}
	e.credKind, e.credStatus = credential(d)
	if src != nil && src.Facts != nil {
		e.facts = replay.Of(*src) // copied now: the facts belong to the check
	}
	select {
	case u.queue <- e:
	default:
		u.dropped.Add(1)
	}
}

func (u *Uploader) run() {
	defer close(u.done)
	ctx := context.Background()
	for {
		select {
		case e := <-u.queue:
			u.log(ctx, e)
		case <-u.stop:
			for { // what was queued before Stop
				select {
				case e := <-u.queue:
					u.log(ctx, e)
				default:
					return
				}
			}
		}
	}
}

func (u *Uploader) log(ctx context.Context, e entry) {
	if err := u.plugin.Log(ctx, e.info()); err != nil {
		u.manager.Logger().Error("decision log event not logged: %v", err)
	}
}

// info is the OPA decision for e: the verified facts as input (never a
// credential or a header), the verdict as result.
func (e entry) info() *opaserver.Info {
	cred := map[string]any{"kind": e.credKind, "status": e.credStatus}
	for k, v := range map[string]string{"key_id": e.keyID, "subject": e.subject} {
		if v != "" {
			cred[k] = v
		}
	}
	in := map[string]any{"route": e.route, "profile": e.profile, "credential": cred}
	if e.tenant != "" {
		in["tenant"] = e.tenant
	}
	if e.requestID != "" {
		in["request_id"] = e.requestID
	}
	if e.facts != nil {
		// As a JSON object, so that mask rules reach into it by path.
		var f map[string]any
		if b, err := json.Marshal(e.facts); err == nil && json.Unmarshal(b, &f) == nil {
			in["facts"] = f
		}
	}
	res := map[string]any{"allow": e.allow, "reason": e.reason}
	if e.shadowReason != "" {
		res["shadow_reason"] = e.shadowReason
	}
	var input, result any = in, res
	info := &opaserver.Info{
		DecisionID: e.id,
		Path:       EventPath,
		Timestamp:  e.at.UTC(),
		Input:      &input,
		Results:    &result,
		Metrics:    latency(e.elapsed),
	}
	if e.version != "" {
		info.Bundles = map[string]opaserver.BundleInfo{"extauthz": {Revision: e.version}}
	}
	return info
}

// credential names the kind and status of the request's credential from
// what the decision carries.
func credential(d *decision.Decision) (kind, status string) {
	switch {
	case d.KeyID != "":
		kind = "api_key"
	case d.Subject != "":
		kind = "jwt"
	}
	switch d.Reason {
	case decision.CredentialsMissing:
		return "none", "missing"
	case decision.CredentialsMalformed, decision.WrongScheme:
		status = "malformed"
	case decision.KeyInvalid, decision.KeyExpired, decision.KeyRevoked, decision.KeySuspended:
		kind, status = "api_key", map[decision.Reason]string{decision.KeyInvalid: "invalid", decision.KeyExpired: "expired", decision.KeyRevoked: "revoked", decision.KeySuspended: "suspended"}[d.Reason]
	case decision.TokenInvalid, decision.TokenExpired:
		kind, status = "jwt", map[decision.Reason]string{decision.TokenInvalid: "invalid", decision.TokenExpired: "expired"}[d.Reason]
	case decision.AuthUnavailable:
		status = "unverified"
	default:
		if kind != "" {
			status = "valid"
		}
	}
	if kind == "" {
		kind = "none"
	}
	if status == "" {
		status = "unknown"
	}
	return kind, status
}

// latencyMetrics carries the check's latency into the event's metrics
// (timer_extauthz_check_ns, as OPA names its timers): the plugin reads All.
type latencyMetrics struct {
	opametrics.Metrics
	ns int64
}

func latency(d time.Duration) opametrics.Metrics {
	return latencyMetrics{Metrics: opametrics.NoOp(), ns: d.Nanoseconds()}
}

func (l latencyMetrics) All() map[string]any {
	return map[string]any{"timer_extauthz_check_ns": l.ns}
}

// slogLogger is OPA's logging.Logger on a slog.Logger.
type slogLogger struct{ l *slog.Logger }

func (s slogLogger) Debug(f string, a ...any) {
	if s.l.Enabled(context.Background(), slog.LevelDebug) {
		s.l.Debug(fmt.Sprintf(f, a...))
	}
}
func (s slogLogger) Info(f string, a ...any)  { s.l.Info(fmt.Sprintf(f, a...)) }
func (s slogLogger) Warn(f string, a ...any)  { s.l.Warn(fmt.Sprintf(f, a...)) }
func (s slogLogger) Error(f string, a ...any) { s.l.Error(fmt.Sprintf(f, a...)) }
func (s slogLogger) WithFields(m map[string]any) logging.Logger {
	args := make([]any, 0, 2*len(m))
	for k, v := range m {
		args = append(args, k, v)
	}
	return slogLogger{s.l.With(args...)}
}
func (slogLogger) GetLevel() logging.Level { return logging.Debug }
func (slogLogger) SetLevel(logging.Level)  {}
