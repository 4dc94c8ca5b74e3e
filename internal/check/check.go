// Package check answers Envoy's Authorization/Check in three steps:
// requestToInput (resolve facts, build the policy input), decide (evaluate the
// policy, failing closed) and toCheckResponse (render the decision in the
// API's own contract). Check never returns a gRPC error.
package check

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/extauthz/extauthz/internal/clientip"
	"github.com/extauthz/extauthz/internal/decision"
	"github.com/extauthz/extauthz/internal/engine"
	"github.com/extauthz/extauthz/internal/memo"
	"github.com/extauthz/extauthz/internal/policy"
	"github.com/extauthz/extauthz/internal/ratelimit"
	"github.com/extauthz/extauthz/internal/replay"
	"github.com/extauthz/extauthz/internal/wire"
)

var (
	errUnknownRoute   = errors.New("context_extensions.route names no route in policy data")
	errUnknownProfile = errors.New("context_extensions.profile names no profile")
	errNoEngine       = errors.New("no policy loaded")
)

// Engines serves the current policy version.
type Engines interface {
	Current() *engine.Engine
}

// Observer receives every finished decision (metrics, decision logs).
type Observer interface {
	Observe(ctx context.Context, d *decision.Decision, elapsed time.Duration)
}

// FactsObserver is an Observer that can also be given the facts the
// decision was taken on (decision logs with --decision-log-facts). It is
// called instead of Observe whenever the facts were resolved.
type FactsObserver interface {
	Observer
	ObserveFacts(ctx context.Context, d *decision.Decision, src replay.Source, elapsed time.Duration)
}

// Server implements envoy.service.auth.v3.Authorization.
type Server struct {
	authv3.UnimplementedAuthorizationServer

	Engines   Engines
	ClientIP  clientip.Resolver
	Now       func() time.Time // default time.Now
	Timeout   time.Duration    // evaluation budget; default 100ms
	Observers []Observer       // metrics, decision logs
	Log       *slog.Logger     // optional; default slog.Default()

	idPrefix string
	seq      atomic.Uint64
	// Quotas is the quota service (its counters outlive policy versions).
	Quotas *ratelimit.Quotas
	// NoMemo turns the decision memo off (benchmarks of raw evaluation).
	NoMemo bool
	// NoQuota leaves quotas alone: the server decides, it does not count
	// (a candidate policy's server, offline comparisons).
	NoQuota    bool
	replayKeys replayKeys // key-id index for Replay
	// FullMetadata adds policy_version, profile, route and the verified
	// identity (subject, key_id, tenant, plan) to the dynamic metadata of
	// every reply (--reply-metadata=full); by default it carries
	// decision_id, reason and shadow_reason (see metadataFields).
	FullMetadata bool
	// Candidate, when set, is offered every finished check to compare with
	// a candidate policy (see candidate.go).
	Candidate *Candidate
}

// NewServer returns a server over engines.
func NewServer(engines Engines, ip clientip.Resolver) *Server {
	return &Server{Engines: engines, ClientIP: ip, idPrefix: newIDPrefix(), Quotas: ratelimit.NewQuotas(ratelimit.Options{})}
}

// Check answers one request. Every outcome, including internal failures, is a
// CheckResponse; a failure is a deny in the API's envelope.
func (s *Server) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	resp, _ := s.serve(ctx, req, false)
	return resp, nil
}

// CheckWire is Check for the gRPC server: a response whose decision came from
// the memo is returned already encoded (wire.Encoded, partly from parts
// encoded once per memoized decision; see encode.go); any other outcome is a
// *authv3.CheckResponse. Both decode to the same message Check returns.
func (s *Server) CheckWire(ctx context.Context, req *authv3.CheckRequest) any {
	resp, enc := s.serve(ctx, req, true)
	if enc != nil {
		return enc
	}
	return resp
}

func (s *Server) serve(ctx context.Context, req *authv3.CheckRequest, encode bool) (*authv3.CheckResponse, wire.Encoded) {
	start := time.Now()
	d, r, resp, enc := s.check(ctx, req, encode)
	if len(s.Observers) > 0 {
		if r != nil && r.identity() != nil {
			d.KeyID, d.Subject = r.identity().KeyID, r.identity().Subject
			d.Tenant = r.tenant
		}
		elapsed := time.Since(start)
		for _, o := range s.Observers {
			s.safely("observer", d, func() {
				if fo, ok := o.(FactsObserver); ok && r != nil && r.eng != nil {
					fo.ObserveFacts(ctx, d, replay.Source{Facts: &r.f, Context: r.req.GetAttributes().GetContextExtensions(), Engine: r.eng}, elapsed)
					return
				}
				o.Observe(ctx, d, elapsed)
			})
		}
	}
	if s.Candidate != nil {
		s.safely("candidate", d, func() { s.Candidate.Offer(req, d) })
	}
	return resp, enc
}

