package apikey

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/maphash"
	"net/netip"
	"strconv"
	"time"
)

// view is one record as read: its fields are bytes of the input (or decoded
// copies when a string has escapes), so reading a million records allocates
// next to nothing.
type view struct {
	id, subject, expires, status, plan []byte
	tenants                            []byte // raw JSON value, nil = absent
	scopes, cidrs                      [][]byte
}

// builder fills a store, interning equal tenant sets, scope and CIDR lists,
// and refusing duplicate ids and digests.
type builder struct {
	s       *Store
	tenants map[string]uint32 // raw JSON -> index in s.tenantSets
	lists   map[string]uint32 // length-prefixed items -> index in s.lists
	cidrOK  map[string]bool   // length-prefixed CIDR lists already validated
	ids     []uint64          // key id -> hash<<32 | record index + 1, linear probing
	key     []byte            // scratch
	errs    []error
	full    bool // arena full: reported once
}

// newBuilder makes a builder for about n records (0: unknown): its tables
// are sized for them at once.
func newBuilder(n int) *builder {
	b := &builder{s: newStore(), tenants: map[string]uint32{}, lists: map[string]uint32{}, cidrOK: map[string]bool{}}
	if n > 0 {
		size := tableSize(n)
		b.s.table = make([]uint32, size)
		b.ids = make([]uint64, size)
	}
	return b
}

// tableSize is the smallest power of two that holds n entries at a load of
// at most 3/4 (the tables grow past it).
func tableSize(n int) int {
	size := 16
	for n*4 > size*3 {
		size *= 2
	}
	return size
}

// digestOf decodes a record key: lower-case hex SHA-256.
func digestOf(h []byte) (d [sha256.Size]byte, ok bool) {
	if len(h) != hex.EncodedLen(sha256.Size) {
		return d, false
	}
	for i := range d {
		hi, ok1 := nibble(h[2*i])
		lo, ok2 := nibble(h[2*i+1])
		if !ok1 || !ok2 {
			return d, false
		}
		d[i] = hi<<4 | lo
	}
	return d, true
}

// nibbles maps a lower-case hex digit to its value, anything else to 0xff.
var nibbles = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for c := byte('0'); c <= '9'; c++ {
		t[c] = c - '0'
	}
	for c := byte('a'); c <= 'f'; c++ {
		t[c] = c - 'a' + 10
	}
	return t
}()

func nibble(c byte) (byte, bool) { v := nibbles[c]; return v, v != 0xff }

// where names record h in errors. A map key that is not a digest is never
// echoed: it may be a plaintext secret.
func where(h []byte, alt string) string {
	if _, ok := digestOf(h); ok {
		return fmt.Sprintf("api_keys[%q]", short(string(h)))
	}
	return fmt.Sprintf("api_keys[<%s>]", alt)
}

// listKey is the interning key of a list: length-prefixed items, so no two
// different lists share one.
func (b *builder) listKey(l [][]byte) []byte {
	k := b.key[:0]
	for _, s := range l {
		k = strconv.AppendInt(k, int64(len(s)), 10)
		k = append(k, ':')
		k = append(k, s...)
	}
	b.key = k
	return k
}

func (b *builder) list(l [][]byte) uint32 {
	if len(l) == 0 {
		return 0
	}
	k := b.listKey(l)
	if i, ok := b.lists[string(k)]; ok {
		return i
	}
	out := make([]string, len(l))
	for j, s := range l {
		out[j] = string(s)
	}
	i := uint32(len(b.s.lists))
	b.s.lists = append(b.s.lists, out)
	b.lists[string(k)] = i
	return i
}

func (b *builder) tenantSet(raw []byte) (uint32, error) {
	if len(raw) == 0 {
		return 0, nil
	}
	if i, ok := b.tenants[string(raw)]; ok {
		return i, nil
	}
	t, err := ParseTenants(raw)
	if err != nil {
		return 0, err
	}
	for dim, ids := range t {
		items := make([][]byte, len(ids))
		for j, id := range ids {
			items[j] = []byte(id)
		}
		t[dim] = b.s.lists[b.list(items)]
	}
	i := uint32(len(b.s.tenantSets))
	b.s.tenantSets = append(b.s.tenantSets, t)
	b.tenants[string(raw)] = i
	return i, nil
}

