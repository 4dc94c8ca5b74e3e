// Package apikey verifies API keys against records stored by the SHA-256 of
// the key. The plaintext key is never stored; lookups hash the presented key
// and compare digests in constant time.
package apikey

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/extauthz/extauthz/internal/authn"
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

// Store is an immutable index of key records. Per key it holds no pointers
// — a digest index, fixed-size records and one byte arena for ids, subjects
// and plans — so a million keys give the garbage collector nothing to scan
// (scanning a pointer per key made every collection cost in proportion to
// the key count). A key's Identity is built on its first lookup and kept.
type Store struct {
	index map[[sha256.Size]byte]uint32 // digest -> index in recs
	recs  []rec
	arena []byte
	// Interned values records point at by index; index 0 is "none". Keys of
	// one customer usually carry the same ones: a million keys hold a few
	// thousand of them.
	tenantSets []map[string][]string
	lists      [][]string
	ids        []atomic.Pointer[authn.Identity] // built on first lookup
}

// rec is one key, pointer-free.
type rec struct {
	digest                 [sha256.Size]byte
	expSec                 int64 // expiry, unix seconds and nanoseconds; hasExp false = never
	expNsec                int32
	hasExp                 bool
	status                 uint8 // statusValid, statusRevoked, statusSuspended
	keyID, subject, plan   span  // in arena
	tenants, scopes, cidrs uint32
}

// span is a string in the arena.
type span struct{ off, n uint32 }

const (
	statusValid uint8 = iota
	statusRevoked
	statusSuspended
)

var statuses = [...]authn.Status{statusValid: authn.Valid, statusRevoked: authn.Revoked, statusSuspended: authn.Suspended}

// Len is the number of keys.
func (s *Store) Len() int { return len(s.recs) }

// Hash returns the record key for an API key: lower-case hex SHA-256.
func Hash(key string) string {
	d := sha256.Sum256([]byte(key))
	return hex.EncodeToString(d[:])
}

// Parse builds a store from the extauthz.api_keys object. Errors name the
// record (by key id or digest prefix) and field; all problems are reported.
// Records are read one at a time: a million of them are never all decoded
// at once.
func Parse(raw json.RawMessage) (*Store, error) {
	s := &Store{index: map[[sha256.Size]byte]uint32{}, tenantSets: []map[string][]string{nil}, lists: [][]string{nil}}
	if len(raw) == 0 || string(raw) == "null" {
		return s, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, errors.New("api_keys: must be an object of key digest -> record")
	}
	var errs []error
	ids := map[string]string{}
	b := &builder{s: s, tenants: map[string]uint32{}, lists: map[string]uint32{}}
	for n := 0; dec.More(); n++ {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("api_keys: %w", err)
		}
		h, _ := tok.(string)
		var r Record
		start := dec.InputOffset()
		if err := dec.Decode(&r); err != nil {
			var se *json.SyntaxError
			if errors.As(err, &se) {
				return nil, fmt.Errorf("%s: %w", where(h, fmt.Sprintf("entry %d", n+1)), err)
			}
			// The decoder has read the whole record: decode it again with
			// jsonx to name every bad field, report and go on.
			rec := bytes.TrimLeft(raw[start:dec.InputOffset()], " \t\r\n:")
			if jerr := jsonx.Strict(rec, new(Record)); jerr != nil {
				err = jerr
			}
			errs = append(errs, jsonx.At(where(h, fmt.Sprintf("entry %d", n+1)), err))
			continue
		}
		e, err := b.build(h, r)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if prev, dup := ids[r.ID]; dup {
			errs = append(errs, fmt.Errorf("api_keys[%q].id: %q already used by %q", short(h), r.ID, short(prev)))
			continue
		}
		if _, dup := s.index[e.digest]; dup {
			errs = append(errs, fmt.Errorf("api_keys[%q]: listed twice", short(h)))
			continue
		}
		ids[r.ID] = h
		s.index[e.digest] = uint32(len(s.recs))
		s.recs = append(s.recs, e)
	}
	if _, err := dec.Token(); err != nil {
		return nil, fmt.Errorf("api_keys: %w", err)
	}
	if len(s.arena) > math.MaxUint32 {
		errs = append(errs, fmt.Errorf("api_keys: %d bytes of ids, subjects and plans; at most 4 GiB", len(s.arena)))
	}
	s.recs, s.arena = slices.Clip(s.recs), slices.Clip(s.arena)
	s.ids = make([]atomic.Pointer[authn.Identity], len(s.recs))
	return s, errors.Join(errs...)
}

