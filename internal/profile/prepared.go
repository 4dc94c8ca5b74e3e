package profile

import (
	"slices"
	"time"

	"github.com/extauthz/extauthz/internal/decision"
)

// Prepared is a deny's rendering with everything its decision fixes already
// resolved. What is left varies per request: the request id (in the body and
// the request-id header), the decision id and the timestamp. A server that
// sees the same decision again (its decision memo) prepares it once and
// finishes it per check with AppendBody and RequestIDHeader, which give
// byte for byte what Render gives.
type Prepared struct {
	Status int
	// Headers are Render's headers in its order. When ReqID >= 0, the entry
	// at that index (the last) is the request-id header, whose value
	// RequestIDHeader gives per request.
	Headers [][2]string
	ReqID   int

	lit   []byte // the body's fixed bytes
	holes []hole // where per-request values go, in order

	withReqID, withID bool // presence of the request and decision ids it was prepared for
}

// A hole is a per-request variable at offset off of the fixed bytes,
// written as a JSON string (quoted) or inside one.
type hole struct {
	off    int
	name   string
	quoted bool
}

// perRequest reports the variables Prepared leaves open.
func perRequest(name string) bool {
	return name == "request_id" || name == "decision_id" || name == "timestamp"
}

func partsPerRequest(parts []part) bool {
	return slices.ContainsFunc(parts, func(p part) bool { return perRequest(p.name) })
}

func (n *node) perRequest() bool {
	switch n.kind {
	case kVar:
		return perRequest(n.name)
	case kStr:
		return partsPerRequest(n.parts)
	}
	return slices.ContainsFunc(n.members, (*node).perRequest)
}

// Prepare resolves what d fixes in its rendering. It returns nil when the
// rendering cannot be split (a rate-limited decision, or a per-request
// variable inside the message, details or a profile header); Render is used
// then.
func (p *Profile) Prepare(d *decision.Decision) *Prepared {
	r := p.reason(d)
	if d.RateLimit != nil || partsPerRequest(r.message) || (r.details != nil && r.details.perRequest()) ||
		slices.ContainsFunc(p.headers, headerPerRequest) || slices.ContainsFunc(r.headers, headerPerRequest) {
		return nil
	}
	// Render's headers, the request id's value left blank; and the body
	// rendered with the per-request variables left as holes.
	out := p.Render(d, time.Time{})
	pr := &Prepared{Status: out.Status, Headers: out.Headers, ReqID: -1, withReqID: d.RequestID != "", withID: d.ID != ""}
	if pr.withReqID && !slices.ContainsFunc(p.headers, func(h header) bool { return h.name == p.reqIDHeader }) &&
		!slices.ContainsFunc(r.headers, func(h header) bool { return h.name == p.reqIDHeader }) {
		pr.ReqID = len(pr.Headers) - 1 // last, as Render puts it
		pr.Headers[pr.ReqID][1] = ""
	}
	pr.lit, _ = p.body.render(make([]byte, 0, len(out.Body)), newVars(d, r, time.Time{}).get, &pr.holes)
	return pr
}

func headerPerRequest(h header) bool { return partsPerRequest(h.parts) }

// Fits reports whether d can be finished from pr: it has the same
// per-request variables present as the decision pr was prepared for.
func (pr *Prepared) Fits(d *decision.Decision) bool {
	return pr != nil && d.RateLimit == nil && (d.RequestID != "") == pr.withReqID && (d.ID != "") == pr.withID
}

// AppendBody appends the body Render gives for d at now. d must fit pr.
func (pr *Prepared) AppendBody(dst []byte, d *decision.Decision, now time.Time) []byte {
	prev := 0
	for _, h := range pr.holes {
		dst = append(dst, pr.lit[prev:h.off]...)
		prev = h.off
		if h.quoted {
			dst = append(dst, '"')
		}
		switch h.name {
		case "request_id":
			dst = appendEscaped(dst, d.RequestID)
		case "decision_id":
			dst = appendEscaped(dst, d.ID)
		case "timestamp":
			dst = now.UTC().AppendFormat(dst, time.RFC3339) // nothing in it needs escaping
		}
		if h.quoted {
			dst = append(dst, '"')
		}
	}
	return append(dst, pr.lit[prev:]...)
}

// RequestIDHeader is the value of the request-id header (Headers[ReqID])
// for d.
func (pr *Prepared) RequestIDHeader(d *decision.Decision) string { return sanitizeHeader(d.RequestID) }
