package policy

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"unicode/utf8"

	"github.com/extauthz/extauthz/internal/jsonscan"
	"github.com/extauthz/extauthz/internal/jsonx"
)

// Section is a raw section of data.json (RawSections: the API keys) that
// is not held in memory: its place in the file, read again when the
// sidecar indexes it, with the SHA-256 and member count taken on the first
// pass. A section of a source built in memory (a bundle, a test) holds its
// bytes instead.
type Section struct {
	Digest [sha256.Size]byte // SHA-256 of its bytes
	Size   int64             // bytes, from its first to its last
	Count  int               // members when it is an object; 0 when not counted
	ra     io.ReaderAt
	off    int64
}

// BytesSection is a section held in memory.
func BytesSection(b []byte) *Section {
	return &Section{Digest: sha256.Sum256(b), Size: int64(len(b)), ra: bytes.NewReader(b)}
}

// Reader reads the section from its first byte.
func (s *Section) Reader() io.Reader { return io.NewSectionReader(s.ra, s.off, s.Size) }

// Bytes reads the whole section into memory (the validate command's policy
// tests need it decoded; the server never does this).
func (s *Section) Bytes() ([]byte, error) { return io.ReadAll(s.Reader()) }

// Empty reports a section that is null or an empty object.
func (s *Section) Empty() bool {
	if s.Size > 64 {
		return false
	}
	b, err := s.Bytes()
	var buf bytes.Buffer
	return err == nil && json.Compact(&buf, b) == nil && (buf.String() == "null" || buf.String() == "{}")
}

// streamWindow bounds the window data.json is read through: a member of
// the document, or an entry of a raw section, larger than this makes the
// file be read whole (as it always was) instead.
const streamWindow = 64 << 20

// Close releases the data file a Source's sections are read from (they
// cannot be read after it). A Source not closed releases it when it is
// collected.
func (src *Source) Close() error {
	if src.data != nil {
		err := src.data.Close()
		src.data = nil
		return err
	}
	return nil
}

// loadData reads data.json from f: streamed when f can be read at an
// offset (a file), so that the raw sections stay in the file; else, or
// when the streaming pass does not take it, read whole (decodeData).
// keep is true when the sections read from f (f must stay open).
func loadData(f fs.File, ordered map[string][]byte) (data map[string]any, keep bool, err error) {
	ra, isRA := f.(io.ReaderAt)
	st, serr := f.Stat()
	if isRA && serr == nil && st.Mode().IsRegular() {
		if d, ok := decodeDataStream(ra, st.Size(), ordered); ok {
			return d, true, nil
		}
		b, err := io.ReadAll(io.NewSectionReader(ra, 0, st.Size()))
		if err != nil {
			return nil, false, err
		}
		d, err := decodeData(b, ordered)
		return d, false, err
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, false, err
	}
	d, err := decodeData(b, ordered)
	return d, false, err
}

// decodeDataStream is decodeDataFast over a file read through a bounded
// window: every member is decoded as decodeDataFast decodes it, except the
// raw sections, which are passed entry by entry (hashed and counted) and
// left in the file. ok is false for anything decodeDataFast would not
// take, or a member (or an entry of a raw section) larger than
// streamWindow, or a read error: the caller reads the file whole.
func decodeDataStream(ra io.ReaderAt, size int64, ordered map[string][]byte) (out map[string]any, ok bool) {
	st := jsonscan.NewStream(io.NewSectionReader(ra, 0, size), 1<<20, streamWindow)
	take := func(f func([]byte, int) (int, bool)) ([]byte, int64, bool) { return st.Take(f) }
	value := func() ([]byte, bool) {
		item, _, ok := take(jsonscan.Value)
		return item, ok
	}
	if _, _, ok := take(func(b []byte, i int) (int, bool) { return jsonscan.Byte(b, i, '{') }); !ok {
		return nil, false
	}
	out = map[string]any{}
	ok = streamMembers(st, func(name string) bool {
		if _, dup := out[name]; dup {
			return false // decodeDataSlow names it
		}
		if name != "extauthz" {
			item, ok := value()
			var v any
			if !ok || !utf8.Valid(item) || decodeJSON(item, &v) != nil || jsonx.Duplicates(item) != nil {
				return false
			}
			out[name] = v
			return true
		}
		if _, _, ok := take(func(b []byte, i int) (int, bool) { return jsonscan.Byte(b, i, '{') }); !ok {
			return false // not an object: decodeDataSlow says so
		}
		m := map[string]any{}
		ok := streamMembers(st, func(sec string) bool {
			if _, dup := m[sec]; dup {
				return false
			}
			if RawSections[sec] {
				s, ok := streamSection(st, ra)
				m[sec] = s
				return ok
			}
			item, ok := value()
			var v any
			if !ok || !utf8.Valid(item) || decodeJSON(item, &v) != nil || jsonx.Duplicates(item) != nil {
				return false
			}
			m[sec] = v
			keepOrdered(ordered, sec, bytes.TrimSpace(item))
			return true
		})
		out[name] = m
		return ok
	})
	if !ok || !st.End() {
		return nil, false
	}
	return out, true
}

