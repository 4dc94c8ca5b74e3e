package loadtest

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
)

// Pool is a small set of client connections to one server; workers share
// them round-robin, as Envoy shares a few HTTP/2 connections per worker
// thread.
type Pool struct {
	conns []*grpc.ClientConn
}

// Dial opens n connections to addr (plaintext, loopback).
func Dial(addr string, n int) (*Pool, error) {
	p := &Pool{}
	for range max(n, 1) {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			p.Close()
			return nil, err
		}
		cc.Connect()
		p.conns = append(p.conns, cc)
	}
	return p, nil
}

// Close closes every connection.
func (p *Pool) Close() {
	for _, c := range p.conns {
		c.Close()
	}
}

// Drive is one bounded run against one server.
type Drive struct {
	Mix         *Mix
	Concurrency int           // worker goroutines
	Requests    int           // checks to send
	MaxDuration time.Duration // stop early after this long
	// CheckDecisions compares each response with the case's expected
	// status (off for the no-op server, which allows everything).
	CheckDecisions bool
	// Seq offsets the x-request-id sequence so ids never repeat across runs.
	Seq uint64
	// DecodeFull decodes every reply whole, as Envoy does, instead of
	// reading only its decision (see reply).
	DecodeFull bool
	// FailClosedAfter, when positive, is the server's own deadline (for
	// extauthz the earlier of --eval-timeout and --check-timeout): a deny
	// with reason internal_error that took at least this long is counted
	// as Deadline, a check the server failed closed because it ran out of
	// time, not as an unexpected decision.
	FailClosedAfter time.Duration
	// LateAfter, when positive, counts the answers that took longer (Late):
	// EnvoyTimeout, past which Envoy would have denied the request itself.
	LateAfter time.Duration
}

// EnvoyTimeout is the ext_authz timeout of the shipped Envoy configuration
// (envoy/envoy.yaml, 0.25s): an answer later than this is one Envoy no
// longer waits for, and it denies the request (failure_mode_allow false).
const EnvoyTimeout = 250 * time.Millisecond

// FailedAtDeadline is how problem lists name Outcome.Deadline: an
// overloaded server's denies, reported, but not a failure of the run.
const FailedAtDeadline = "failed closed at the server's deadline (overload, not a wrong decision)"

// ReasonInternalError is the reason extauthz gives a check it failed
// closed (an evaluation error, a deadline).
const ReasonInternalError = "internal_error"

// Outcome is what one Drive observed from the client side.
type Outcome struct {
	Sent       int // requests completed (OK or error)
	Errors     int // gRPC errors
	Unexpected int // responses whose decision differs from the case's (Deadline excluded)
	// Deadline: denies the server failed closed at its own deadline
	// (Drive.FailClosedAfter): reason internal_error, at least that late.
	// An overloaded server's answer, not a wrong decision.
	Deadline int
	// Late: answers that took longer than Drive.LateAfter, whatever they
	// said (Envoy would have denied them on its timeout).
	Late     int
	Elapsed  time.Duration
	TimedOut bool // stopped by MaxDuration before Requests
	Latency  Latencies
	// ReplyBytes sums the size of every reply received (the encoded
	// CheckResponse, without gRPC and HTTP/2 framing).
	ReplyBytes int64
	// A few examples, for diagnosis.
	ErrorSamples      []string
	UnexpectedSamples []string
	DeadlineSamples   []string
}

// Throughput is completed checks per second.
func (o Outcome) Throughput() float64 {
	if o.Elapsed <= 0 {
		return 0
	}
	return float64(o.Sent) / o.Elapsed.Seconds()
}

const maxSamples = 5

type workerResult struct {
	lat                         []time.Duration
	replyBytes                  int64
	errs, unexpected, dl, late  int
	errSamples, unexp, dlSample []string
}

