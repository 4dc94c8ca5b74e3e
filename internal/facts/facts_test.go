package facts

import (
	"net/netip"
	"reflect"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/extauthz/extauthz/internal/authn"
	"github.com/extauthz/extauthz/internal/route"
)

func testRoutes(t *testing.T) (*route.Route, *route.Route) {
	t.Helper()
	rt, err := route.Parse([]byte(`[{"id": "a", "path": "/a", "tenant_headers": [{"header": "X-T"}]},
		{"id": "b", "path": "/b", "tenant_headers": [{"header": "X-T"}]}]`), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := rt.ByID("a")
	b, _ := rt.ByID("b")
	return a, b
}

// change gives field i of f another value.
func change(t *testing.T, f *Facts, i int, other *route.Route) {
	t.Helper()
	switch x := reflect.ValueOf(f).Elem().Field(i).Addr().Interface().(type) {
	case *string:
		*x = "v"
	case *bool:
		*x = true
	case *netip.Addr:
		*x = netip.MustParseAddr("192.0.2.1")
	case **route.Route:
		*x = other
	case *Credential:
		x.Identity = (&authn.Identity{Kind: "api_key", KeyID: "k"}).Seal()
	case *Tenants:
		x.Set(0, "t")
	default:
		t.Fatalf("field %s: type %T has no test value; add one", reflect.TypeFor[Facts]().Field(i).Name, x)
	}
}

// Every fact is given to the policy and keyed by the memo: changing any one
// field changes input.extauthz and (but for the request id) the memo key.
func TestEveryFactReachesThePolicyAndTheKey(t *testing.T) {
	a, b := testRoutes(t)
	typ := reflect.TypeFor[Facts]()
	all := Reads{Path: true, Method: true, ClientIP: true}
	for i := range typ.NumField() {
		name := typ.Field(i).Name
		base := Facts{Route: a}
		changed := base
		change(t, &changed, i, b)
		if ast.Compare(base.Value(), changed.Value()) == 0 {
			t.Errorf("%s does not reach input.extauthz", name)
		}
		if (base.Key(all) == changed.Key(all)) != (name == "RequestID") {
			t.Errorf("%s: memo key equality wrong (only the request id is left out)", name)
		}
	}
}

// An absent tenant header and an empty one are different facts.
func TestTenantPresenceIsAFact(t *testing.T) {
	a, _ := testRoutes(t)
	absent, empty := Facts{Route: a}, Facts{Route: a}
	empty.Tenants.Set(0, "")
	if absent.Key(Reads{}) == empty.Key(Reads{}) || ast.Compare(absent.Value(), empty.Value()) == 0 {
		t.Fatal("an empty tenant header is taken for an absent one")
	}
}

func TestKeyedFieldsAreTheValuesKeys(t *testing.T) {
	for _, f := range []string{FieldMethod, FieldPath, FieldPathProblem, FieldClientIP, FieldRoute, FieldProfile,
		FieldCredential, FieldTenantValues, FieldBrowser, FieldIdempotencyKey} {
		if !Keyed(f) {
			t.Errorf("%s is not keyed", f)
		}
	}
	if Keyed(FieldRequestID) || Keyed("headers") {
		t.Error("request_id or an unknown field is keyed")
	}
}