// digest decodes a record key: lower-case hex SHA-256.
func digest(h string) (d [sha256.Size]byte, ok bool) {
	if len(h) != hex.EncodedLen(sha256.Size) {
		return d, false
	}
	for i := 0; i < len(h); i++ {
		if c := h[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return d, false
		}
	}
	_, err := hex.Decode(d[:], []byte(h))
	return d, err == nil
}

// where names record h in errors. A map key that is not a digest is never
// echoed: it may be a plaintext secret.
func where(h, alt string) string {
	if _, ok := digest(h); ok {
		return fmt.Sprintf("api_keys[%q]", short(h))
	}
	return fmt.Sprintf("api_keys[<%s>]", alt)
}

// builder fills a store, interning equal tenant sets, scope and CIDR lists.
type builder struct {
	s       *Store
	tenants map[string]uint32 // raw JSON -> index in s.tenantSets
	lists   map[string]uint32 // length-prefixed items -> index in s.lists
}

func (b *builder) list(l []string) uint32 {
	if len(l) == 0 {
		return 0
	}
	var k strings.Builder
	for _, s := range l { // length-prefixed: no two different lists share a key
		k.WriteString(strconv.Itoa(len(s)))
		k.WriteByte(':')
		k.WriteString(s)
	}
	if i, ok := b.lists[k.String()]; ok {
		return i
	}
	i := uint32(len(b.s.lists))
	b.s.lists = append(b.s.lists, slices.Clip(l))
	b.lists[k.String()] = i
	return i
}

func (b *builder) tenantSet(raw json.RawMessage) (uint32, error) {
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
		t[dim] = b.s.lists[b.list(ids)]
	}
	i := uint32(len(b.s.tenantSets))
	b.s.tenantSets = append(b.s.tenantSets, t)
	b.tenants[string(raw)] = i
	return i, nil
}

func (b *builder) str(v string) span {
	sp := span{off: uint32(len(b.s.arena)), n: uint32(len(v))}
	b.s.arena = append(b.s.arena, v...)
	return sp
}

func (b *builder) build(h string, r Record) (rec, error) {
	var errs []error
	loc := func() string { return where(h, fmt.Sprintf("entry with id %q", r.ID)) } // only on error: it formats
	fail := func(field, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: %s", loc(), field, fmt.Sprintf(format, a...)))
	}
	var e rec
	var ok bool
	if e.digest, ok = digest(h); !ok {
		errs = append(errs, fmt.Errorf("%s: key must be the lower-case hex SHA-256 of the API key (64 characters); plaintext keys are not accepted", loc()))
	}
	if r.ID == "" {
		fail("id", "required")
	}
	switch r.Status {
	case "", "active":
		e.status = statusValid
	case "revoked":
		e.status = statusRevoked
	case "suspended":
		e.status = statusSuspended
	default:
		fail("status", "%q is not one of active, revoked, suspended", r.Status)
	}
	if r.ExpiresAt != "" {
		t, err := time.Parse(time.RFC3339, r.ExpiresAt)
		if err != nil {
			fail("expires_at", "not an RFC 3339 time: %q", r.ExpiresAt)
		}
		e.expSec, e.expNsec, e.hasExp = t.Unix(), int32(t.Nanosecond()), true
	}
	for i, c := range r.AllowedCIDRs {
		if _, err := netip.ParsePrefix(c); err != nil {
			fail(fmt.Sprintf("allowed_cidrs[%d]", i), "not a CIDR: %q", c)
		}
	}
	tenants, err := b.tenantSet(r.Tenants)
	if err != nil {
		fail("tenants", "%v", err)
	}
	if len(errs) > 0 {
		return rec{}, errors.Join(errs...)
	}
	e.keyID, e.plan, e.tenants = b.str(r.ID), b.str(r.Plan), tenants
	e.subject = e.keyID
	if r.Subject != "" && r.Subject != r.ID {
		e.subject = b.str(r.Subject)
	}
	e.scopes, e.cidrs = b.list(r.Scopes), b.list(r.AllowedCIDRs)
	return e, nil
}

