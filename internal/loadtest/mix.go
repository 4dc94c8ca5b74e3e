package loadtest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Demo credentials from policies/data.json.
const (
	DemoAPIKey     = "xa_demo_7Qm2vK9pL4sT8wZ1"
	ReadonlyAPIKey = "xa_demo_readonly_K3n8Vb"
	Tenant7APIKey  = "xa_demo_tenant7_A1b2Zy" // tenant 7, whose allowlist is 10.0.0.0/8
	// UnknownAPIKey looks like a real key but is in no policy data.
	UnknownAPIKey = "xa_live_R8f3Wq6Ln1Zt4Yc9Hv2Kb5Ps"
)

// Case is one kind of request in a mix and the decision extauthz must give.
type Case struct {
	Name    string
	Method  string
	Path    string
	Headers map[string]string // credential and tenant headers, added to the common Envoy set
	// Source is the client address Envoy saw (attributes.source, which
	// extauthz's IP allowlists check); empty means 127.0.0.1.
	Source string
	// FreshSource, when set, gives request seq of this case a new client
	// address (attributes.source, x-forwarded-for and
	// x-envoy-external-address), as a public API's clients arrive.
	FreshSource func(seq uint64) string
	// Body, when set, is the request body Envoy forwards
	// (with_request_body), with its content-length header.
	Body string
	// Want is the expected HTTP status: 200 for allow, else the deny status.
	Want int
}

// Mix is a weighted set of cases, turned into a fixed, shuffled schedule so
// every run (and every server) receives the same sequence of requests.
type Mix struct {
	Name string
	// Desc, when set, is what Describe says instead of listing the cases.
	Desc     string
	Cases    []Case
	Weights  []int // per case, summing to len(Schedule)
	Schedule []int // request i uses Cases[Schedule[i%len(Schedule)]]
}

// MixNames lists the mixes NewMix knows, blend last.
func MixNames() []string {
	return []string{"apikey_allow", "jwt_allow", "deny_missing", "deny_unknown_key", "deny_tenant", "deny_scope", ManyIPsMix, ScaleMix, "blend"}
}

// ManyIPsMix sends API-key allows from a new client address per request:
// half on tenant 42 (no allowlist), half with the tenant-7 key on tenant 7,
// whose allowlist (10.0.0.0/8) holds every address sent.
const ManyIPsMix = "many_ips"

// FreshAddr is the client address of request seq of a ManyIPsMix case: one
// of the 2^24 addresses of 10.0.0.0/8.
func FreshAddr(seq uint64) string {
	return fmt.Sprintf("10.%d.%d.%d", (seq>>16)&255, (seq>>8)&255, seq&255)
}

// ScaleMix is the mix that exercises a scaled policy's synthetic keys,
// tenant allowlists and routes (see NewScaledMix); sweeps use it by default.
const ScaleMix = "scale_allow"

// scaleCases is how many cases ScaleMix spreads over a scaled policy.
const scaleCases = 16

const scaleMixDesc = ScaleMix + " GET→200 100%: 16 cases, each a synthetic key (spread evenly over the synthetic keys) " +
	"with its tenant in X-Tenant-Id, from a new address per request in that tenant's IP allowlist (its IPv6 /64), on a synthetic route (spread evenly over them); " +
	"the demo key on tenant 42 stands in when there are no synthetic keys, /v1/orders/17 when there are no synthetic routes"

// NeedsJWT reports whether a mix sends the demo JWT.
func NeedsJWT(mix string) bool { return mix == "jwt_allow" || mix == "blend" }

// ReadJWT reads a compact JWT from a file, trimming whitespace.
func ReadJWT(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("jwt: %w", err)
	}
	t := strings.TrimSpace(string(b))
	if strings.Count(t, ".") != 2 {
		return "", fmt.Errorf("jwt: %s does not hold a compact JWT", path)
	}
	return t, nil
}

func cases(jwt string) map[string]Case {
	return map[string]Case{
		"apikey_allow": {Name: "apikey_allow", Method: "GET", Path: "/v1/orders/17",
			Headers: map[string]string{"x-api-key": DemoAPIKey, "x-tenant-id": "42"}, Want: 200},
		"jwt_allow": {Name: "jwt_allow", Method: "GET", Path: "/v1/orders/17",
			Headers: map[string]string{"authorization": "Bearer " + jwt, "x-tenant-id": "42"}, Want: 200},
		"deny_missing": {Name: "deny_missing", Method: "GET", Path: "/v1/orders/17",
			Headers: map[string]string{"x-tenant-id": "42"}, Want: 401},
		"deny_unknown_key": {Name: "deny_unknown_key", Method: "GET", Path: "/v1/orders/17",
			Headers: map[string]string{"x-api-key": UnknownAPIKey, "x-tenant-id": "42"}, Want: 401},
		"deny_tenant": {Name: "deny_tenant", Method: "GET", Path: "/v1/orders/17",
			Headers: map[string]string{"x-api-key": DemoAPIKey, "x-tenant-id": "43"}, Want: 403},
		"deny_scope": {Name: "deny_scope", Method: "POST", Path: "/v1/orders",
			Headers: map[string]string{"x-api-key": ReadonlyAPIKey, "x-tenant-id": "42", "idempotency-key": "7f3c9a1e-lt", "content-type": "application/json"}, Want: 403},
	}
}