// safely runs what follows a decision (logs, metrics, the candidate
// policy): a panic there is logged, and the response goes out as decided.
func (s *Server) safely(what string, d *decision.Decision, fn func()) {
	defer func() {
		if p := recover(); p != nil {
			s.log().Error(what+" panicked", "decision_id", d.ID, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
		}
	}()
	fn()
}

// check runs the three steps, turning a panic anywhere into internal_error.
// With encode, a response whose decision came from the memo comes back
// encoded instead of as a message (see encode.go).
func (s *Server) check(ctx context.Context, req *authv3.CheckRequest, encode bool) (*decision.Decision, *request, *authv3.CheckResponse, wire.Encoded) {
	now := s.now()
	eng := s.Engines.Current()
	d := &decision.Decision{ID: s.nextID()}
	r := &request{}
	func() {
		defer func() {
			if p := recover(); p != nil {
				s.log().Error("check panicked; denying", "decision_id", d.ID, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
				// Keep what was resolved before the failure: the envelope still
				// carries the API's request id and the API's own profile.
				*d = decision.Decision{ID: d.ID, Reason: decision.InternalError, RequestID: or(r.id, d.ID), Profile: r.f.Profile, Route: d.Route, PolicyVersion: d.PolicyVersion}
				r = nil
			}
		}()
		if eng == nil {
			s.fail(d, errNoEngine)
			return
		}
		d.PolicyVersion = eng.Version
		s.requestToInput(ctx, eng, req, now, d.ID, r)
		d.RequestID, d.Profile = r.id, r.f.Profile
		if r.f.Route != nil {
			d.Route = r.f.Route.ID
		}
		s.decide(ctx, eng, r, d, now)
		s.shadow(ctx, eng, r, d, now)
	}()
	resp, enc := s.respond(eng, r, d, now, encode)
	return d, r, resp, enc
}

// respond is step three, the decision as a response. A panic while
// building it is internal_error, rendered without the request's facts in
// the engine's profile, else in the built-in default one: never a crash
// (grpc-go does not recover a handler's panic), never an allow.
func (s *Server) respond(eng *engine.Engine, r *request, d *decision.Decision, now time.Time, encode bool) (resp *authv3.CheckResponse, enc wire.Encoded) {
	for _, e := range []*engine.Engine{eng, eng, nil} {
		if resp, enc, ok := s.tryRespond(e, r, d, now, encode); ok {
			return resp, enc
		}
		// Again, as internal_error, without what the request resolved.
		*d = decision.Decision{ID: d.ID, Reason: decision.InternalError, RequestID: or(d.RequestID, d.ID), Profile: d.Profile, Route: d.Route, PolicyVersion: d.PolicyVersion}
		r, encode = nil, false
	}
	// Not reached (the built-in profile renders every reason), but a nil
	// response would reach Envoy as an empty one, status OK: a bare deny.
	return bareDeny(d.ID), nil
}

func (s *Server) tryRespond(eng *engine.Engine, r *request, d *decision.Decision, now time.Time, encode bool) (resp *authv3.CheckResponse, enc wire.Encoded, ok bool) {
	defer func() {
		if p := recover(); p != nil {
			s.log().Error("building the response panicked; denying", "decision_id", d.ID, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			ok = false
		}
	}()
	if encode {
		if enc := s.encode(eng, r, d, now); enc != nil {
			return nil, enc, true
		}
	}
	return s.toCheckResponse(eng, r, d, now), nil, true
}

// decide is step two: evaluate the policy within the time budget and turn
// anything but a well-formed decision into internal_error.
func (s *Server) decide(ctx context.Context, eng *engine.Engine, r *request, d *decision.Decision, now time.Time) {
	switch r.problem {
	case "":
	case wire.TooLarge:
		d.Allow, d.Reason = false, decision.RequestTooLarge
		return
	default:
		d.Allow, d.Reason = false, decision.RequestInvalid
		return
	}
	if r.setupFail {
		s.fail(d, errors.New("CheckRequest has no HTTP attributes"))
		return
	}
	if r.routeErr != nil && !r.opaEnvoy { // an OPA-Envoy policy owns context_extensions
		s.fail(d, r.routeErr)
		return
	}
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = 100 * time.Millisecond
	}
	if err := ctx.Err(); err != nil { // the caller gave up: do not spend work, do not allow
		s.fail(d, err)
		return
	}
	if r.opaEnvoy {
		in, reason, err := envoyInput(r.req, r, eng.Policy.InputPaths())
		switch {
		case reason == decision.InternalError:
			s.fail(d, err)
			return
		case reason != "":
			s.log().Info("OPA-Envoy input refused", "decision_id", d.ID, "reason", string(reason), "error", err.Error())
			d.Allow, d.Reason = false, reason
			return
		}
		r.envoyInput = in
	}
	dec := eng.Decider
	if s.NoMemo {
		dec = memo.Plain{Policy: eng.Policy}
	}
	out, entry, err := dec.Decide(ctx, &r.f, r, timeout)
	if err != nil {
		s.fail(d, err)
		return
	}
	r.entry = entry
	reason := decision.Reason(out.Reason)
	switch {
	case !decision.Known(reason):
		s.fail(d, fmt.Errorf("policy returned unknown reason %q", out.Reason))
	case out.Allow != (reason == decision.OK):
		s.fail(d, fmt.Errorf("policy returned allow=%v with reason %q", out.Allow, out.Reason))
	case r.opaEnvoy != (out.Envoy != nil):
		s.fail(d, errors.New("policy decision does not match the OPA-Envoy mode"))
	case r.opaEnvoy && !s.envoyMeta(r, out.Envoy, d):
	case out.Allow && !r.opaEnvoy && r.f.Identity() == nil && (r.f.Route == nil || !r.f.Route.Req.Public):
		s.fail(d, errors.New("policy allowed an unauthenticated request on a non-public route"))
	default:
		d.Allow, d.Reason, d.Variant, d.Details, d.UpstreamHeaders = out.Allow, reason, out.Variant, out.Details, out.UpstreamHeaders
		if d.Allow {
			s.limit(ctx, eng, r, d, now)
		}
	}
}

// envoyMeta checks an OPA-Envoy decision's dynamic metadata and keeps it
// (r.envoy, r.envoyMeta); false after failing d.
func (s *Server) envoyMeta(r *request, e *policy.Envoy, d *decision.Decision) bool {
	r.envoy = e
	if len(e.DynamicMetadata) == 0 {
		return true
	}
	md, err := structpb.NewStruct(e.DynamicMetadata)
	if err != nil {
		s.fail(d, fmt.Errorf("policy dynamic_metadata: %w", err))
		return false
	}
	r.envoyMeta = md
	return true
}

// shadow turns a deny whose reason the route puts in shadow into an allow,
// keeping what the client would have seen (decision.Shadow) for the decision
// log, the metrics and Envoy's metadata. The allow is counted against the
// quota like any other.
func (s *Server) shadow(ctx context.Context, eng *engine.Engine, r *request, d *decision.Decision, now time.Time) {
	if d.Allow || r.f.Route == nil || !r.f.Route.Shadows(d.Reason) {
		return
	}
	out := denyProfile(eng, d).Render(d, now)
	reason := d.Reason
	d.Shadow = &decision.Shadow{Reason: reason, Status: out.Status, Body: string(out.Body)}
	d.Allow, d.Reason, d.Variant, d.Details, d.RateLimit = true, decision.OK, "", nil, nil
	r.quotaHeaders = nil
	if reason != decision.RateLimited {
		s.limit(ctx, eng, r, d, now)
	}
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func (s *Server) fail(d *decision.Decision, err error) {
	d.Allow, d.Reason = false, decision.InternalError
	s.log().Error("check failed closed", "decision_id", d.ID, "request_id", d.RequestID, "error", err.Error())
}

func (s *Server) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Server) log() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.Default()
}

func (s *Server) nextID() string {
	if s.idPrefix == "" {
		s.idPrefix = newIDPrefix()
	}
	var b [48]byte
	return string(strconv.AppendUint(append(b[:0], s.idPrefix...), s.seq.Add(1), 36))
}

func newIDPrefix() string {
	return strconv.FormatInt(time.Now().UnixNano(), 36) + "-"
}

// requestID takes Envoy's x-request-id when it is a sane token, so the
// envelope, the response header and the logs agree with Envoy's access log.
func (s *Server) requestID(headers map[string]string) string {
	v := headers["x-request-id"]
	if v == "" || len(v) > 128 || strings.IndexFunc(v, func(r rune) bool {
		return r <= 0x20 || r >= 0x7f || r == '"' || r == '\\' || r == ','
	}) >= 0 {
		return ""
	}
	return v
}
