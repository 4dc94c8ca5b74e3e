package check

import (
	"context"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/extauthz/extauthz/internal/decision"
)

// Explanation is a check with its workings shown (extauthz check).
type Explanation struct {
	Decision decision.Decision
	// Facts is input.extauthz as the policy saw it (credentials are never in it).
	Facts    any
	Response *authv3.CheckResponse
}

// Explain answers req exactly like Check and also returns the decision and
// the facts the policy was given.
func (s *Server) Explain(ctx context.Context, req *authv3.CheckRequest) Explanation {
	d, r, resp, _ := s.check(ctx, req, false)
	var facts any
	if r != nil {
		if v, err := ast.JSON(r.Input()); err == nil {
			if m, ok := v.(map[string]any); ok {
				facts = m["extauthz"]
			}
		}
	}
	return Explanation{Decision: *d, Facts: facts, Response: resp}
}
