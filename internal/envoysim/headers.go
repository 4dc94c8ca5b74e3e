package envoysim

import (
	"net/http"
	"net/textproto"
	"slices"
	"strings"
	"unicode/utf8"
)

// header is one entry of an Envoy header map. Keys are stored lower-case, the
// way Envoy's LowerCaseString and its HTTP/1 codec store them.
type header struct {
	key, value string
}

// headerMap is an ordered multi-map modelled on Envoy's HeaderMapImpl: entries
// keep insertion order and a key may repeat (e.g. set-cookie).
type headerMap []header

func lower(k string) string { return strings.ToLower(k) }

// get returns every value stored under key, in order.
func (h headerMap) get(key string) []string {
	var out []string
	for _, e := range h {
		if e.key == key {
			out = append(out, e.value)
		}
	}
	return out
}

// first returns the first value of key.
func (h headerMap) first(key string) (string, bool) {
	for _, e := range h {
		if e.key == key {
			return e.value, true
		}
	}
	return "", false
}

func (h headerMap) has(key string) bool {
	_, ok := h.first(key)
	return ok
}

// add is Envoy's addCopy: a new entry, never merged.
func (h *headerMap) add(key, value string) {
	*h = append(*h, header{key, value})
}

// set is Envoy's setCopy: afterwards exactly one entry holds the key. The
// first existing entry keeps its position (inline headers such as :path are
// updated in place); the others are removed.
func (h *headerMap) set(key, value string) {
	idx := -1
	out := (*h)[:0]
	for _, e := range *h {
		if e.key == key {
			if idx >= 0 {
				continue
			}
			idx = len(out)
			e.value = value
		}
		out = append(out, e)
	}
	*h = out
	if idx < 0 {
		h.add(key, value)
	}
}

// appendValue is Envoy's appendCopy: the value is joined onto the first entry
// with the delimiter ("," in general, "; " for cookie), or added when absent.
func (h *headerMap) appendValue(key, value string) {
	for i, e := range *h {
		if e.key != key {
			continue
		}
		if value == "" {
			return
		}
		delim := ","
		if key == "cookie" {
			delim = "; "
		}
		if e.value != "" {
			(*h)[i].value = e.value + delim + value
		} else {
			(*h)[i].value = value
		}
		return
	}
	h.add(key, value)
}

// remove deletes every entry of key.
func (h *headerMap) remove(key string) {
	*h = slices.DeleteFunc(*h, func(e header) bool { return e.key == key })
}

// removeIf deletes every entry whose key satisfies pred.
func (h *headerMap) removeIf(pred func(key string) bool) {
	*h = slices.DeleteFunc(*h, func(e header) bool { return pred(e.key) })
}

func (h headerMap) clone() headerMap { return slices.Clone(h) }

// joined returns the values of key merged with "," as check_request_utils.cc
// does when it fills AttributeContext.HttpRequest.headers (§1.2 rule 4).
func (h headerMap) joined(key string) (string, bool) {
	vs := h.get(key)
	if len(vs) == 0 {
		return "", false
	}
	return strings.Join(vs, ","), true
}

// byteSize approximates HeaderMap::byteSize (sum of key and value lengths).
func (h headerMap) byteSize() int {
	n := 0
	for _, e := range h {
		n += len(e.key) + len(e.value)
	}
	return n
}

// toHTTP converts the non-pseudo entries to a net/http header with canonical
// keys, preserving the order of repeated values.
func (h headerMap) toHTTP() http.Header {
	out := make(http.Header, len(h))
	for _, e := range h {
		if strings.HasPrefix(e.key, ":") {
			continue
		}
		k := textproto.CanonicalMIMEHeaderKey(e.key)
		out[k] = append(out[k], e.value)
	}
	return out
}

// fromHTTP converts a net/http header into a headerMap with lower-case keys.
// Keys are visited in sorted order so the result is deterministic; values of
// one key keep their order.
func fromHTTP(hh http.Header) headerMap {
	keys := make([]string, 0, len(hh))
	for k := range hh {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make(headerMap, 0, len(hh))
	for _, k := range keys {
		lk := lower(k)
		for _, v := range hh[k] {
			out = append(out, header{lk, v})
		}
	}
	return out
}

// sanitizeUTF8 mirrors MessageUtil::sanitizeUtf8String: every byte that is not
// part of a valid UTF-8 sequence becomes '!' (§1.2 rule 3).
func sanitizeUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size <= 1 {
			b.WriteByte('!')
			i++
			continue
		}
		b.WriteString(s[i : i+size])
		i += size
	}
	return b.String()
}

// isTokenChar reports whether c is an RFC 7230 tchar.
func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// headerNameIsValid follows HeaderUtility::headerNameIsValid: pseudo-header
// names use HTTP/2 rules (lower-case token after ':'), all others the HTTP/1
// token rule, upper case allowed.
func headerNameIsValid(k string) bool {
	if k == "" {
		return false
	}
	if k[0] == ':' {
		if len(k) == 1 {
			return false
		}
		for i := 1; i < len(k); i++ {
			c := k[i]
			if !isTokenChar(c) || (c >= 'A' && c <= 'Z') {
				return false
			}
		}
		return true
	}
	for i := 0; i < len(k); i++ {
		if !isTokenChar(k[i]) {
			return false
		}
	}
	return true
}

// headerValueIsValid follows nghttp2_check_header_value as used by
// HeaderUtility::headerValueIsValid [inf]: no NUL, CR, LF or other control
// characters except HTAB, no DEL.
func headerValueIsValid(v string) bool {
	for i := 0; i < len(v); i++ {
		c := v[i]
		if (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}
