package replay

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/extauthz/extauthz/internal/decision"
)

// Record is one decision read back from a decision log.
type Record struct {
	Line          int // 1-based line of the file
	DecisionID    string
	RequestID     string
	Time          time.Time
	PolicyVersion string
	// Reason is the recorded verdict on the request: the shadowed reason
	// when the deny was shadowed, ok for a quota denial (quotas are not
	// replayed), else the decision's reason.
	Reason decision.Reason
	Facts  *Facts // nil: the record carries no facts
	// Masked names the record's facts a decision-log policy erased or
	// masked (the OPA upload form).
	Masked []string
}

// MaxLine bounds a line of a decision-log file (an OPA upload body of many
// events is one line).
const MaxLine = 64 << 20

// EventPath is the path of the sidecar's OPA decision-log events.
const EventPath = "extauthz/decision"

// slogRecord is a decision line of the sidecar's JSON log (internal/decisionlog).
type slogRecord struct {
	Time          time.Time       `json:"time"`
	Msg           string          `json:"msg"`
	DecisionID    string          `json:"decision_id"`
	RequestID     string          `json:"request_id"`
	Reason        decision.Reason `json:"reason"`
	PolicyVersion string          `json:"policy_version"`
	Shadow        *struct {
		Reason decision.Reason `json:"reason"`
	} `json:"shadow"`
	Facts json.RawMessage `json:"facts"`
}

// opaEvent is a decision as the OPA decision_logs plugin uploads it.
type opaEvent struct {
	DecisionID string    `json:"decision_id"`
	Path       string    `json:"path"`
	Timestamp  time.Time `json:"timestamp"`
	Input      *struct {
		RequestID string          `json:"request_id"`
		Facts     json.RawMessage `json:"facts"`
	} `json:"input"`
	Result *struct {
		Reason       decision.Reason `json:"reason"`
		ShadowReason decision.Reason `json:"shadow_reason"`
	} `json:"result"`
	Bundles map[string]struct {
		Revision string `json:"revision"`
	} `json:"bundles"`
	Erased []string `json:"erased"`
	Masked []string `json:"masked"`
}

