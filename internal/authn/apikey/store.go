package apikey

import (
	"crypto/sha256"
	"hash/maphash"
	"time"

	"github.com/extauthz/extauthz/internal/authn"
	"github.com/extauthz/extauthz/internal/cache"
)

// Store is an immutable index of key records. Per key it holds no pointers
// — an open-addressing table of record indexes, fixed-size records in
// chunks and byte chunks for ids, subjects and plans — so a million keys
// give the garbage collector nothing to scan (scanning a pointer per key
// made every collection cost in proportion to the key count). Records and
// text live in fixed-size chunks, so building never copies a grown array
// (a copy of a million records is a transient the size of the index).
//
// A key's Identity is built on its lookup and kept in a bounded cache of
// the most recently used ones (MaxIdentities), so that memory after
// traffic does not grow with the keys served: keeping every identity
// served once cost about 2.4 KiB per key (2.3 GiB for a million). A
// re-built identity is another pointer (the decision memo, keyed by it,
// then evaluates again) with the same content; an identity holds no policy
// value (authn.Identity.Value builds it per evaluation), so each costs
// about 200 bytes.
type Store struct {
	seed  maphash.Seed
	table []uint32 // digest -> record index + 1 (0 = empty), linear probing
	recs  [][]rec  // chunks of recChunk records
	n     int
	arena [][]byte // text chunks; a span's offset is chunk<<arenaBits | position
	// Interned values records point at by index; index 0 is "none". Keys of
	// one customer usually carry the same ones: a million keys hold a few
	// thousand of them.
	tenantSets []map[string][]string
	lists      [][]string
	ids        *cache.Cache[*authn.Identity] // by digest; built on lookup
}

// MaxIdentities bounds the identities a store keeps: twice the 65,536
// decisions the decision memo holds, since the cache is sure to hold only
// the most recently used half of its bound, so that a key whose decision
// is remembered keeps its identity (and the memo its hit) while it is used.
const MaxIdentities = 131072

// identityTTL: identities do not expire (a key's expiry is checked on every
// lookup); only the bound evicts them.
const identityTTL = 100 * 365 * 24 * time.Hour

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
	recBits   = 15 // records per chunk: 32768 (about 2.8 MiB)
	recChunk  = 1 << recBits
	arenaBits = 20 // bytes per text chunk: 1 MiB; at most 4096 of them
	arenaMax  = 1 << (32 - arenaBits)
)

const (
	statusValid uint8 = iota
	statusRevoked
	statusSuspended
)

var statuses = [...]authn.Status{statusValid: authn.Valid, statusRevoked: authn.Revoked, statusSuspended: authn.Suspended}

func newStore() *Store {
	return &Store{seed: maphash.MakeSeed(), tenantSets: []map[string][]string{nil}, lists: [][]string{nil}}
}

// Len is the number of keys.
func (s *Store) Len() int { return s.n }

func (s *Store) rec(i uint32) *rec { return &s.recs[i>>recBits][i&(recChunk-1)] }

func (s *Store) str(sp span) string {
	c := s.arena[sp.off>>arenaBits]
	o := sp.off & (1<<arenaBits - 1)
	return string(c[o : o+sp.n])
}

func (s *Store) bytesOf(sp span) []byte {
	c := s.arena[sp.off>>arenaBits]
	o := sp.off & (1<<arenaBits - 1)
	return c[o : o+sp.n]
}

// find returns the index of the record with digest d.
func (s *Store) find(d *[sha256.Size]byte) (uint32, bool) {
	if len(s.table) == 0 {
		return 0, false
	}
	mask := uint64(len(s.table) - 1)
	for p := maphash.Bytes(s.seed, d[:]) & mask; ; p = (p + 1) & mask {
		v := s.table[p]
		if v == 0 {
			return 0, false
		}
		if s.rec(v-1).digest == *d {
			return v - 1, true
		}
	}
}

// add appends e and indexes it; the caller has made sure no record has its
// digest.
func (s *Store) add(e *rec) {
	if (s.n+1)*4 > len(s.table)*3 { // load at most 3/4
		s.grow()
	}
	i := uint32(s.n)
	if int(i>>recBits) == len(s.recs) {
		s.recs = append(s.recs, make([]rec, 0, recChunk))
	}
	c := &s.recs[i>>recBits]
	*c = append(*c, *e)
	s.n++
	s.insert(i)
}

func (s *Store) insert(i uint32) {
	mask := uint64(len(s.table) - 1)
	p := maphash.Bytes(s.seed, s.rec(i).digest[:]) & mask
	for s.table[p] != 0 {
		p = (p + 1) & mask
	}
	s.table[p] = i + 1
}

func (s *Store) grow() {
	s.table = make([]uint32, max(2*len(s.table), 16))
	for i := range uint32(s.n) {
		s.insert(i)
	}
}

// appendStr stores v in the arena. ok is false when the arena is full (4 GiB).
func (s *Store) appendStr(v []byte) (span, bool) {
	if len(v) == 0 {
		return span{}, true
	}
	last := len(s.arena) - 1
	if last < 0 || cap(s.arena[last])-len(s.arena[last]) < len(v) {
		if len(s.arena) == arenaMax || uint64(len(v)) > 1<<32-1 {
			return span{}, false
		}
		s.arena = append(s.arena, make([]byte, 0, max(len(v), 1<<arenaBits)))
		last++
	}
	c := &s.arena[last]
	sp := span{off: uint32(last)<<arenaBits | uint32(len(*c)), n: uint32(len(v))}
	*c = append(*c, v...)
	return sp, true
}

// Dimensions maps each tenant id the keys hold to the dimensions they hold
// it in (for load-time checks of the tenant tables; a few thousand distinct
// tenant sets for a million keys).
func (s *Store) Dimensions() map[string]map[string]bool {
	out := map[string]map[string]bool{}
	for _, set := range s.tenantSets {
		for dim, ids := range set {
			for _, id := range ids {
				if out[id] == nil {
					out[id] = map[string]bool{}
				}
				out[id][dim] = true
			}
		}
	}
	return out
}
