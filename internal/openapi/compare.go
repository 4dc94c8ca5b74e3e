package openapi

import (
	"fmt"
	"slices"
	"strings"

	"github.com/extauthz/extauthz/internal/pathcanon"
	"github.com/extauthz/extauthz/internal/route"
)

// Finding is one place where the policy's routes and the spec disagree.
type Finding struct {
	Op      *Operation // nil for a route that matches no operation
	RouteID string     // the matched route, or the unmatched one; "" for no route
	Message string
}

func (f Finding) String() string {
	if f.Op == nil {
		return fmt.Sprintf("route %q: %s", f.RouteID, f.Message)
	}
	return fmt.Sprintf("%s: %s", f.Op.Name(), f.Message)
}

// SampleSegments are the canonical path segments of an operation's path
// with each {param} segment kept as "{param}": a value no literal route
// segment can take (the route table refuses braces in literals), so the
// segment matches as a request with any value for it does, unless a
// literal route claims that value (such a route then matches no operation
// and is reported as such).
func SampleSegments(path string) ([]string, error) {
	// A request carries braces escaped (the sidecar refuses them raw):
	// the template is parsed so, and its segments read back with them.
	p := pathcanon.Parse(templateBraces.Replace(path))
	if p.Problem != "" {
		return nil, fmt.Errorf("path %q is refused by the sidecar (%s)", path, p.Problem)
	}
	for i, s := range p.Segments {
		p.Segments[i] = templateUnbraces.Replace(s)
	}
	return p.Segments, nil
}

var (
	templateBraces   = strings.NewReplacer("{", "%7B", "}", "%7D")
	templateUnbraces = strings.NewReplacer("%7B", "{", "%7D", "}")
)

// Compare matches each operation to the policy's route table as a request
// would be (Table.Match on the operation's path) and reports every
// operation with no route or with a weaker one (public where the spec
// secures it, missing scopes the spec requires, accepting credential kinds
// the spec does not declare), then every route no operation matches.
func Compare(t *route.Table, s *Spec) []Finding {
	var out []Finding
	matched := map[string]bool{}
	for i := range s.Ops {
		o := &s.Ops[i]
		segs, err := SampleSegments(o.Path)
		if err != nil {
			out = append(out, Finding{Op: o, Message: err.Error()})
			continue
		}
		r := t.Match(o.Method, segs)
		if r == nil {
			out = append(out, Finding{Op: o, Message: "no route: its requests are denied route_not_found"})
			continue
		}
		matched[r.ID] = true
		name := fmt.Sprintf("route %q", r.ID)
		if r.ID == route.DefaultID {
			name = "only the default route, which"
		}
		if !o.Secured {
			continue // any route is at least as strong as a public operation
		}
		if r.Req.Public {
			out = append(out, Finding{Op: o, RouteID: r.ID, Message: fmt.Sprintf("%s is public, but the spec secures the operation (%s)", name, o.wants())})
			continue
		}
		if missing := minus(o.Scopes, r.Req.Scopes); len(missing) > 0 {
			out = append(out, Finding{Op: o, RouteID: r.ID, Message: fmt.Sprintf("%s does not require scopes %s, which the spec requires", name, strings.Join(missing, " "))})
		}
		if extra := minus(r.Req.Auth, o.Auth); len(extra) > 0 {
			out = append(out, Finding{Op: o, RouteID: r.ID, Message: fmt.Sprintf("%s accepts %s, which the spec does not declare (the spec: %s)", name, strings.Join(extra, ", "), orNone(o.Auth))})
		}
	}
	for _, id := range t.IDs() {
		if !matched[id] {
			out = append(out, Finding{RouteID: id, Message: "matches no operation of the spec"})
		}
	}
	return out
}

func (o *Operation) wants() string {
	s := "auth " + orNone(o.Auth)
	if len(o.Scopes) > 0 {
		s += ", scopes " + strings.Join(o.Scopes, " ")
	}
	return s
}

func orNone(ss []string) string {
	if len(ss) == 0 {
		return "none extauthz checks"
	}
	return strings.Join(ss, ", ")
}

// minus is the elements of a not in b, in a's order.
func minus(a, b []string) []string {
	var out []string
	for _, x := range a {
		if !slices.Contains(b, x) && !slices.Contains(out, x) {
			out = append(out, x)
		}
	}
	return out
}
