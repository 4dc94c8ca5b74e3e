package apikey

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"unicode/utf8"

	"github.com/extauthz/extauthz/internal/authn"
	"github.com/extauthz/extauthz/internal/cache"
	"github.com/extauthz/extauthz/internal/jsonx"
)

// Record is one API key as written in policy data under extauthz.api_keys,
// keyed by the lower-case hex SHA-256 of the key.
type Record struct {
	ID           string          `json:"id"`
	Subject      string          `json:"subject,omitempty"`
	Tenants      json.RawMessage `json:"tenants,omitempty"` // ["42"] or {"workspace":["w1"],"brand":["b1"]}
	Scopes       []string        `json:"scopes,omitempty"`
	ExpiresAt    string          `json:"expires_at,omitempty"` // RFC 3339; empty = never
	Status       string          `json:"status,omitempty"`     // active (default), revoked, suspended
	AllowedCIDRs []string        `json:"allowed_cidrs,omitempty"`
	Plan         string          `json:"plan,omitempty"`
}

// Option tunes Parse.
type Option func(*options)

type options struct {
	progress func(keys, offset, total int)
	every    int
	count    int // expected records, 0 = unknown
	chunk    int // the streaming scanner's first window (tests make it tiny)
	window   int // its largest window
}

// WithProgress calls fn about every n records read (and once at the end)
// with the records read so far and the input offset reached, of total
// bytes: a server loading a million keys can say how far it is.
func WithProgress(n int, fn func(keys, offset, total int)) Option {
	return func(o *options) { o.progress, o.every = fn, max(n, 1) }
}

// WithCount sizes the store for about n records (a count taken while the
// section was first read), so that its tables are allocated once rather
// than grown (each growth holds the old table and the new one).
func WithCount(n int) Option { return func(o *options) { o.count = max(n, 0) } }

// Window bounds the memory ParseReader reads through: records are read
// through a window of about a MiB, grown for a larger record up to this
// many bytes; a record larger still is read by encoding/json's streaming
// decoder, which holds one record at a time.
const Window = 16 << 20

// Parse builds a store from the extauthz.api_keys object. Errors name the
// record (by key id or digest prefix) and field; all problems are reported.
func Parse(raw json.RawMessage, opts ...Option) (*Store, error) {
	return ParseReader(func() io.Reader { return bytes.NewReader(raw) }, int64(len(raw)), opts...)
}

// ParseReader is Parse for a section read from open (called once, and once
// more when the input has to go to encoding/json), of size bytes: the
// section is never held whole, only a bounded window of it (Window), so a
// million keys are indexed without a copy of their JSON in memory.
//
// Records are read by a scanner for their one flat shape (see scan.go),
// straight from the window into the store; a record it does not take as
// it is (a field name in other letter case, a repeated field, a null, a
// wrong type) is decoded by encoding/json as before, and input that is not
// valid JSON is parsed wholly by encoding/json's streaming decoder, so
// results and errors are the ones encoding/json gives.
func ParseReader(open func() io.Reader, size int64, opts ...Option) (*Store, error) {
	o := options{chunk: 1 << 20, window: Window}
	for _, f := range opts {
		f(&o)
	}
	if size == 0 {
		return newStore(), nil
	}
	b := newBuilder(o.count)
	if ok, err := scanKeys(open(), size, b, &o); err != nil {
		return nil, err
	} else if !ok {
		b = newBuilder(o.count)
		if err := parseSlow(open(), size, b, &o); err != nil {
			return nil, err
		}
	}
	return b.finish()
}

func (b *builder) finish() (*Store, error) {
	s := b.s
	s.ids = cache.New[*authn.Identity](min(max(s.n, 1), MaxIdentities))
	return s, errors.Join(b.errs...)
}

var recordType = reflect.TypeFor[Record]()

// notUTF8 refuses entry n (key h), whose value is not valid UTF-8:
// encoding/json would make the bytes U+FFFD, so a subject or an id would
// silently not be what the file says.
func (b *builder) notUTF8(h []byte, n int) {
	b.errs = append(b.errs, fmt.Errorf("%s: not valid UTF-8", where(h, fmt.Sprintf("entry %d", n))))
}

// decodeRecord decodes one record value as the streaming decoder did, for
// records the scanner leaves to encoding/json. n is the entry's number.
func (b *builder) decodeRecord(h []byte, n int, value []byte) error {
	var r Record
	if !utf8.Valid(value) {
		b.notUTF8(h, n)
		return nil
	}
	if err := jsonx.DuplicatesOf(value, recordType); err != nil {
		b.errs = append(b.errs, jsonx.At(where(h, fmt.Sprintf("entry %d", n)), err))
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(value))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return fmt.Errorf("%s: %w", where(h, fmt.Sprintf("entry %d", n)), err)
		}
		// Decode again with jsonx to name every bad field.
		if jerr := jsonx.Strict(value, new(Record)); jerr != nil {
			err = jerr
		}
		b.errs = append(b.errs, jsonx.At(where(h, fmt.Sprintf("entry %d", n)), err))
		return nil
	}
	b.add(h, r.view())
	return nil
}

func (r *Record) view() *view {
	v := &view{id: []byte(r.ID), subject: []byte(r.Subject), expires: []byte(r.ExpiresAt), status: []byte(r.Status), plan: []byte(r.Plan), tenants: r.Tenants}
	for _, s := range r.Scopes {
		v.scopes = append(v.scopes, []byte(s))
	}
	if r.Scopes != nil && len(r.Scopes) == 0 {
		v.scopes = [][]byte{}
	}
	for _, s := range r.AllowedCIDRs {
		v.cidrs = append(v.cidrs, []byte(s))
	}
	return v
}

// parseSlow reads r (size bytes) with encoding/json's streaming decoder,
// a record at a time: the path for input the scanner does not take whole.
func parseSlow(r io.Reader, size int64, b *builder, o *options) error {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	tok, err := dec.Token()
	if err == nil && tok == nil { // null: no keys
		if _, err := dec.Token(); err == io.EOF {
			return nil
		}
	}
	if err != nil || tok != json.Delim('{') {
		return errors.New("api_keys: must be an object of key digest -> record")
	}
	for n := 0; dec.More(); n++ {
		tok, err := dec.Token()
		if err != nil {
			return fmt.Errorf("api_keys: %w", err)
		}
		h, _ := tok.(string)
		var value json.RawMessage
		if err := dec.Decode(&value); err != nil {
			return fmt.Errorf("%s: %w", where([]byte(h), fmt.Sprintf("entry %d", n+1)), err)
		}
		if err := b.decodeRecord([]byte(h), n+1, value); err != nil {
			return err
		}
		if o.progress != nil && (n+1)%o.every == 0 {
			o.progress(n+1, int(dec.InputOffset()), int(size))
		}
	}
	if _, err := dec.Token(); err != nil {
		return fmt.Errorf("api_keys: %w", err)
	}
	return nil
}
