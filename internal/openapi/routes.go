package openapi

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode"

	"github.com/extauthz/extauthz/internal/route"
)

// Routes is the route table for the spec's operations: per path, the
// operations with equal requirements share one route (methods grouped),
// in the order of their first method. An id is the sanitised operationId
// of a route's only operation, else made of the path (and methods when the
// path has several routes); ids are unique. Operations whose security
// extauthz cannot check get no route (and a warning): their requests are
// denied route_not_found.
func (s *Spec) Routes() []route.Def {
	var defs []route.Def
	taken := map[string]bool{route.DefaultID: true}
	for start := 0; start < len(s.Ops); {
		end := start
		for end < len(s.Ops) && s.Ops[end].Path == s.Ops[start].Path {
			end++
		}
		type group struct {
			def route.Def
			ids []string
		}
		var groups []*group
		for _, o := range s.Ops[start:end] {
			if o.Secured && len(o.Auth) == 0 {
				s.warnf("%s: no route emitted (no credential extauthz checks): its requests are denied route_not_found", o.Name())
				continue
			}
			req := o.requirements()
			var g *group
			for _, c := range groups {
				if equalReq(c.def.Requirements, req) {
					g = c
					break
				}
			}
			if g == nil {
				g = &group{def: route.Def{Path: o.Path, Requirements: req}}
				groups = append(groups, g)
			}
			g.def.Methods = append(g.def.Methods, o.Method)
			g.ids = append(g.ids, o.OperationID)
		}
		for _, g := range groups {
			g.def.ID = unique(taken, baseID(g.def, g.ids, len(groups)))
			defs = append(defs, g.def)
		}
		start = end
	}
	return defs
}

func (o Operation) requirements() route.Requirements {
	if !o.Secured {
		return route.Requirements{Public: true}
	}
	req := route.Requirements{Auth: slices.Clone(o.Auth), Scopes: slices.Clone(o.Scopes), IdempotencyKey: o.IdempotencyKey}
	for _, th := range o.TenantHeaders {
		if th.Dimension == "tenant" {
			th.Dimension = ""
		}
		if th.Format == route.FormatAny {
			th.Format = ""
		}
		req.TenantHeaders = append(req.TenantHeaders, th)
	}
	return req
}

func equalReq(a, b route.Requirements) bool {
	return a.Public == b.Public && a.IdempotencyKey == b.IdempotencyKey && slices.Equal(a.Auth, b.Auth) && slices.Equal(a.Scopes, b.Scopes) &&
		slices.Equal(a.TenantHeaders, b.TenantHeaders)
}

func baseID(d route.Def, opIDs []string, groupsOnPath int) string {
	if len(opIDs) == 1 && opIDs[0] != "" {
		if id := sanitize(opIDs[0]); id != "" {
			return id
		}
	}
	id := sanitize(strings.ReplaceAll(strings.ReplaceAll(d.Path, "{", ""), "}", ""))
	if id == "" {
		id = "root"
	}
	if groupsOnPath > 1 {
		id += "-" + strings.ToLower(strings.Join(d.Methods, "-"))
	}
	return id
}

// sanitize makes an id of s: camelCase split into words, lower case, runs
// of other characters a single '-'.
func sanitize(s string) string {
	var b strings.Builder
	dash := false
	rs := []rune(s)
	for i, r := range rs {
		switch {
		case r < unicode.MaxASCII && (unicode.IsLetter(r) || unicode.IsDigit(r)):
			if unicode.IsUpper(r) && i > 0 && b.Len() > 0 && !dash &&
				(unicode.IsLower(rs[i-1]) || unicode.IsDigit(rs[i-1]) || (i+1 < len(rs) && unicode.IsLower(rs[i+1]) && unicode.IsUpper(rs[i-1]))) {
				b.WriteByte('-')
			}
			b.WriteRune(unicode.ToLower(r))
			dash = false
		case r == '_' || r == '.':
			if b.Len() > 0 && !dash {
				b.WriteRune(r)
			}
		default:
			if b.Len() > 0 && !dash {
				b.WriteByte('-')
				dash = true
			}
		}
	}
	return strings.Trim(b.String(), "-_.")
}

func unique(taken map[string]bool, id string) string {
	out := id
	for n := 2; taken[out]; n++ {
		out = id + "-" + strconv.Itoa(n)
	}
	taken[out] = true
	return out
}

// MarshalRoutes is defs as the JSON array data.json's extauthz.routes
// takes, indented, checked by the route table's own parser.
func MarshalRoutes(defs []route.Def) ([]byte, error) {
	if defs == nil {
		defs = []route.Def{}
	}
	b, err := json.MarshalIndent(defs, "", "  ")
	if err != nil {
		return nil, err
	}
	if _, err := route.Parse(b, nil, nil); err != nil {
		return nil, fmt.Errorf("the routes made do not parse (a bug): %w", err)
	}
	return append(b, '\n'), nil
}