// scaleAllowCases are ScaleMix's cases for a policy written by
// WriteScaledPolicy with sizes sc. Case j uses synthetic key
// k = j*n/16 of the n synthetic keys, with its tenant in X-Tenant-Id and,
// when that is a synthetic tenant, a new source address per request in the
// tenant's IPv6 allowlist entry (SyntheticTenantAddr6); and
// route r = j*routes/16 (GET /v1/svc<r>/items/1). Without synthetic keys
// every case is the demo key on tenant 42 and GET /v1/orders/17 (the demo
// key lacks items:read); without synthetic routes the path is
// /v1/orders/17. Every case must be allowed.
func scaleAllowCases(sc Scale) []Case {
	n := SyntheticKeys(sc.Keys)
	out := make([]Case, 0, scaleCases)
	for j := range scaleCases {
		c := Case{Method: "GET", Path: "/v1/orders/17", Want: 200,
			Headers: map[string]string{"x-api-key": DemoAPIKey, "x-tenant-id": "42"}}
		if n == 0 {
			c.Name = fmt.Sprintf("%s#%d demo key", ScaleMix, j)
			out = append(out, c)
			continue
		}
		k := j * n / scaleCases
		tenant := SyntheticKeyTenant(k, sc.Tenants)
		c.Headers = map[string]string{"x-api-key": SyntheticKey(k), "x-tenant-id": fmt.Sprint(tenant)}
		if sc.Tenants > 0 {
			t := k % sc.Tenants
			c.Source = tenantAddr(t)
			c.FreshSource = func(seq uint64) string { return SyntheticTenantAddr6(t, seq) }
		}
		if sc.Routes > 0 {
			c.Path = SyntheticRoutePath(j*sc.Routes/scaleCases) + "/1"
		}
		from := c.source()
		if sc.Tenants > 0 {
			from = SyntheticTenantCIDR6(k % sc.Tenants)
		}
		c.Name = fmt.Sprintf("%s#%d key %d tenant %d from %s %s", ScaleMix, j, k, tenant, from, c.Path)
		out = append(out, c)
	}
	return out
}

// tenantAddr is host .7 of synthetic tenant index t's first CIDR.
func tenantAddr(t int) string {
	return strings.TrimSuffix(SyntheticTenantCIDR(t), ".0/24") + ".7"
}

// NewMix builds a named mix for the embedded demo policy (or any policy
// whose synthetic parts ScaleMix need not reach; see NewScaledMix). jwt is
// the demo bearer token; it is needed only by mixes that send it (see
// NeedsJWT).
//
// blend is 70% API-key allow, 15% JWT allow and 15% spread over the four
// denies (4/4/4/3), in a shuffled schedule of 100 with exact proportions.
func NewMix(name, jwt string) (*Mix, error) { return NewScaledMix(name, jwt, Scale{}) }

// NewScaledMix is NewMix for a policy written by WriteScaledPolicy with
// sizes sc. Only ScaleMix depends on sc: 16 equally weighted allows, each a
// different synthetic key with its tenant's header, source address and a
// synthetic route (see scaleAllowCases). With a zero sc it sends the demo key
// on tenant 42 to /v1/orders/17, which the demo policy allows.
func NewScaledMix(name, jwt string, sc Scale) (*Mix, error) {
	if NeedsJWT(name) && jwt == "" {
		return nil, fmt.Errorf("mix %s: needs the demo JWT", name)
	}
	all := cases(jwt)
	var m Mix
	m.Name = name
	switch name {
	case ScaleMix:
		m.Desc = scaleMixDesc
		m.Cases = scaleAllowCases(sc)
		for range m.Cases {
			m.Weights = append(m.Weights, 1)
		}
	case ManyIPsMix:
		m.Cases = []Case{
			{Name: "apikey_allow_fresh_ip", Method: "GET", Path: "/v1/orders/17", FreshSource: FreshAddr,
				Headers: map[string]string{"x-api-key": DemoAPIKey, "x-tenant-id": "42"}, Want: 200},
			{Name: "allowlisted_fresh_ip", Method: "GET", Path: "/v1/orders", FreshSource: FreshAddr,
				Headers: map[string]string{"x-api-key": Tenant7APIKey, "x-tenant-id": "7"}, Want: 200},
		}
		m.Weights = []int{1, 1}
	case "blend":
		for _, cw := range []struct {
			name string
			w    int
		}{{"apikey_allow", 70}, {"jwt_allow", 15}, {"deny_missing", 4}, {"deny_unknown_key", 4}, {"deny_tenant", 4}, {"deny_scope", 3}} {
			m.Cases = append(m.Cases, all[cw.name])
			m.Weights = append(m.Weights, cw.w)
		}
	default:
		c, ok := all[name]
		if !ok {
			return nil, fmt.Errorf("mix %q: unknown (known: %s)", name, strings.Join(MixNames(), ", "))
		}
		m.Cases = []Case{c}
		m.Weights = []int{1}
	}
	m.schedule()
	return &m, nil
}

