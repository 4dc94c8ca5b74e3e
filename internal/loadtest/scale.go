package loadtest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/extauthz/extauthz/policies"
)

// Scale sizes a generated policy.
type Scale struct {
	Keys    int // API keys in total, the demo keys included
	Tenants int // synthetic tenants besides the demo ones (42, 7)
	Routes  int // synthetic routes besides the demo ones
}

// Zero reports whether nothing was asked to scale.
func (s Scale) Zero() bool { return s == Scale{} }

// ParseScale reads "keys=1000000", "tenants=10000,routes=1000" etc. into s
// (fields not named keep their value). Numbers may use k and M suffixes.
func ParseScale(spec string, s *Scale) error {
	for part := range strings.SplitSeq(spec, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return fmt.Errorf("scale %q: want name=count", part)
		}
		n, err := ParseCount(v)
		if err != nil {
			return fmt.Errorf("scale %q: %w", part, err)
		}
		d, err := ParseDim(strings.TrimSpace(k))
		if err != nil {
			return fmt.Errorf("scale %q: %w", part, err)
		}
		*s = d.With(*s, n)
	}
	return nil
}

// Dim is one dimension of a scaled policy.
type Dim string

// The dimensions a policy scales in (and --sweep varies).
const (
	DimKeys    Dim = "keys"
	DimTenants Dim = "tenants"
	DimRoutes  Dim = "routes"
)

// Dims lists every dimension.
func Dims() []Dim { return []Dim{DimKeys, DimTenants, DimRoutes} }

// ParseDim reads "keys", "tenants" or "routes".
func ParseDim(name string) (Dim, error) {
	for _, d := range Dims() {
		if string(d) == name {
			return d, nil
		}
	}
	return "", fmt.Errorf("unknown dimension %q (keys, tenants, routes)", name)
}

// Of is s's size in d.
func (d Dim) Of(s Scale) int {
	switch d {
	case DimKeys:
		return s.Keys
	case DimTenants:
		return s.Tenants
	case DimRoutes:
		return s.Routes
	}
	return 0
}

// With returns s with its size in d set to n.
func (d Dim) With(s Scale, n int) Scale {
	switch d {
	case DimKeys:
		s.Keys = n
	case DimTenants:
		s.Tenants = n
	case DimRoutes:
		s.Routes = n
	}
	return s
}

// Noun is the singular of d, e.g. "key".
func (d Dim) Noun() string { return strings.TrimSuffix(string(d), "s") }

// ParseCount reads a non-negative count, allowing k (×1000) and M (×1e6).
func ParseCount(v string) (int, error) {
	v = strings.TrimSpace(v)
	mul := 1
	switch {
	case strings.HasSuffix(v, "k"), strings.HasSuffix(v, "K"):
		mul, v = 1000, v[:len(v)-1]
	case strings.HasSuffix(v, "M"), strings.HasSuffix(v, "m"):
		mul, v = 1000000, v[:len(v)-1]
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q is not a non-negative count", v)
	}
	return n * mul, nil
}

// SyntheticKey is the i-th generated API key (i from 0). Its record in a
// scaled policy has id "scale-<i>", tenant SyntheticKeyTenant(i, tenants)
// and scopes orders:read and items:read.
func SyntheticKey(i int) string { return fmt.Sprintf("xa_scale_%09d_Lt", i) }

// SyntheticKeys is how many generated keys a scaled policy with keys API keys
// in total holds: keys less the demo keys, or none.
func SyntheticKeys(keys int) int { return max(keys-demoKeyCount(), 0) }

// SyntheticKeyTenant is the tenant of generated key i in a policy with
// tenants synthetic tenants: 1000 + i%tenants, or demo tenant 42 when there
// are none.
func SyntheticKeyTenant(i, tenants int) int {
	if tenants <= 0 {
		return 42
	}
	return 1000 + i%tenants
}

// SyntheticTenantCIDR is the first allowlist entry of synthetic tenant
// 1000+t: 10.<(t>>8)&255>.<t&255>.0/24.
func SyntheticTenantCIDR(t int) string { return fmt.Sprintf("10.%d.%d.0/24", (t>>8)&255, t&255) }

// SyntheticTenantCIDR6 is the last allowlist entry of synthetic tenant
// 1000+t: fd00:10:0:<t>::/64, room for a fresh client address per request.
func SyntheticTenantCIDR6(t int) string { return fmt.Sprintf("fd00:10:0:%x::/64", t&0xffff) }

// SyntheticTenantAddr6 is address seq of synthetic tenant 1000+t's IPv6
// allowlist entry; no two seqs (below 2^64) give the same address.
func SyntheticTenantAddr6(t int, seq uint64) string {
	return fmt.Sprintf("fd00:10:0:%x:%x:%x:%x:%x", t&0xffff, seq>>48, (seq>>32)&0xffff, (seq>>16)&0xffff, seq&0xffff)
}

// SyntheticRoutePath is the path prefix of generated route i (GET and HEAD,
// scope items:read, a required positive-integer X-Tenant-Id).
func SyntheticRoutePath(i int) string { return fmt.Sprintf("/v1/svc%d/items", i) }

// demoKeyCount is the number of API keys in the embedded demo data.
var demoKeyCount = sync.OnceValue(func() int {
	raw, err := fs.ReadFile(policies.FS, "data.json")
	if err != nil {
		return 0
	}
	var data struct {
		Extauthz struct {
			APIKeys map[string]json.RawMessage `json:"api_keys"`
		} `json:"extauthz"`
	}
	if json.Unmarshal(raw, &data) != nil {
		return 0
	}
	return len(data.Extauthz.APIKeys)
})