// Read reads a decision-log file: JSON lines, each a decision record of the
// sidecar's log, an OPA decision-log event or a JSON array of them (an
// upload's body). Lines that are not JSON objects with "msg" "decision" or
// an event's "path" are skipped when they are other log lines of the
// sidecar (a JSON object with a "msg"), and reported through bad otherwise;
// a line over MaxLine is reported and skipped. Read fails only when r does.
func Read(r io.Reader, rec func(Record), bad func(line int, err error)) error {
	br := bufio.NewReaderSize(r, 64<<10)
	for n := 1; ; n++ {
		line, err := readLine(br)
		if errors.Is(err, errTooLong) {
			bad(n, fmt.Errorf("line over %d bytes", MaxLine))
			continue
		}
		if len(bytes.TrimSpace(line)) > 0 {
			parseLine(n, line, rec, bad)
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

var errTooLong = errors.New("line too long")

// readLine reads one line (without its newline), at most MaxLine bytes;
// a longer one is consumed and errTooLong returned.
func readLine(br *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		if len(line)+len(chunk) > MaxLine {
			line = nil
			for errors.Is(err, bufio.ErrBufferFull) {
				_, err = br.ReadSlice('\n')
			}
			if err != nil && err != io.EOF {
				return nil, err
			}
			return nil, errTooLong
		}
		line = append(line, chunk...)
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		return bytes.TrimSuffix(line, []byte("\n")), err
	}
}

func parseLine(n int, line []byte, rec func(Record), bad func(int, error)) {
	line = bytes.TrimSpace(line)
	if line[0] == '[' {
		var events []json.RawMessage
		if err := json.Unmarshal(line, &events); err != nil {
			bad(n, fmt.Errorf("not JSON: %v", clipErr(err)))
			return
		}
		for i, ev := range events {
			r, skip, err := parseObject(ev)
			switch {
			case err != nil:
				bad(n, fmt.Errorf("event %d: %w", i, err))
			case !skip:
				r.Line = n
				rec(r)
			}
		}
		return
	}
	r, skip, err := parseObject(line)
	switch {
	case err != nil:
		bad(n, err)
	case !skip:
		r.Line = n
		rec(r)
	}
}

// parseObject reads one decision record; skip is true for another line of
// the sidecar's log.
func parseObject(b []byte) (r Record, skip bool, err error) {
	var probe struct {
		Msg  *string `json:"msg"`
		Path *string `json:"path"`
	}
	if err := json.Unmarshal(b, &probe); err != nil {
		return r, false, fmt.Errorf("not a JSON object: %v", clipErr(err))
	}
	var raw json.RawMessage
	switch {
	case probe.Msg != nil && *probe.Msg == "decision":
		var s slogRecord
		if err := json.Unmarshal(b, &s); err != nil {
			return r, false, fmt.Errorf("decision record: %v", clipErr(err))
		}
		r = Record{DecisionID: s.DecisionID, RequestID: s.RequestID, Time: s.Time, PolicyVersion: s.PolicyVersion, Reason: s.Reason}
		if s.Shadow != nil {
			r.Reason = s.Shadow.Reason
		}
		raw = s.Facts
	case probe.Path != nil && *probe.Path == EventPath:
		var e opaEvent
		if err := json.Unmarshal(b, &e); err != nil {
			return r, false, fmt.Errorf("decision event: %v", clipErr(err))
		}
		if e.Result == nil {
			return r, false, errors.New("decision event: no result")
		}
		r = Record{DecisionID: e.DecisionID, Time: e.Timestamp, PolicyVersion: e.Bundles["extauthz"].Revision, Reason: e.Result.Reason}
		if e.Result.ShadowReason != "" {
			r.Reason = e.Result.ShadowReason
		}
		if e.Input != nil {
			r.RequestID, raw = e.Input.RequestID, e.Input.Facts
		}
		for _, p := range append(e.Erased, e.Masked...) {
			if p == "/input" || strings.HasPrefix(p, "/input/facts") {
				r.Masked = append(r.Masked, clip(p))
			}
		}
	case probe.Msg != nil:
		return r, true, nil // another line of the sidecar's log
	default:
		return r, false, errors.New(`not a decision record (no "msg":"decision", no "path":"` + EventPath + `")`)
	}
	if !decision.Known(r.Reason) {
		return r, false, fmt.Errorf("reason %q is not one of the sidecar's", clip(string(r.Reason)))
	}
	if r.Reason == decision.RateLimited {
		r.Reason = decision.OK
	}
	r.DecisionID, r.RequestID, r.PolicyVersion = clip(r.DecisionID), clip(r.RequestID), clip(r.PolicyVersion)
	if len(raw) > 0 && string(raw) != "null" {
		var present map[string]json.RawMessage
		if err := json.Unmarshal(raw, &present); err != nil {
			return r, false, fmt.Errorf("facts: %v", clipErr(err))
		}
		for _, k := range requiredFacts {
			if _, ok := present[k]; !ok {
				return r, false, fmt.Errorf("facts.%s: missing", k)
			}
		}
		f := &Facts{}
		d := json.NewDecoder(bytes.NewReader(raw))
		d.DisallowUnknownFields()
		if err := d.Decode(f); err != nil {
			return r, false, fmt.Errorf("facts: %v", clipErr(err))
		}
		if err := f.Check(); err != nil {
			return r, false, err
		}
		r.Facts = f
	}
	return r, false, nil
}

// requiredFacts are the members every facts record has.
var requiredFacts = []string{"v", "method", "path", "credential", "client_ip", "browser", "idempotency_key"}

// clipErr is an error's text made safe to print (JSON errors quote input).
func clipErr(err error) string {
	s := err.Error()
	if len(s) > 160 {
		s = s[:160] + "…"
	}
	return clip2(s)
}

func clip2(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r > 0x7e && r != '…') {
			return '?'
		}
		return r
	}, s)
}