// CheckPlans reports every record whose plan known rejects, naming the
// record (at most max of them, then a count of the rest).
func (s *Store) CheckPlans(known func(string) bool, max int) error {
	var errs []error
	bad := 0
	for i := range s.recs {
		e := &s.recs[i]
		if e.plan.n == 0 {
			continue
		}
		if p := s.str(e.plan); !known(p) {
			if bad++; bad <= max {
				errs = append(errs, fmt.Errorf("api_keys[%q].plan: unknown plan %q", short(hex.EncodeToString(e.digest[:])), p))
			}
		}
	}
	if bad > max {
		errs = append(errs, fmt.Errorf("api_keys: %d more keys with an unknown plan", bad-max))
	}
	return errors.Join(errs...)
}

// ParseTenants reads a tenants value: a list of ids (dimension "tenant") or
// an object of dimension -> ids. Ids may be strings or integers.
func ParseTenants(raw json.RawMessage) (map[string][]string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var list []json.Number
	if err := json.Unmarshal(raw, &list); err == nil {
		return map[string][]string{authn.DefaultDimension: numbersToStrings(list)}, nil
	}
	var strs []string
	if err := json.Unmarshal(raw, &strs); err == nil {
		return map[string][]string{authn.DefaultDimension: strs}, nil
	}
	var dims map[string][]any
	if err := json.Unmarshal(raw, &dims); err != nil {
		return nil, errors.New(`want a list of ids or an object of dimension -> ids, e.g. ["42"] or {"workspace":["w1"]}`)
	}
	out := map[string][]string{}
	for dim, ids := range dims {
		for _, v := range ids {
			switch v := v.(type) {
			case string:
				out[dim] = append(out[dim], v)
			case float64:
				out[dim] = append(out[dim], strings.TrimSuffix(fmt.Sprintf("%.0f", v), ".0"))
			default:
				return nil, fmt.Errorf("%s: ids must be strings or integers", dim)
			}
		}
	}
	return out, nil
}

func numbersToStrings(ns []json.Number) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = n.String()
	}
	return out
}

// Result is the outcome of a lookup.
type Result struct {
	Status   authn.Status
	Identity *authn.Identity // set for every status but Unknown
}

// Lookup verifies a presented key at time now.
func (s *Store) Lookup(key string, now time.Time) Result {
	d := sha256.Sum256([]byte(key))
	i, ok := s.index[d]
	if !ok || subtle.ConstantTimeCompare(s.recs[i].digest[:], d[:]) != 1 {
		return Result{Status: authn.Unknown}
	}
	e := &s.recs[i]
	id := s.identity(i)
	if e.status != statusValid {
		return Result{Status: statuses[e.status], Identity: id}
	}
	if e.hasExp && !now.Before(time.Unix(e.expSec, int64(e.expNsec))) {
		return Result{Status: authn.Expired, Identity: id}
	}
	return Result{Status: authn.Valid, Identity: id}
}

// identity returns record i's identity, built on its first use.
func (s *Store) identity(i uint32) *authn.Identity {
	if id := s.ids[i].Load(); id != nil {
		return id
	}
	e := &s.recs[i]
	id := &authn.Identity{
		Kind: "api_key", KeyID: s.str(e.keyID), Subject: s.str(e.subject), Plan: s.str(e.plan),
		Tenants: s.tenantSets[e.tenants], Scopes: s.lists[e.scopes], AllowedCIDRs: s.lists[e.cidrs],
	}
	id.Seal()
	if s.ids[i].CompareAndSwap(nil, id) {
		return id
	}
	return s.ids[i].Load()
}

func (s *Store) str(sp span) string { return string(s.arena[sp.off : sp.off+sp.n]) }

func short(h string) string {
	if len(h) > 12 {
		return h[:12] + "…"
	}
	return h
}
