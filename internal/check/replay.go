package check

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"

	"github.com/extauthz/extauthz/internal/authn"
	"github.com/extauthz/extauthz/internal/authn/apikey"
	"github.com/extauthz/extauthz/internal/credential"
	"github.com/extauthz/extauthz/internal/decision"
	"github.com/extauthz/extauthz/internal/engine"
	"github.com/extauthz/extauthz/internal/pathcanon"
	"github.com/extauthz/extauthz/internal/replay"
)

// replayKeys caches the key-id index of the engine replays run on.
type replayKeys struct {
	mu  sync.Mutex
	eng *engine.Engine
	idx *apikey.IDIndex
}

func (k *replayKeys) index(eng *engine.Engine) *apikey.IDIndex {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.eng != eng {
		k.eng, k.idx = eng, apikey.NewIDIndex(eng.Keys)
	}
	return k.idx
}

// Replay decides a decision-log record again on the current policy version
// from the facts it carries, as the server would have decided a request
// with those facts (route matched again, profile, credential, policy,
// shadow; quotas never counted). The facts are rebuilt against this policy:
// an API key is looked up by its key id in this policy's data with its
// expiry taken at the record's time; a key no record matched and a bearer
// JWT are decided only when this policy's api_keys (jwt) section is the one
// they were recorded with. A record this policy cannot decide exactly is a
// *replay.NotReplayable error naming why; nothing is guessed.
func (s *Server) Replay(ctx context.Context, rec *replay.Record) (d *decision.Decision, err error) {
	eng := s.Engines.Current()
	switch {
	case eng == nil:
		return nil, errNoEngine
	case rec.Facts == nil:
		return nil, replay.Not("the record carries no facts (written without --decision-log-facts)", "")
	case len(rec.Masked) > 0:
		return nil, replay.Not("facts masked or erased by the decision-log policy", strings.Join(rec.Masked, ", "))
	case len(rec.Facts.Withheld) > 0:
		return nil, replay.Not("a fact was withheld from the record (over its bound or not UTF-8)", strings.Join(rec.Facts.Withheld, ", "))
	case rec.Reason == decision.RequestInvalid || rec.Reason == decision.RequestTooLarge:
		return nil, replay.Not("decided before the policy ("+string(rec.Reason)+")", "")
	case eng.OPAEnvoy():
		return nil, replay.Not("the policy reads the request itself (OPA-Envoy mode), not only the facts", "")
	case !eng.Policy.Pure():
		return nil, replay.Not("the policy reads more than the facts (it is not memoizable)", eng.Policy.Purity().Why)
	}
	r, err := s.replayRequest(eng, rec)
	if err != nil {
		return nil, err
	}
	now := rec.Time
	d = &decision.Decision{ID: s.nextID(), RequestID: r.id, Profile: r.f.Profile, PolicyVersion: eng.Version}
	if r.f.Route != nil {
		d.Route = r.f.Route.ID
	}
	defer func() {
		if p := recover(); p != nil {
			d, err = nil, fmt.Errorf("replay failed: %v", p)
		}
	}()
	s.decide(ctx, eng, r, d, now)
	s.shadow(ctx, eng, r, d, now)
	return d, nil
}

// replayRequest rebuilds the facts of rec against eng.
func (s *Server) replayRequest(eng *engine.Engine, rec *replay.Record) (*request, error) {
	rf := rec.Facts
	r := &request{eng: eng, id: rec.RequestID}
	if r.id == "" {
		r.id = rec.DecisionID
	}
	f := &r.f
	f.RequestID, f.Method, f.Path, f.PathProblem = r.id, rf.Method, rf.Path, rf.PathProblem
	if rf.PathProblem == "" {
		r.path = pathcanon.ParseInto(rf.Path, r.segs[:0])
		if r.path.Problem != "" || r.path.Canonical != rf.Path || r.path.Query != "" {
			return nil, errors.New("facts.path: not a canonical path")
		}
	} else {
		r.path = pathcanon.Path{Canonical: rf.Path, Problem: rf.PathProblem}
	}
	r.route(eng, rf.Context)
	if f.Route != nil {
		for i, th := range f.Route.Req.TenantHeaders {
			v, ok := rf.TenantHeaders[th.Key]
			if !ok {
				return nil, replay.Not("the route reads a tenant header the record does not hold", th.Key)
			}
			if v != nil {
				f.Tenants.Set(i, *v)
			}
		}
	}
	f.Browser, f.IdempotencyKey = rf.Browser, rf.IdempotencyKey
	if rf.ClientIP != "" {
		ip, err := netip.ParseAddr(rf.ClientIP)
		if err != nil {
			return nil, fmt.Errorf("facts.client_ip: %w", err)
		}
		f.ClientIP = ip
	}
	if err := s.replayCredential(eng, rec, r); err != nil {
		return nil, err
	}
	r.tenant = f.Tenant()
	return r, nil
}

// replayCredential rebuilds the credential's status and identity.
func (s *Server) replayCredential(eng *engine.Engine, rec *replay.Record, r *request) error {
	c := &rec.Facts.Credential
	fc := &r.f.Credential
	fc.Kind, fc.Via, fc.Status = credential.Kind(c.Kind), credential.Via(c.Via), authn.Status(c.Status)
	switch fc.Status {
	case authn.Missing, authn.Malformed, authn.WrongScheme:
		// Found in the request's shape alone: no policy data involved.
		return nil
	}
	switch fc.Kind {
	case credential.APIKey:
		if fc.Status == authn.Unknown {
			if c.Keys == "" || c.Keys != eng.KeysVersion {
				return replay.Not("an API key no record matched, and this policy's api_keys differ from the recording's", "")
			}
			return nil
		}
		if c.KeyID == "" {
			return errors.New("facts.credential: an API key with status " + c.Status + " and no key_id")
		}
		res, ok := s.replayKeys.index(eng).Lookup(c.KeyID, rec.Time)
		if !ok {
			return replay.Not("the key id is not in this policy's api_keys", c.KeyID)
		}
		fc.Status, fc.Identity = res.Status, res.Identity
		return nil
	case credential.JWT:
		if c.JWT == "" || c.JWT != eng.JWTVersion {
			return replay.Not("a bearer JWT, and this policy's jwt issuers differ from the recording's (the token is not kept)", "")
		}
		if c.Issuer != "" || c.Subject != "" {
			fc.Identity = (&authn.Identity{Kind: "jwt", Issuer: c.Issuer, Subject: c.Subject, Scopes: c.Scopes, Tenants: c.Tenants}).Seal()
		} else if fc.Status == authn.Valid {
			return errors.New("facts.credential: a valid JWT without its claims")
		}
		return nil
	}
	return fmt.Errorf("facts.credential: kind %q with status %q", c.Kind, c.Status)
}