// Run sends d.Requests checks from d.Concurrency workers over the pool.
func (d Drive) Run(ctx context.Context, p *Pool) Outcome {
	conc := max(d.Concurrency, 1)
	maxDur := d.MaxDuration
	if maxDur <= 0 {
		maxDur = time.Minute
	}
	// Calls that hang past the level's budget fail rather than stall the run.
	ctx, cancel := context.WithTimeout(ctx, maxDur+10*time.Second)
	defer cancel()

	var next atomic.Int64
	results := make([]workerResult, conc)
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(maxDur)
	var timedOut atomic.Bool
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res := &results[w]
			res.lat = make([]time.Duration, 0, d.Requests/conc+1)
			conn := p.conns[w%len(p.conns)]
			codec := grpc.ForceCodecV2(newReplyCodec(d.DecodeFull))
			var rep reply
			// Each worker owns its requests, so it can stamp a fresh request id.
			reqs := make([]*reqSlot, len(d.Mix.Cases))
			for i, c := range d.Mix.Cases {
				r := c.Request()
				reqs[i] = &reqSlot{r: r, h: r.Attributes.Request.Http.Headers}
			}
			idBuf := make([]byte, 0, 48)
			for {
				i := next.Add(1) - 1
				if i >= int64(d.Requests) {
					return
				}
				ci := d.Mix.Schedule[int(i)%len(d.Mix.Schedule)]
				slot := reqs[ci]
				idBuf = append(idBuf[:0], "lt-"...)
				idBuf = strconv.AppendUint(idBuf, d.Seq+uint64(i), 16)
				id := string(idBuf)
				slot.h["x-request-id"] = id
				slot.r.Attributes.Request.Http.Id = id
				if fresh := d.Mix.Cases[ci].FreshSource; fresh != nil {
					a := fresh(d.Seq + uint64(i))
					slot.h["x-forwarded-for"], slot.h["x-envoy-external-address"] = a, a
					slot.r.Attributes.Source.Address.GetSocketAddress().Address = a
				}

				t0 := time.Now()
				err := conn.Invoke(ctx, authv3.Authorization_Check_FullMethodName, slot.r, &rep, codec)
				t1 := time.Now()
				if err == nil && rep.err != nil {
					err = rep.err
				}
				lat := t1.Sub(t0)
				res.lat = append(res.lat, lat)
				res.replyBytes += int64(len(rep.b))
				if d.LateAfter > 0 && lat > d.LateAfter {
					res.late++
				}
				if err != nil {
					res.errs++
					if len(res.errSamples) < maxSamples {
						res.errSamples = append(res.errSamples, fmt.Sprintf("%s: %v", d.Mix.Cases[ci].Name, err))
					}
				} else if d.CheckDecisions {
					if got := rep.status; got != d.Mix.Cases[ci].Want {
						reason := rep.reason()
						sample := fmt.Sprintf("%s: got %d (reason %q) after %s, want %d",
							d.Mix.Cases[ci].Name, got, reason, fmtDur(lat), d.Mix.Cases[ci].Want)
						if d.FailClosedAfter > 0 && got != 200 && reason == ReasonInternalError && lat >= d.FailClosedAfter {
							res.dl++
							if len(res.dlSample) < maxSamples {
								res.dlSample = append(res.dlSample, sample)
							}
						} else {
							res.unexpected++
							if len(res.unexp) < maxSamples {
								res.unexp = append(res.unexp, sample)
							}
						}
					}
				}
				if t1.After(deadline) {
					timedOut.Store(true)
					return
				}
			}
		}()
	}
	wg.Wait()
	o := Outcome{Elapsed: time.Since(start), TimedOut: timedOut.Load()}
	var all []time.Duration
	for _, r := range results {
		all = append(all, r.lat...)
		o.Errors += r.errs
		o.Unexpected += r.unexpected
		o.ReplyBytes += r.replyBytes
		o.Deadline += r.dl
		o.Late += r.late
		o.ErrorSamples = appendUpTo(o.ErrorSamples, r.errSamples)
		o.UnexpectedSamples = appendUpTo(o.UnexpectedSamples, r.unexp)
		o.DeadlineSamples = appendUpTo(o.DeadlineSamples, r.dlSample)
	}
	o.Sent = len(all)
	o.Latency = Summarize(all)
	return o
}

type reqSlot struct {
	r *authv3.CheckRequest
	h map[string]string
}

func appendUpTo(dst, src []string) []string {
	for _, s := range src {
		if len(dst) >= maxSamples {
			break
		}
		dst = append(dst, s)
	}
	return dst
}

// Decision is the HTTP status a CheckResponse tells Envoy to apply: 200 for
// an allow (gRPC status OK), else the denied response's status (403 when a
// deny carries none, as Envoy defaults).
func Decision(resp *authv3.CheckResponse) int {
	if codes.Code(resp.GetStatus().GetCode()) == codes.OK {
		return 200
	}
	if c := int(resp.GetDeniedResponse().GetStatus().GetCode()); c != 0 {
		return c
	}
	return 403
}
