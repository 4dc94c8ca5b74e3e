package jsonscan

import "io"

// Stream is a bounded window over JSON read from an io.Reader: a large
// document (a data.json with a million API keys) is passed member by member
// without ever being held whole. Take hands a function the window and the
// index of the next unread byte; the window grows only as far as one item
// needs, and never past max bytes.
type Stream struct {
	r    io.Reader
	buf  []byte
	pos  int   // next unread byte of buf
	base int64 // stream offset of buf[0]
	eof  bool
	err  error // a read error other than io.EOF
	max  int
}

// NewStream reads r through a window of chunk bytes, grown up to limit for an
// item that needs more.
func NewStream(r io.Reader, chunk, limit int) *Stream {
	chunk = max(chunk, 1)
	limit = max(limit, chunk)
	return &Stream{r: r, buf: make([]byte, 0, chunk), max: limit}
}

// Take passes the item f recognises at the next unread byte: f(b, i) returns
// the index after a complete item that starts at b[i] (white space before
// it included), and whether there is one. An item that only ends at the
// end of the window may continue past it (a number, white space), so it is
// taken only at the end of the input. Take reads more while f fails, until
// f succeeds, the input ends, a read fails or the item would need a window
// of more than max bytes; ok is false in the last three cases (Err says
// whether a read failed). item is the bytes taken (valid until the next
// call) and off their offset in the input.
func (s *Stream) Take(f func(b []byte, i int) (end int, ok bool)) (item []byte, off int64, ok bool) {
	for {
		end, ok := f(s.buf, s.pos)
		if ok && (end < len(s.buf) || s.eof) {
			item, off = s.buf[s.pos:end], s.base+int64(s.pos)
			s.pos = end
			return item, off, true
		}
		if !s.fill() {
			return nil, 0, false
		}
	}
}

// fill reads more input into the window: it drops the bytes already taken,
// grows the window when it is full (up to max) and reads at least one byte.
// false: the input ended, a read failed or the window is at max.
func (s *Stream) fill() bool {
	if s.eof || s.err != nil {
		return false
	}
	if s.pos > 0 {
		n := copy(s.buf, s.buf[s.pos:])
		s.base += int64(s.pos)
		s.buf, s.pos = s.buf[:n], 0
	}
	if len(s.buf) == cap(s.buf) {
		if cap(s.buf) >= s.max {
			return false
		}
		nb := make([]byte, len(s.buf), min(2*cap(s.buf), s.max))
		copy(nb, s.buf)
		s.buf = nb
	}
	for {
		n, err := s.r.Read(s.buf[len(s.buf):cap(s.buf)])
		s.buf = s.buf[:len(s.buf)+n]
		switch {
		case err == io.EOF:
			s.eof = true
			return true // what was read may complete the item
		case err != nil:
			s.err = err
			return false
		case n > 0:
			return true
		}
	}
}

// Offset is the input offset of the next unread byte.
func (s *Stream) Offset() int64 { return s.base + int64(s.pos) }

// Err is the read error that stopped Take, if one did.
func (s *Stream) Err() error { return s.err }

// End reads the rest of the input and reports whether it is only white
// space.
func (s *Stream) End() bool {
	for {
		if i := Space(s.buf, s.pos); i < len(s.buf) {
			return false
		}
		s.pos = len(s.buf)
		if s.eof {
			return true
		}
		if !s.fill() {
			return s.eof && s.err == nil && Space(s.buf, s.pos) == len(s.buf)
		}
	}
}

// Member passes an object member, `"name": value`, at or after b[i] (after
// white space) and returns the index after its value.
func Member(b []byte, i int) (end int, ok bool) {
	if i, ok = String(b, Space(b, i)); !ok {
		return i, false
	}
	if i = Space(b, i); i >= len(b) || b[i] != ':' {
		return i, false
	}
	return Value(b, i+1)
}

// Byte passes white space and then c at b[i:], returning the index after c.
func Byte(b []byte, i int, c byte) (end int, ok bool) {
	i = Space(b, i)
	if i < len(b) && b[i] == c {
		return i + 1, true
	}
	return i, false
}
