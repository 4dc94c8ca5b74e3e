package envoyconfig

import (
	"strconv"
	"strings"
	"unicode"

	yamlv3 "go.yaml.in/yaml/v3"
)

// fieldPath is a field path: field names, "[3]" list indices and "[key]" map
// keys, rendered as static_resources.listeners[0].name.
type fieldPath []string

func (p fieldPath) field(name string) fieldPath { return p.with(name) }
func (p fieldPath) index(i int) fieldPath       { return p.with("[" + strconv.Itoa(i) + "]") }
func (p fieldPath) key(k string) fieldPath      { return p.with("[" + k + "]") }

// with returns a copy: paths are shared between siblings during walks.
func (p fieldPath) with(seg string) fieldPath {
	q := make(fieldPath, len(p), len(p)+1)
	copy(q, p)
	return append(q, seg)
}

func (p fieldPath) String() string {
	var sb strings.Builder
	for i, s := range p {
		if i > 0 && !strings.HasPrefix(s, "[") {
			sb.WriteByte('.')
		}
		sb.WriteString(s)
	}
	return sb.String()
}

// parsePath is the inverse of fieldPath.String (map keys must not contain
// "]" or start a segment with ".", which holds for Envoy's names).
func parsePath(s string) fieldPath {
	var p fieldPath
	for s != "" {
		switch {
		case s[0] == '.':
			s = s[1:]
		case s[0] == '[':
			end := strings.IndexByte(s, ']')
			if end < 0 {
				return append(p, s)
			}
			p = append(p, s[:end+1])
			s = s[end+1:]
		default:
			end := strings.IndexAny(s, ".[")
			if end < 0 {
				end = len(s)
			}
			p = append(p, s[:end])
			s = s[end:]
		}
	}
	return p
}

// goFieldToPath turns a PGV field ("StaticResources", "Listeners[0]",
// "TypedPerFilterConfig[envoy.filters.http.ext_authz]") into path segments
// with proto-style snake_case names.
func goFieldToPath(f string) fieldPath {
	var p fieldPath
	name, rest, _ := strings.Cut(f, "[")
	p = append(p, snake(name))
	if rest != "" {
		p = append(p, "["+rest)
	}
	return p
}

func snake(s string) string {
	var sb strings.Builder
	rs := []rune(s)
	for i, r := range rs {
		if unicode.IsUpper(r) {
			if i > 0 && (unicode.IsLower(rs[i-1]) || unicode.IsDigit(rs[i-1])) {
				sb.WriteByte('_')
			}
			r = unicode.ToLower(r)
		}
		sb.WriteRune(r)
	}
	return sb.String()
}

// jsonPathAt returns the path of the innermost JSON member or element that
// starts at or before off. data is the compact JSON made from the YAML.
func jsonPathAt(data []byte, off int) fieldPath {
	s := &jsonScan{data: data, off: off}
	s.value(nil)
	return s.best
}

type jsonScan struct {
	data []byte
	pos  int
	off  int
	best fieldPath
	done bool
}

func (s *jsonScan) mark(at int, p fieldPath) {
	if s.done {
		return
	}
	if at > s.off {
		s.done = true
		return
	}
	s.best = p
}

func (s *jsonScan) ws() {
	for s.pos < len(s.data) && strings.IndexByte(" \t\r\n", s.data[s.pos]) >= 0 {
		s.pos++
	}
}

