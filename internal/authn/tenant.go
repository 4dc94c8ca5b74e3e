package authn

import (
	"errors"
	"fmt"
	"strings"
)

// TenantKey is how the sidecar names tenant id of dimension dim wherever it
// keys or reports by tenant: data.extauthz.tenants, limits.tenants and the
// quota counters, the x-auth-tenant header, metadata and decision logs. It
// is the id itself in dimension "tenant", and "dimension:id" in any other
// (and for a "tenant" id that has a colon), so workspace 7 and tenant 7
// never share an allowlist, a quota or a header value. The rulebook's
// tenant_key is the same function.
func TenantKey(dim, id string) string {
	if dim == DefaultDimension && !strings.Contains(id, ":") {
		return id
	}
	return dim + ":" + id
}

// CheckTenantKey says why k is not a name TenantKey gives (nil when it is):
// a key of data.extauthz.tenants or limits.tenants that no request could
// ever act for would configure nothing, silently.
func CheckTenantKey(k string) error {
	dim, id, qualified := strings.Cut(k, ":")
	switch {
	case k == "":
		return errors.New("a tenant id must not be empty")
	case !qualified:
		return nil
	case dim == "" || id == "":
		return fmt.Errorf("%q: want a tenant id, or dimension:id for another dimension (workspace:w1)", k)
	case dim == DefaultDimension && !strings.Contains(id, ":"):
		return fmt.Errorf("%q: write a tenant of dimension %q as its id alone: %q", k, DefaultDimension, id)
	}
	return nil
}

// CheckDimension says why name cannot name a tenancy dimension (nil when it
// can): TenantKey's "dimension:id" needs names without a colon.
func CheckDimension(name string) error {
	switch {
	case name == "":
		return errors.New("a dimension name must not be empty")
	case strings.Contains(name, ":"):
		return fmt.Errorf("dimension %q: a dimension name must not contain ':'", name)
	case !HeaderSafe(name):
		return fmt.Errorf("dimension %q: has a control character or is not UTF-8", name)
	}
	return nil
}

// IntegerID reports whether a JSON number is written as an integer
// (0 or -?[1-9][0-9]*), the only numbers read as tenant ids, in an API key's
// tenants as in a JWT's tenant claim, and kept as written: a fraction or an
// exponent (4.2e1, 42.0, 1e3) is refused rather than rounded to an id it
// does not spell (12345678901234567890.5 is not tenant 12345678901234567000).
func IntegerID(n string) bool {
	n, neg := strings.CutPrefix(n, "-")
	if n == "" || (n[0] == '0' && (len(n) > 1 || neg)) {
		return false // no leading zero, no -0 (the number 0 written another way)
	}
	for i := range len(n) {
		if n[i] < '0' || n[i] > '9' {
			return false
		}
	}
	return true
}
