package checkreq

import (
	"net/http"
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

// joined returns the values of key merged with "," as check_request_utils.cc
// does when it fills AttributeContext.HttpRequest.headers.
func (h headerMap) joined(key string) (string, bool) {
	vs := h.get(key)
	if len(vs) == 0 {
		return "", false
	}
	return strings.Join(vs, ","), true
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
// part of a valid UTF-8 sequence becomes '!'.
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
