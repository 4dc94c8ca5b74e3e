package profile

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"
)

// A template is a JSON document in which a string may carry {{name}}
// placeholders. A string that is exactly one placeholder takes the variable's
// own type (a number stays a number, details stay an object); a member or
// element whose variables are absent is left out. Object key order is kept.

type nodeKind uint8

const (
	kLit nodeKind = iota // pre-encoded JSON
	kStr                 // interpolated string
	kVar                 // exactly one variable, typed
	kObj
	kArr
)

type part struct {
	lit  string
	name string // variable name when non-empty
}

type node struct {
	kind    nodeKind
	raw     []byte // kLit
	parts   []part // kStr
	name    string // kVar
	keys    [][]byte
	members []*node // kObj values, kArr elements
}

func compileJSON(raw json.RawMessage) (*node, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	n, err := compileValue(dec)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("trailing data after JSON value")
	}
	return n, nil
}

func compileValue(dec *json.Decoder) (*node, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			n := &node{kind: kObj}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return nil, err
				}
				k, _ := kt.(string)
				kb, _ := json.Marshal(k)
				v, err := compileValue(dec)
				if err != nil {
					return nil, err
				}
				n.keys = append(n.keys, kb)
				n.members = append(n.members, v)
			}
			_, err := dec.Token()
			return n, err
		case '[':
			n := &node{kind: kArr}
			for dec.More() {
				v, err := compileValue(dec)
				if err != nil {
					return nil, err
				}
				n.members = append(n.members, v)
			}
			_, err := dec.Token()
			return n, err
		}
		return nil, fmt.Errorf("unexpected %v", t)
	case string:
		return compileString(t)
	default:
		b, err := json.Marshal(t)
		return &node{kind: kLit, raw: b}, err
	}
}

func compileString(s string) (*node, error) {
	parts, err := parseParts(s)
	if err != nil {
		return nil, err
	}
	switch {
	case len(parts) == 1 && parts[0].name != "":
		return &node{kind: kVar, name: parts[0].name}, nil
	case len(parts) == 1 || len(parts) == 0:
		b, _ := json.Marshal(s)
		return &node{kind: kLit, raw: b}, nil
	}
	return &node{kind: kStr, parts: parts}, nil
}

// names appends the placeholder names of n (nil: none) to out.
func (n *node) names(out []string) []string {
	if n == nil {
		return out
	}
	switch n.kind {
	case kVar:
		out = append(out, n.name)
	case kStr:
		out = partNames(out, n.parts)
	}
	for _, m := range n.members {
		out = m.names(out)
	}
	return out
}

// partNames appends the placeholder names among parts to out.
func partNames(out []string, parts []part) []string {
	for _, pt := range parts {
		if pt.name != "" {
			out = append(out, pt.name)
		}
	}
	return out
}

// parseParts splits "a {{x}} b" into literal and variable parts.
func parseParts(s string) ([]part, error) {
	var parts []part
	for s != "" {
		i := strings.Index(s, "{{")
		if i < 0 {
			parts = append(parts, part{lit: s})
			break
		}
		if i > 0 {
			parts = append(parts, part{lit: s[:i]})
		}
		j := strings.Index(s[i:], "}}")
		if j < 0 {
			return nil, fmt.Errorf("unclosed placeholder in %q", s)
		}
		name := strings.TrimSpace(s[i+2 : i+j])
		if !validName(name) {
			return nil, fmt.Errorf("bad placeholder name %q", name)
		}
		parts = append(parts, part{name: name})
		s = s[i+j+2:]
	}
	return parts, nil
}