// WriteScaledPolicy writes a policy directory: the embedded Rego rules
// (without _test.rego files) and a data.json that keeps every section of the
// embedded demo data (settings, JWT issuer, demo keys, demo tenants and
// routes) and adds:
//
//   - API keys up to `keys` in total (the demo keys included, so every mix
//     still works; keys below their number add none, see SyntheticKeys),
//     stored by SHA-256 like real ones, each bound to one synthetic tenant
//     (or 42 when there are none, see SyntheticKeyTenant);
//   - `tenants` synthetic tenants (ids 1000, 1001, ...) with two-CIDR
//     allowlists; demo tenant 42 keeps its empty allowlist so allows pass;
//   - `routes` synthetic routes (/v1/svc<N>/items, GET, prefix, with a
//     tenant header and scope items:read), after the demo routes.
//
// data.json is streamed, so a million keys take little memory to write.
func WriteScaledPolicy(dir string, keys, tenants, routes int) error {
	return writeScaledPolicy(dir, keys, tenants, routes, 0)
}

// writeScaledPolicy is WriteScaledPolicy with the synthetic keys numbered
// from first: two policies with different firsts share no synthetic key.
func writeScaledPolicy(dir string, keys, tenants, routes, first int) error {
	if keys < 0 || tenants < 0 || routes < 0 {
		return fmt.Errorf("scaled policy: negative size (keys=%d tenants=%d routes=%d)", keys, tenants, routes)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	ents, err := fs.ReadDir(policies.FS, ".")
	if err != nil {
		return err
	}
	for _, e := range ents {
		n := e.Name()
		if e.IsDir() || !strings.HasSuffix(n, ".rego") || strings.HasSuffix(n, "_test.rego") {
			continue
		}
		b, err := fs.ReadFile(policies.FS, n)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, n), b, 0o644); err != nil {
			return err
		}
	}

	raw, err := fs.ReadFile(policies.FS, "data.json")
	if err != nil {
		return err
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(raw, &top); err != nil {
		return fmt.Errorf("embedded data.json: %w", err)
	}
	var root map[string]json.RawMessage
	if err := json.Unmarshal(top["extauthz"], &root); err != nil {
		return fmt.Errorf("embedded data.json: extauthz: %w", err)
	}
	var demoKeys, demoTenants map[string]json.RawMessage
	var demoRoutes []json.RawMessage
	for name, dst := range map[string]any{"api_keys": &demoKeys, "tenants": &demoTenants, "routes": &demoRoutes} {
		if b, ok := root[name]; ok {
			if err := json.Unmarshal(b, dst); err != nil {
				return fmt.Errorf("embedded data.json: extauthz.%s: %w", name, err)
			}
		}
	}

	f, err := os.Create(filepath.Join(dir, "data.json"))
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	compact := func(b []byte) []byte {
		var buf bytes.Buffer
		if json.Compact(&buf, b) != nil {
			return b
		}
		return buf.Bytes()
	}
	fmt.Fprint(w, "{\"extauthz\": {\n")
	// Every other section (settings, jwt, profiles, ...) verbatim.
	for _, name := range slices.Sorted(maps.Keys(root)) {
		if name == "api_keys" || name == "tenants" || name == "routes" {
			continue
		}
		fmt.Fprintf(w, "  %q: %s,\n", name, compact(root[name]))
	}

	fmt.Fprint(w, "  \"tenants\": {")
	sep := "\n    "
	for _, id := range slices.Sorted(maps.Keys(demoTenants)) {
		fmt.Fprintf(w, "%s%q: %s", sep, id, compact(demoTenants[id]))
		sep = ",\n    "
	}
	for i := range tenants {
		fmt.Fprintf(w, "%s\"%d\": {\"allowed_cidrs\": [%q, \"198.18.%d.0/24\", %q]}", sep, 1000+i, SyntheticTenantCIDR(i), i&255, SyntheticTenantCIDR6(i))
		sep = ",\n    "
	}
	fmt.Fprint(w, "\n  },\n")

	fmt.Fprint(w, "  \"routes\": [")
	sep = "\n    "
	for _, r := range demoRoutes {
		fmt.Fprintf(w, "%s%s", sep, compact(r))
		sep = ",\n    "
	}
	for i := range routes {
		fmt.Fprintf(w, "%s{\"id\": \"svc%d-read\", \"methods\": [\"GET\", \"HEAD\"], \"path\": %q, \"prefix\": true, \"auth\": [\"api_key\", \"jwt\"], \"scopes\": [\"items:read\"], \"tenant_headers\": [{\"header\": \"X-Tenant-Id\", \"format\": \"positive_integer\", \"required\": true}]}", sep, i, SyntheticRoutePath(i))
		sep = ",\n    "
	}
	fmt.Fprint(w, "\n  ],\n")

	// api_keys last: by far the largest section.
	fmt.Fprint(w, "  \"api_keys\": {")
	sep = "\n    "
	for _, h := range slices.Sorted(maps.Keys(demoKeys)) {
		fmt.Fprintf(w, "%s%q: %s", sep, h, compact(demoKeys[h]))
		sep = ",\n    "
	}
	for i := first; i < first+SyntheticKeys(keys); i++ {
		tenant := SyntheticKeyTenant(i, tenants)
		fmt.Fprintf(w, "%s%q: {\"id\": \"scale-%d\", \"subject\": \"svc:scale-%d\", \"tenants\": [\"%d\"], \"scopes\": [\"orders:read\", \"items:read\"]}",
			sep, hashKey(SyntheticKey(i)), i, i, tenant)
		sep = ",\n    "
	}
	fmt.Fprint(w, "\n  }\n}}\n")
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
