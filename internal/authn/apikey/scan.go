package apikey

import (
	"encoding/json"
	"io"
	"unicode/utf8"

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

// scanKeys reads the api_keys object from r (size bytes) into b, a
// record at a time through a bounded window (o.window). It returns false
// when the input is not valid JSON or not an object, or holds a record
// larger than the window: b is then unusable. err is a read error.
func scanKeys(r io.Reader, size int64, b *builder, o *options) (ok bool, err error) {
	st := jsonscan.NewStream(r, int(min(int64(o.chunk), size+1)), o.window)
	if _, _, ok := st.Take(func(b []byte, i int) (int, bool) { return jsonscan.Byte(b, i, '{') }); !ok {
		return false, st.Err()
	}
	var (
		n                      int // records taken
		h                      []byte
		v                      view
		inShape, closed, empty bool
		start, vstart, vend    int // window indexes of the entry, its value and the value's end
	)
	// entry takes `"digest": record` and the comma or brace after it, or
	// the closing brace of an empty object. The record is read into v
	// when it has the shape; else it is only passed (inShape false). It
	// has no other effect: Take may call it again on a larger window.
	entry := func(buf []byte, i int) (int, bool) {
		start = i
		p := &scanner{b: buf, i: i}
		if empty = n == 0 && p.peek() == '}'; empty {
			closed = true
			return p.i + 1, true
		}
		if p.peek() != '"' {
			return p.i, false
		}
		var ok bool
		if h, ok = p.str(); !ok || p.peek() != ':' {
			return p.i, false
		}
		p.i++
		p.ws()
		vstart = p.i
		ok, bad := p.record(&v)
		if bad {
			return p.i, false
		}
		if inShape = ok; !ok {
			p.i = vstart
			if !p.skipValue() {
				return p.i, false
			}
		}
		vend = p.i
		switch p.peek() {
		case ',':
		case '}':
			closed = true
		default:
			return p.i, false
		}
		return p.i + 1, true
	}
	for !closed {
		item, _, ok := st.Take(entry)
		if !ok {
			return false, st.Err()
		}
		if empty {
			break // {}
		}
		n++
		if value := item[vstart-start : vend-start]; !utf8.Valid(value) {
			b.notUTF8(h, n)
		} else if inShape {
			b.add(h, &v)
		} else if b.decodeRecord(h, n, item[vstart-start:vend-start]) != nil {
			return false, nil
		}
		if o.progress != nil && n%o.every == 0 {
			o.progress(n, int(st.Offset()), int(size))
		}
	}
	if !st.End() {
		return false, st.Err()
	}
	if o.progress != nil {
		o.progress(n, int(size), int(size))
	}
	return true, nil
}