// streamMembers reads the members of an object whose '{' was taken,
// calling each with a member's name to take its value.
func streamMembers(st *jsonscan.Stream, each func(name string) bool) bool {
	closed := false
	sep := func(b []byte, i int) (int, bool) {
		j := jsonscan.Space(b, i)
		if j < len(b) && (b[j] == ',' || b[j] == '}') {
			closed = b[j] == '}'
			return j + 1, true
		}
		return j, false
	}
	first := true
	for {
		var name string
		item, _, ok := st.Take(func(b []byte, i int) (int, bool) {
			j := jsonscan.Space(b, i)
			if first && j < len(b) && b[j] == '}' {
				closed = true
				return j + 1, true
			}
			if j, ok := jsonscan.String(b, j); ok {
				return jsonscan.Byte(b, j, ':')
			}
			return j, false
		})
		if !ok {
			return false
		}
		if first && closed {
			return true // {}
		}
		first = false
		s := bytes.TrimSpace(item)
		s = bytes.TrimSpace(s[:len(s)-1]) // the ':'
		if !utf8.Valid(s) {
			return false
		}
		if name = string(s[1 : len(s)-1]); !plain(s[1 : len(s)-1]) {
			if json.Unmarshal(s, &name) != nil {
				return false
			}
		}
		if !each(name) {
			return false
		}
		if _, _, ok := st.Take(sep); !ok {
			return false
		}
		if closed {
			return true
		}
	}
}

// streamSection passes a raw section's value: an object entry by entry,
// hashed and counted, left in the file; any other value (null, a list) is
// kept as bytes, for the section's parser to refuse or take.
func streamSection(st *jsonscan.Stream, ra io.ReaderAt) (*Section, bool) {
	isObj := false
	item, off, ok := st.Take(func(b []byte, i int) (int, bool) {
		j := jsonscan.Space(b, i)
		if j >= len(b) {
			return j, false
		}
		if isObj = b[j] == '{'; isObj {
			return j + 1, true
		}
		return jsonscan.Value(b, i)
	})
	if !ok {
		return nil, false
	}
	if !isObj {
		return BytesSection(bytes.Clone(bytes.TrimSpace(item))), true
	}
	sec := &Section{ra: ra, off: off + int64(len(item)) - 1}
	h := sha256.New()
	h.Write([]byte{'{'})
	closed := false
	for !closed {
		item, off, ok := st.Take(func(b []byte, i int) (int, bool) {
			j := jsonscan.Space(b, i)
			if sec.Count == 0 && j < len(b) && b[j] == '}' {
				closed = true
				return j + 1, true
			}
			j, ok := jsonscan.Member(b, j)
			if !ok {
				return j, false
			}
			if j = jsonscan.Space(b, j); j < len(b) && (b[j] == ',' || b[j] == '}') {
				closed = b[j] == '}'
				return j + 1, true
			}
			return j, false
		})
		if !ok {
			return nil, false
		}
		h.Write(item)
		if !(closed && bytes.TrimSpace(item)[0] == '}') {
			sec.Count++
		}
		sec.Size = off + int64(len(item)) - sec.off
	}
	h.Sum(sec.Digest[:0])
	return sec, true
}

// String names a section by its size and digest (for messages).
func (s *Section) String() string { return fmt.Sprintf("%d bytes, sha256 %x", s.Size, s.Digest[:6]) }

// MarshalJSON is the section's JSON, read from the file: a Source's data
// document marshals as the file had it (the server never marshals the
// API keys; tools and tests may).
func (s *Section) MarshalJSON() ([]byte, error) {
	b, err := s.Bytes()
	if err != nil {
		return nil, err
	}
	if len(b) == 0 {
		return []byte("null"), nil
	}
	return b, nil
}
