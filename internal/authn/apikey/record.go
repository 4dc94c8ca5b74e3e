package apikey

import (
	"errors"
	"fmt"
	"net/netip"
	"time"
	"unicode/utf8"

	"github.com/extauthz/extauthz/internal/authn"
	"github.com/extauthz/extauthz/internal/jsonx"
)

// Entry is one key record parsed and validated on its own, for key stores
// that fetch records one at a time (internal/authn/rediskeys) rather than
// index a whole api_keys section. Its Identity is built once, sealed, and
// shared by every lookup of the entry.
type Entry struct {
	status uint8
	exp    time.Time
	hasExp bool
	id     *authn.Identity
}

// ParseRecord reads one record as it appears as a value of
// extauthz.api_keys, with the same rules Parse applies to each record
// (unknown fields, id required, status, RFC 3339 expires_at, CIDRs,
// tenants). Every problem is reported, each naming its field.
func ParseRecord(raw []byte) (*Entry, error) {
	if !utf8.Valid(raw) {
		return nil, errors.New("not valid UTF-8")
	}
	var r Record
	if err := jsonx.Strict(raw, &r); err != nil {
		return nil, err
	}
	var errs []error
	fail := func(field, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, a...)))
	}
	e := &Entry{}
	if r.ID == "" {
		fail("id", "required")
	}
	checkValues(fail, r.ID, r.Subject, r.Plan, r.Scopes)
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
		e.exp, e.hasExp = t, true
	}
	for i, c := range r.AllowedCIDRs {
		if _, err := netip.ParsePrefix(c); err != nil {
			fail(fmt.Sprintf("allowed_cidrs[%d]", i), "not a CIDR: %q", c)
		}
	}
	tenants, err := ParseTenants(r.Tenants)
	if err != nil {
		fail("tenants", "%v", err)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	subject := r.Subject
	if subject == "" {
		subject = r.ID
	}
	e.id = (&authn.Identity{
		Kind: "api_key", KeyID: r.ID, Subject: subject, Plan: r.Plan,
		Tenants: tenants, Scopes: r.Scopes, AllowedCIDRs: r.AllowedCIDRs,
	}).Seal()
	return e, nil
}

// Identity is the record's identity (the same pointer on every call).
func (e *Entry) Identity() *authn.Identity { return e.id }

// At is the result of presenting the record's key at time now, as
// Store.Lookup gives it.
func (e *Entry) At(now time.Time) Result {
	if e.status != statusValid {
		return Result{Status: statuses[e.status], Identity: e.id}
	}
	if e.hasExp && !now.Before(e.exp) {
		return Result{Status: authn.Expired, Identity: e.id}
	}
	return Result{Status: authn.Valid, Identity: e.id}
}