func validName(n string) bool {
	if n == "" || len(n) > 64 {
		return false
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}

// value is a variable's value.
type value struct {
	kind uint8 // vStr, vInt, vRaw
	s    string
	i    int64
	raw  []byte
}

const (
	vStr uint8 = iota
	vInt
	vRaw
)

type lookup func(name string) (value, bool)

// render appends n to dst; ok is false when a variable was absent. With
// holes non-nil, the per-request variables (perRequest) are not resolved but
// recorded in *holes at their offsets in dst (see Prepared).
func (n *node) render(dst []byte, get lookup, holes *[]hole) ([]byte, bool) {
	switch n.kind {
	case kLit:
		return append(dst, n.raw...), true
	case kVar:
		v, ok := get(n.name)
		if !ok {
			return dst, false
		}
		if holes != nil && perRequest(n.name) {
			*holes = append(*holes, hole{off: len(dst), name: n.name, quoted: true})
			return dst, true
		}
		switch v.kind {
		case vInt:
			return strconv.AppendInt(dst, v.i, 10), true
		case vRaw:
			return append(dst, v.raw...), true
		}
		return appendString(dst, v.s), true
	case kStr:
		return appendParts(dst, n.parts, get, holes)
	case kObj, kArr:
		open, end := byte('{'), byte('}')
		if n.kind == kArr {
			open, end = '[', ']'
		}
		dst = append(dst, open)
		first := true
		for i, m := range n.members {
			mark, holeMark := len(dst), holeCount(holes)
			if !first {
				dst = append(dst, ',')
			}
			if n.kind == kObj {
				dst = append(dst, n.keys[i]...)
				dst = append(dst, ':')
			}
			var ok bool
			if dst, ok = m.render(dst, get, holes); !ok {
				dst = truncate(dst, mark, holes, holeMark)
				continue
			}
			first = false
		}
		return append(dst, end), true
	}
	return dst, false
}

// appendParts appends parts as one JSON string, each part escaped on its own
// (so a prepared rendering, which escapes per-request parts later, gives the
// same bytes); ok is false when a variable is absent. holes is as for
// render.
func appendParts(dst []byte, parts []part, get lookup, holes *[]hole) ([]byte, bool) {
	mark, holeMark := len(dst), holeCount(holes)
	dst = append(dst, '"')
	for _, p := range parts {
		if p.name == "" {
			dst = appendEscaped(dst, p.lit)
			continue
		}
		v, ok := get(p.name)
		if !ok {
			return truncate(dst, mark, holes, holeMark), false
		}
		if holes != nil && perRequest(p.name) {
			*holes = append(*holes, hole{off: len(dst), name: p.name})
			continue
		}
		dst = v.appendEscaped(dst)
	}
	return append(dst, '"'), true
}

func holeCount(holes *[]hole) int {
	if holes == nil {
		return 0
	}
	return len(*holes)
}

// truncate drops what was rendered after mark, and the holes recorded there.
func truncate(dst []byte, mark int, holes *[]hole, holeMark int) []byte {
	if holes != nil {
		*holes = (*holes)[:holeMark]
	}
	return dst[:mark]
}

// appendEscaped appends v as it reads inside a JSON string.
func (v value) appendEscaped(dst []byte) []byte {
	switch v.kind {
	case vInt:
		return strconv.AppendInt(dst, v.i, 10)
	case vRaw:
		return appendEscaped(dst, string(v.raw))
	}
	return appendEscaped(dst, v.s)
}

// interpolate renders parts as a string; ok is false when a variable is absent.
func interpolate(parts []part, get lookup) (string, bool) {
	var b strings.Builder
	for _, p := range parts {
		if p.name == "" {
			b.WriteString(p.lit)
			continue
		}
		v, ok := get(p.name)
		if !ok {
			return "", false
		}
		switch v.kind {
		case vInt:
			b.WriteString(strconv.FormatInt(v.i, 10))
		case vRaw:
			b.Write(v.raw)
		default:
			b.WriteString(v.s)
		}
	}
	return b.String(), true
}

// appendString writes s as a JSON string: control characters, quote and
// backslash escaped, U+2028/2029 escaped, invalid UTF-8 replaced. No HTML
// escaping, so the bytes match the published examples.
func appendString(dst []byte, s string) []byte {
	return append(appendEscaped(append(dst, '"'), s), '"')
}

// appendEscaped is appendString without the quotes.
func appendEscaped(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				dst = append(dst, '\\', c)
			case c == '\n':
				dst = append(dst, '\\', 'n')
			case c == '\r':
				dst = append(dst, '\\', 'r')
			case c == '\t':
				dst = append(dst, '\\', 't')
			case c < 0x20 || c == 0x7f:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			dst = append(dst, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			dst = append(dst, '\\', 'u', '2', '0', '2', hex[r&0xf])
		default:
			dst = append(dst, s[i:i+size]...)
		}
		i += size
	}
	return dst
}