// newMix is a mix of cases with weights, in a shuffled schedule.
func newMix(name string, cases []Case, weights []int) *Mix {
	m := &Mix{Name: name, Cases: cases, Weights: weights}
	m.schedule()
	return m
}

// schedule fills Schedule from Weights: exact proportions, shuffled with a
// fixed seed so every run and server gets the same sequence.
func (m *Mix) schedule() {
	for i, w := range m.Weights {
		for range w {
			m.Schedule = append(m.Schedule, i)
		}
	}
	r := rand.New(rand.NewPCG(0x6578746175, 0x74687a))
	r.Shuffle(len(m.Schedule), func(i, j int) { m.Schedule[i], m.Schedule[j] = m.Schedule[j], m.Schedule[i] })
}

// Describe is a one-line summary of the mix, e.g.
// "apikey_allow 70%, jwt_allow 15%, ...".
func (m *Mix) Describe() string {
	if m.Desc != "" {
		return m.Desc
	}
	total := 0
	for _, w := range m.Weights {
		total += w
	}
	var parts []string
	for i, c := range m.Cases {
		parts = append(parts, fmt.Sprintf("%s %s→%d %.0f%%", c.Name, c.Method, c.Want, 100*float64(m.Weights[i])/float64(total)))
	}
	return strings.Join(parts, ", ")
}

// Envoy-like request facts shared by every case.
var commonHeaders = map[string]string{
	":authority":               "api.example.com",
	":scheme":                  "https",
	"user-agent":               "orders-client/2.4 (+https://example.com) go-http-client/1.1",
	"accept":                   "application/json",
	"x-forwarded-proto":        "https",
	"x-forwarded-for":          "203.0.113.9",
	"x-envoy-external-address": "203.0.113.9",
}

// source is c's client address.
func (c Case) source() string {
	if c.Source == "" {
		return "127.0.0.1"
	}
	return c.Source
}

// Request builds the CheckRequest Envoy's ext_authz filter would send for c
// (HTTP/1.1 from c.Source, default 127.0.0.1, to a listener on
// 127.0.0.1:8080). With a Source set, x-forwarded-for and
// x-envoy-external-address carry it too, as an edge Envoy
// (use_remote_address) would write them, so the client address extauthz
// resolves is c.Source whatever its --xff-trusted-hops. The caller owns the
// result and may change its x-request-id header and http.id per send.
func (c Case) Request() *authv3.CheckRequest {
	h := make(map[string]string, len(commonHeaders)+len(c.Headers)+3)
	for k, v := range commonHeaders {
		h[k] = v
	}
	h[":method"] = c.Method
	h[":path"] = c.Path
	h["x-request-id"] = "00000000-0000-4000-8000-000000000000"
	if c.Source != "" {
		h["x-forwarded-for"] = c.Source
		h["x-envoy-external-address"] = c.Source
	}
	for k, v := range c.Headers {
		h[strings.ToLower(k)] = v
	}
	if c.Body != "" {
		h["content-length"] = strconv.Itoa(len(c.Body))
	}
	addr := func(ip string, port uint32) *corev3.Address {
		return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      &authv3.AttributeContext_Peer{Address: addr(c.source(), 40000)},
		Destination: &authv3.AttributeContext_Peer{Address: addr("127.0.0.1", 8080)},
		Request: &authv3.AttributeContext_Request{
			Time: timestamppb.Now(),
			Http: &authv3.AttributeContext_HttpRequest{
				Id: "1", Method: c.Method, Path: c.Path, Host: "api.example.com", Scheme: "https",
				Protocol: "HTTP/1.1", Headers: h, Body: c.Body, Size: int64(len(c.Body)),
			},
		},
	}}
}

func hashKey(k string) string {
	d := sha256.Sum256([]byte(k))
	return hex.EncodeToString(d[:])
}