func (b *builder) str(v []byte) span {
	sp, ok := b.s.appendStr(v)
	if !ok && !b.full {
		b.full = true
		b.errs = append(b.errs, errors.New("api_keys: more than 4 GiB of ids, subjects and plans"))
	}
	return sp
}

// add validates record h and stores it, or records its errors.
func (b *builder) add(h []byte, r *view) {
	var errs []error
	loc := func() string { return where(h, fmt.Sprintf("entry with id %q", r.id)) } // only on error: it formats
	fail := func(field, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: %s", loc(), field, fmt.Sprintf(format, a...)))
	}
	var e rec
	var ok bool
	if e.digest, ok = digestOf(h); !ok {
		errs = append(errs, fmt.Errorf("%s: key must be the lower-case hex SHA-256 of the API key (64 characters); plaintext keys are not accepted", loc()))
	}
	if len(r.id) == 0 {
		fail("id", "required")
	}
	checkValues(fail, r.id, r.subject, r.plan, r.scopes)
	switch string(r.status) {
	case "", "active":
		e.status = statusValid
	case "revoked":
		e.status = statusRevoked
	case "suspended":
		e.status = statusSuspended
	default:
		fail("status", "%q is not one of active, revoked, suspended", r.status)
	}
	if len(r.expires) > 0 {
		t, err := time.Parse(time.RFC3339, string(r.expires))
		if err != nil {
			fail("expires_at", "not an RFC 3339 time: %q", r.expires)
		}
		e.expSec, e.expNsec, e.hasExp = t.Unix(), int32(t.Nanosecond()), true
	}
	if len(r.cidrs) > 0 {
		k := b.listKey(r.cidrs)
		if !b.cidrOK[string(k)] {
			bad := false
			for i, c := range r.cidrs {
				if _, err := netip.ParsePrefix(string(c)); err != nil {
					fail(fmt.Sprintf("allowed_cidrs[%d]", i), "not a CIDR: %q", c)
					bad = true
				}
			}
			if !bad {
				b.cidrOK[string(k)] = true
			}
		}
	}
	tenants, err := b.tenantSet(r.tenants)
	if err != nil {
		fail("tenants", "%v", err)
	}
	if len(errs) > 0 {
		b.errs = append(b.errs, errors.Join(errs...))
		return
	}
	if prev, dup := b.findID(r.id); dup {
		b.errs = append(b.errs, fmt.Errorf("api_keys[%q].id: %q already used by %q", short(string(h)), r.id, short(hex.EncodeToString(b.s.rec(prev).digest[:]))))
		return
	}
	if _, dup := b.s.find(&e.digest); dup {
		b.errs = append(b.errs, fmt.Errorf("api_keys[%q]: listed twice", short(string(h))))
		return
	}
	e.keyID, e.plan, e.tenants = b.str(r.id), b.str(r.plan), tenants
	e.subject = e.keyID
	if len(r.subject) != 0 && string(r.subject) != string(r.id) {
		e.subject = b.str(r.subject)
	}
	e.scopes, e.cidrs = b.list(r.scopes), b.list(r.cidrs)
	b.s.add(&e)
	b.addID(uint32(b.s.n - 1))
}

// findID returns the record that uses key id.
func (b *builder) findID(id []byte) (uint32, bool) {
	if len(b.ids) == 0 {
		return 0, false
	}
	mask := uint64(len(b.ids) - 1)
	h := maphash.Bytes(b.s.seed, id)
	for p := h & mask; ; p = (p + 1) & mask {
		v := b.ids[p]
		if v == 0 {
			return 0, false
		}
		if v>>32 == h>>32 {
			if i := uint32(v) - 1; string(b.s.bytesOf(b.s.rec(i).keyID)) == string(id) {
				return i, true
			}
		}
	}
}

func (b *builder) addID(i uint32) {
	if int(i+1)*4 > len(b.ids)*3 {
		b.ids = make([]uint64, max(2*len(b.ids), 16))
		for j := range i {
			b.insertID(j)
		}
	}
	b.insertID(i)
}

func (b *builder) insertID(i uint32) {
	mask := uint64(len(b.ids) - 1)
	h := maphash.Bytes(b.s.seed, b.s.bytesOf(b.s.rec(i).keyID))
	p := h & mask
	for b.ids[p] != 0 {
		p = (p + 1) & mask
	}
	b.ids[p] = h>>32<<32 | uint64(i+1)
}
