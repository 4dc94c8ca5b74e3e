package apikey

import (
	"encoding/json"

	"github.com/extauthz/extauthz/internal/jsonscan"
)

// The scanner reads extauthz.api_keys in its one flat shape:
//
//	{"<digest>": {"id": "...", "subject": "...", "tenants": <any>, "scopes": ["..."],
//	              "expires_at": "...", "status": "...", "allowed_cidrs": ["..."], "plan": "..."}, ...}
//
// It is strict: it takes only valid JSON (RFC 8259, as encoding/json checks
// it), and gives up — scanKeys returns false — on anything else, which
// Parse then hands whole to encoding/json for its error. A record of
// another shape (a field name in other letter case, a repeated or unknown
// field, a null, a value of the wrong type) is skipped strictly and decoded
// by encoding/json alone. Strings with escapes or non-ASCII bytes are
// decoded by encoding/json too (it replaces invalid UTF-8). FuzzScan holds
// the results and errors equal to encoding/json's.

type scanner struct {
	b []byte
	i int
}

func (p *scanner) ws() { p.i = jsonscan.Space(p.b, p.i) }

// skipValue passes one value strictly (jsonscan.Value).
func (p *scanner) skipValue() bool {
	var ok bool
	p.i, ok = jsonscan.Value(p.b, p.i)
	return ok
}

// peek is the next byte after white space (0 at the end).
func (p *scanner) peek() byte {
	p.ws()
	if p.i < len(p.b) {
		return p.b[p.i]
	}
	return 0
}

// str reads a string at p.i (which must be '"'): its bytes, aliasing the
// input when it has no escapes and is ASCII.
func (p *scanner) str() ([]byte, bool) {
	b := p.b
	start := p.i + 1
	for j := start; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			p.i = j + 1
			return b[start:j:j], true
		case c == '\\' || c >= 0x80:
			return p.slowStr()
		case c < 0x20:
			return nil, false
		}
	}
	return nil, false
}

// slowStr decodes a string with escapes or non-ASCII bytes.
func (p *scanner) slowStr() ([]byte, bool) {
	start := p.i
	var ok bool
	if p.i, ok = jsonscan.String(p.b, p.i); !ok {
		return nil, false
	}
	var s string
	if json.Unmarshal(p.b[start:p.i], &s) != nil {
		return nil, false
	}
	return []byte(s), true
}

// strList reads ["...", ...] into dst; ok false: not a list of strings
// (the record goes to encoding/json), bad true: not valid JSON.
func (p *scanner) strList(dst [][]byte) (out [][]byte, ok, bad bool) {
	if p.peek() != '[' {
		return nil, false, false
	}
	p.i++
	out = dst[:0]
	if p.peek() == ']' {
		p.i++
		return out, true, false
	}
	for {
		if p.peek() != '"' {
			return nil, false, false
		}
		s, ok := p.str()
		if !ok {
			return nil, false, true
		}
		out = append(out, s)
		switch p.peek() {
		case ',':
			p.i++
		case ']':
			p.i++
			return out, true, false
		default:
			return nil, false, true
		}
	}
}

const (
	fID = 1 << iota
	fSubject
	fTenants
	fScopes
	fExpires
	fStatus
	fCIDRs
	fPlan
)

// record reads one record at p.i into v. ok false: the record is not in
// the shape (p.i is then anywhere inside it); bad true: not valid JSON.
func (p *scanner) record(v *view) (ok, bad bool) {
	*v = view{scopes: v.scopes[:0], cidrs: v.cidrs[:0]}
	if p.peek() != '{' {
		return false, false
	}
	p.i++
	if p.peek() == '}' {
		p.i++
		return true, false
	}
	seen := 0
	for {
		if p.peek() != '"' {
			return false, true
		}
		name, ok := p.str()
		if !ok {
			return false, true
		}
		if p.peek() != ':' {
			return false, true
		}
		p.i++
		var f int
		var dst *[]byte
		switch string(name) {
		case "id":
			f, dst = fID, &v.id
		case "subject":
			f, dst = fSubject, &v.subject
		case "expires_at":
			f, dst = fExpires, &v.expires
		case "status":
			f, dst = fStatus, &v.status
		case "plan":
			f, dst = fPlan, &v.plan
		case "tenants":
			f = fTenants
		case "scopes":
			f = fScopes
		case "allowed_cidrs":
			f = fCIDRs
		default:
			return false, false
		}
		if seen&f != 0 {
			return false, false
		}
		seen |= f
		switch f {
		case fTenants:
			c := p.peek()
			if c == 'n' {
				return false, false // null: left to encoding/json
			}
			start := p.i
			if !p.skipValue() {
				return false, true
			}
			v.tenants = p.b[start:p.i:p.i]
		case fScopes, fCIDRs:
			l := &v.scopes
			if f == fCIDRs {
				l = &v.cidrs
			}
			out, ok, bad := p.strList(*l)
			if !ok {
				return false, bad
			}
			*l = out
		default:
			if p.peek() != '"' {
				return false, false
			}
			s, ok := p.str()
			if !ok {
				return false, true
			}
			*dst = s
		}
		switch p.peek() {
		case ',':
			p.i++
		case '}':
			p.i++
			return true, false
		default:
			return false, true
		}
	}
}

// scanKeys reads the api_keys object into b. It returns false when raw is
// not valid JSON or not an object: b is then unusable.
func scanKeys(raw []byte, b *builder, o *options) bool {
	p := &scanner{b: raw}
	if p.peek() != '{' {
		return false
	}
	p.i++
	var v view
	n := 0
	if p.peek() == '}' {
		p.i++
	} else {
		for {
			if p.peek() != '"' {
				return false
			}
			h, ok := p.str()
			if !ok || p.peek() != ':' {
				return false
			}
			p.i++
			n++
			p.ws()
			start := p.i
			ok, bad := p.record(&v)
			if bad {
				return false
			}
			if ok {
				b.add(h, &v)
			} else {
				p.i = start
				if !p.skipValue() {
					return false
				}
				if b.decodeRecord(h, n, p.b[start:p.i]) != nil {
					return false
				}
			}
			if o.progress != nil && n%o.every == 0 {
				o.progress(n, p.i, len(raw))
			}
			c := p.peek()
			p.i++
			if c == '}' {
				break
			}
			if c != ',' {
				return false
			}
		}
	}
	p.ws()
	if p.i != len(raw) {
		return false
	}
	if o.progress != nil {
		o.progress(n, len(raw), len(raw))
	}
	return true
}
