package check

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/extauthz/extauthz/internal/decision"
	"github.com/extauthz/extauthz/internal/engine"
	"github.com/extauthz/extauthz/internal/ratelimit"
)

// Quotas run after the policy allowed a request, keyed only on the verified
// identity (key id, or issuer and subject for a JWT), its tenant and plan, and
// the route — never on raw input, so anonymous traffic cannot grow the
// limiter's state. The counters belong to the long-lived quota service
// (ratelimit.Quotas), which outlives policy versions: a reload applies the
// new plans to the same counters.

// limit counts an allowed request. It may turn the allow into rate_limited,
// or into auth_unavailable when the shared backend is down and configured to
// deny; quota headers for the upstream response go into r.quotaHeaders.
func (s *Server) limit(ctx context.Context, eng *engine.Engine, r *request, d *decision.Decision, now time.Time) {
	if s.NoQuota {
		return
	}
	id := r.f.Identity()
	if id != nil && id.Plan != "" && !eng.HasPlan(id.Plan) {
		// Only a key read at run time (the Redis key store) can get here:
		// the embedded keys' plans are checked at load. Without its plan
		// the key would run unlimited.
		s.fail(d, fmt.Errorf("API key %q names plan %q, which extauthz.limits.plans does not define", id.KeyID, id.Plan))
		return
	}
	lim := s.Quotas.For(eng.Limits)
	if lim == nil || id == nil {
		return
	}
	sub := ratelimit.Subject{KeyID: id.KeyID, Plan: id.Plan, Subject: id.QuotaSubject()}
	if id.KeyID != "" {
		sub.Subject = id.Subject // limits.keys may name an API key by its subject
	}
	if len(eng.Limits.Tenants) > 0 {
		sub.Tenants = r.f.ActingTenants()
	}
	if r.f.Route != nil {
		sub.Route = r.f.Route.ID
	}
	res, err := lim.Take(ctx, sub, now)
	if err != nil {
		if errors.Is(err, ratelimit.ErrUnavailable) {
			d.Allow, d.Reason = false, decision.AuthUnavailable
			s.log().Warn("rate-limit backend unavailable; denying as configured", "decision_id", d.ID, "error", err.Error())
			return
		}
		s.fail(d, err)
		return
	}
	family := eng.Limits.Headers
	r.quotaHeaders = res.Headers(family)
	if !res.Allowed {
		d.Allow, d.Reason, d.RateLimit = false, decision.RateLimited, res.RateLimit()
		if family != ratelimit.HeadersIETF {
			r.quotaHeaders = nil // the profile renders X-RateLimit-* and Retry-After itself
		}
	}
}

// extraQuotaHeaders are quota headers a deny response does not already carry.
func extraQuotaHeaders(have [][2]string, quota [][2]string) [][2]string {
	var out [][2]string
	for _, q := range quota {
		name := strings.ToLower(q[0])
		dup := false
		for _, h := range have {
			if h[0] == name {
				dup = true
				break
			}
		}
		if !dup {
			out = append(out, [2]string{name, q[1]})
		}
	}
	return out
}
