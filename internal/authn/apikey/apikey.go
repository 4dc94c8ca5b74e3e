// Package apikey verifies API keys against records stored by the SHA-256 of
// the key. The plaintext key is never stored; lookups hash the presented key
// and compare digests in constant time.
package apikey

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/extauthz/extauthz/internal/authn"
	"github.com/extauthz/extauthz/internal/jsonx"
)

// Hash returns the record key for an API key: lower-case hex SHA-256.
func Hash(key string) string {
	d := sha256.Sum256([]byte(key))
	return hex.EncodeToString(d[:])
}

// CheckPlans reports every record whose plan known rejects, naming the
// record (at most max of them, then a count of the rest).
func (s *Store) CheckPlans(known func(string) bool, max int) error {
	var errs []error
	bad := 0
	var last string
	lastOK := true
	for i := range uint32(s.n) {
		e := s.rec(i)
		if e.plan.n == 0 {
			continue
		}
		p := s.bytesOf(e.plan)
		if string(p) != last { // keys come in runs of one plan: ask once per run
			last = string(p)
			lastOK = known(last)
		}
		if !lastOK {
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
// an object of dimension -> ids. Ids may be strings or integers; an integer
// keeps its exact digits (never a float64's rounding: 100000000000000001
// stays itself), and a number with a fraction or exponent is refused.
func ParseTenants(raw json.RawMessage) (map[string][]string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err == nil {
		ids, err := tenantIDs(list)
		if err != nil {
			return nil, err
		}
		return map[string][]string{authn.DefaultDimension: ids}, nil
	}
	if err := jsonx.Duplicates(raw); err != nil {
		return nil, err
	}
	var dims map[string][]json.RawMessage
	if err := json.Unmarshal(raw, &dims); err != nil {
		return nil, errors.New(`want a list of ids or an object of dimension -> ids, e.g. ["42"] or {"workspace":["w1"]}`)
	}
	out := make(map[string][]string, len(dims))
	for _, dim := range slices.Sorted(maps.Keys(dims)) {
		if err := authn.CheckDimension(dim); err != nil {
			return nil, err
		}
		ids, err := tenantIDs(dims[dim])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", dim, err)
		}
		out[dim] = ids
	}
	return out, nil
}

// tenantIDs reads ids that are JSON strings or integers, integers as written.
func tenantIDs(raw []json.RawMessage) ([]string, error) {
	if len(raw) > MaxListItems {
		return nil, fmt.Errorf("%d ids; at most %d", len(raw), MaxListItems)
	}
	out := make([]string, len(raw))
	for i, v := range raw {
		switch {
		case json.Unmarshal(v, &out[i]) == nil:
			if out[i] == "" || !authn.HeaderSafe(out[i]) || strings.Contains(out[i], ",") || len(out[i]) > MaxValueBytes {
				return nil, fmt.Errorf("id %q is empty, longer than %d bytes, or has a comma, a control character or invalid UTF-8", short(out[i]), MaxValueBytes)
			}
		case authn.IntegerID(string(v)):
			out[i] = string(v)
		default:
			return nil, fmt.Errorf("ids must be strings or integers, not %s", short(string(v)))
		}
	}
	return out, nil
}

// checkValues reports the record's values the identity headers could not
// carry as they are (authn.HeaderSafe, authn.ScopeToken), each naming its
// field: Parse and ParseRecord refuse the same records.
func checkValues[T string | []byte](fail func(field, format string, a ...any), id, subject, plan T, scopes []T) {
	for _, f := range [...]struct {
		name string
		v    T
	}{{"id", id}, {"subject", subject}, {"plan", plan}} {
		switch {
		case len(f.v) > MaxValueBytes:
			fail(f.name, "%d bytes; at most %d", len(f.v), MaxValueBytes)
		case !authn.HeaderSafe(f.v):
			fail(f.name, "%q has a control character or is not UTF-8", f.v)
		}
	}
	if len(scopes) > MaxListItems {
		fail("scopes", "%d scopes; at most %d", len(scopes), MaxListItems)
		return
	}
	for i, sc := range scopes {
		if !authn.ScopeToken(sc) || len(sc) > MaxValueBytes {
			fail(fmt.Sprintf("scopes[%d]", i), "%q is not a scope: at most %d bytes of printable ASCII without spaces, quotes or backslashes (RFC 6749)", short(string(sc)), MaxValueBytes)
		}
	}
}

// Bounds of a record's values, which reach the upstream as identity headers
// (x-auth-scopes joins the scopes): far above any real key's, far below
// what Envoy or an upstream would refuse.
const (
	MaxValueBytes = 256 // an id, subject, plan, scope or tenant id
	MaxListItems  = 256 // scopes, or tenant ids in one dimension
)

// Result is the outcome of a lookup.
type Result struct {
	Status   authn.Status
	Identity *authn.Identity // set for every status but Unknown
}

// Lookup verifies a presented key at time now.
func (s *Store) Lookup(key string, now time.Time) Result {
	d := sha256.Sum256([]byte(key))
	i, ok := s.find(&d)
	if !ok || subtle.ConstantTimeCompare(s.rec(i).digest[:], d[:]) != 1 {
		return Result{Status: authn.Unknown}
	}
	return s.result(i, now)
}

// result is record i's status at now, with its identity.
func (s *Store) result(i uint32, now time.Time) Result {
	e := s.rec(i)
	id := s.identity(i, now)
	if e.status != statusValid {
		return Result{Status: statuses[e.status], Identity: id}
	}
	if e.hasExp && !now.Before(time.Unix(e.expSec, int64(e.expNsec))) {
		return Result{Status: authn.Expired, Identity: id}
	}
	return Result{Status: authn.Valid, Identity: id}
}

// identity returns record i's identity: the cached one, or a new one,
// cached (one per key however many lookups race to build it).
func (s *Store) identity(i uint32, now time.Time) *authn.Identity {
	e := s.rec(i)
	if id, ok := s.ids.Get(string(e.digest[:]), now); ok {
		return id
	}
	id := &authn.Identity{
		Kind: "api_key", KeyID: s.str(e.keyID), Subject: s.str(e.subject), Plan: s.str(e.plan),
		Tenants: s.tenantSets[e.tenants], Scopes: s.lists[e.scopes], AllowedCIDRs: s.lists[e.cidrs],
	}
	return s.ids.GetOrSet(string(e.digest[:]), id.Seal(), now, identityTTL)
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12] + "…"
	}
	return h
}

// IDIndex looks records up by key id (offline replay of decision logs,
// which carry the key id, never the key). The serving store keeps no id
// index (a million keys would pay for it); IDIndex builds one, a map of
// every id, on its first call and keeps it for its lookups.
type IDIndex struct {
	s    *Store
	once sync.Once
	ids  map[string]uint32
}

// NewIDIndex returns an index over s, built on its first lookup.
func NewIDIndex(s *Store) *IDIndex { return &IDIndex{s: s} }

// Lookup is what Lookup would have answered at now for the key whose id is
// id; ok is false when no record has that id.
func (x *IDIndex) Lookup(id string, now time.Time) (res Result, ok bool) {
	if x == nil || x.s == nil {
		return Result{}, false
	}
	x.once.Do(func() {
		x.ids = make(map[string]uint32, x.s.n)
		for i := range uint32(x.s.n) {
			x.ids[x.s.str(x.s.rec(i).keyID)] = i
		}
	})
	i, found := x.ids[id]
	if !found {
		return Result{}, false
	}
	return x.s.result(i, now), true
}