func (s *jsonScan) value(p fieldPath) {
	s.ws()
	if s.pos >= len(s.data) || s.done {
		return
	}
	s.mark(s.pos, p)
	switch s.data[s.pos] {
	case '{':
		s.pos++
		for !s.done {
			s.ws()
			if s.pos >= len(s.data) || s.data[s.pos] == '}' {
				s.pos++
				return
			}
			if s.data[s.pos] == ',' {
				s.pos++
				continue
			}
			start := s.pos
			kp := p.field(s.str())
			s.mark(start, kp)
			s.ws()
			if s.pos < len(s.data) && s.data[s.pos] == ':' {
				s.pos++
			}
			s.value(kp)
		}
	case '[':
		s.pos++
		for i := 0; !s.done; {
			s.ws()
			if s.pos >= len(s.data) || s.data[s.pos] == ']' {
				s.pos++
				return
			}
			if s.data[s.pos] == ',' {
				s.pos++
				continue
			}
			s.value(p.index(i))
			i++
		}
	case '"':
		s.str()
	default:
		for s.pos < len(s.data) && strings.IndexByte(",}] \t\r\n", s.data[s.pos]) < 0 {
			s.pos++
		}
	}
}

// str consumes a JSON string and returns it (escapes other than \" and \\
// are kept verbatim; keys in Envoy configs are plain ASCII).
func (s *jsonScan) str() string {
	if s.pos >= len(s.data) || s.data[s.pos] != '"' {
		return ""
	}
	s.pos++
	var sb strings.Builder
	for s.pos < len(s.data) {
		c := s.data[s.pos]
		s.pos++
		switch c {
		case '"':
			return sb.String()
		case '\\':
			if s.pos < len(s.data) {
				sb.WriteByte(s.data[s.pos])
				s.pos++
			}
		default:
			sb.WriteByte(c)
		}
	}
	return sb.String()
}

// locator finds field paths in a YAML source; the source is parsed once, on
// first use.
type locator struct {
	src    []byte
	parsed bool
	doc    *yamlv3.Node // nil when src is not parseable YAML
}

// locate fills e.Line and e.Column with the position of e.Path in the YAML
// source (the deepest node of the path that exists).
func (l *locator) locate(e *FieldError) {
	if e.Line > 0 {
		return
	}
	if !l.parsed {
		l.parsed = true
		var doc yamlv3.Node
		if len(l.src) > 0 && yamlv3.Unmarshal(l.src, &doc) == nil {
			l.doc = &doc
		}
	}
	if l.doc == nil {
		return
	}
	n := l.doc
	line, col := 0, 0
	for _, seg := range parsePath(e.Path) {
		n = deref(n)
		if n == nil {
			break
		}
		next, at := child(n, seg)
		if next == nil {
			break
		}
		line, col = at.Line, at.Column
		n = next
	}
	if line == 0 {
		if n := deref(l.doc); n != nil {
			line, col = n.Line, n.Column
		}
	}
	e.Line, e.Column = line, col
}

func deref(n *yamlv3.Node) *yamlv3.Node {
	for n != nil {
		switch {
		case n.Kind == yamlv3.DocumentNode && len(n.Content) > 0:
			n = n.Content[0]
		case n.Kind == yamlv3.AliasNode:
			n = n.Alias
		default:
			return n
		}
	}
	return nil
}

// child returns the value node for a path segment and the node whose
// position to report (the key for mappings).
func child(n *yamlv3.Node, seg string) (*yamlv3.Node, *yamlv3.Node) {
	bracket := strings.HasPrefix(seg, "[") && strings.HasSuffix(seg, "]")
	switch n.Kind {
	case yamlv3.SequenceNode:
		if !bracket {
			return nil, nil
		}
		i, err := strconv.Atoi(seg[1 : len(seg)-1])
		if err != nil || i < 0 || i >= len(n.Content) {
			return nil, nil
		}
		return n.Content[i], n.Content[i]
	case yamlv3.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			if bracket && k.Value == seg[1:len(seg)-1] || !bracket && sameField(k.Value, seg) {
				return n.Content[i+1], k
			}
		}
	}
	return nil, nil
}

// sameField matches a proto field name with a YAML key in either proto
// (snake_case) or JSON (camelCase) spelling.
func sameField(yamlKey, field string) bool {
	norm := func(s string) string { return strings.ToLower(strings.ReplaceAll(s, "_", "")) }
	return norm(yamlKey) == norm(field)
}
