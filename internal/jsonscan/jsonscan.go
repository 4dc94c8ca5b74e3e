// Package jsonscan passes over JSON values strictly without decoding them:
// the fast paths of large documents (data.json, millions of API keys) find
// where a value ends, and whether it is valid JSON exactly as
// encoding/json's checker decides it, in one pass that allocates nothing.
// Callers decode what they need themselves and leave any input this
// package refuses to encoding/json, for its error.
package jsonscan

// MaxDepth is encoding/json's nesting limit; deeper input is refused.
const MaxDepth = 10000

// IsSpace reports JSON white space.
func IsSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// Space returns the index of the first byte at or after i that is not white
// space.
func Space(b []byte, i int) int {
	for i < len(b) && IsSpace(b[i]) {
		i++
	}
	return i
}

// String passes the string that starts at b[i] (a '"') and returns the
// index after its closing quote; ok is false when it is not a valid JSON
// string. Invalid UTF-8 is valid here, as for encoding/json (which
// replaces it when decoding).
func String(b []byte, i int) (end int, ok bool) {
	if i >= len(b) || b[i] != '"' {
		return i, false
	}
	j := i + 1
	for j < len(b) {
		c := b[j]
		switch {
		case c == '"':
			return j + 1, true
		case c < 0x20:
			return j, false
		case c == '\\':
			if j+1 >= len(b) {
				return j, false
			}
			switch b[j+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				j += 2
			case 'u':
				if j+6 > len(b) {
					return j, false
				}
				for _, h := range b[j+2 : j+6] {
					if !(h >= '0' && h <= '9' || h >= 'a' && h <= 'f' || h >= 'A' && h <= 'F') {
						return j, false
					}
				}
				j += 6
			default:
				return j, false
			}
		default:
			j++
		}
	}
	return j, false
}

// Value passes the value that starts at or after b[i] (after white space)
// and returns the index after it; ok is false when it is not valid JSON.
func Value(b []byte, i int) (end int, ok bool) { return value(b, i, 1) }

func value(b []byte, i, depth int) (int, bool) {
	if depth > MaxDepth {
		return i, false
	}
	i = Space(b, i)
	if i >= len(b) {
		return i, false
	}
	switch b[i] {
	case '"':
		return String(b, i)
	case '{':
		i = Space(b, i+1)
		if i < len(b) && b[i] == '}' {
			return i + 1, true
		}
		for {
			var ok bool
			if i, ok = String(b, Space(b, i)); !ok {
				return i, false
			}
			if i = Space(b, i); i >= len(b) || b[i] != ':' {
				return i, false
			}
			if i, ok = value(b, i+1, depth+1); !ok {
				return i, false
			}
			if i = Space(b, i); i >= len(b) {
				return i, false
			}
			switch b[i] {
			case ',':
				i++
			case '}':
				return i + 1, true
			default:
				return i, false
			}
		}
	case '[':
		i = Space(b, i+1)
		if i < len(b) && b[i] == ']' {
			return i + 1, true
		}
		for {
			var ok bool
			if i, ok = value(b, i, depth+1); !ok {
				return i, false
			}
			if i = Space(b, i); i >= len(b) {
				return i, false
			}
			switch b[i] {
			case ',':
				i++
			case ']':
				return i + 1, true
			default:
				return i, false
			}
		}
	case 't':
		return lit(b, i, "true")
	case 'f':
		return lit(b, i, "false")
	case 'n':
		return lit(b, i, "null")
	}
	return Number(b, i)
}

func lit(b []byte, i int, w string) (int, bool) {
	if len(b)-i < len(w) || string(b[i:i+len(w)]) != w {
		return i, false
	}
	return i + len(w), true
}

// Number passes -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? at b[i].
func Number(b []byte, i int) (int, bool) {
	digits := func() bool {
		s := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		return i > s
	}
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && b[i] >= '1' && b[i] <= '9':
		digits()
	default:
		return i, false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if !digits() {
			return i, false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if !digits() {
			return i, false
		}
	}
	return i, true
}

// Valid reports whether b is one valid JSON value (with white space around
// it), as json.Valid does.
func Valid(b []byte) bool {
	i, ok := Value(b, 0)
	return ok && Space(b, i) == len(b)
}
