package jwt

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// A JWKS URL's key set is shared by every live verifier with the same
// issuer, URL, refresh interval and HTTP client: a policy reload builds a
// new verifier, which takes the key set fetched so far and its refresh
// schedule instead of starting empty. (A new, empty key set denied every
// token of the issuer auth_unavailable until its first fetch, and for up
// to a refresh interval when that fetch failed.) A verifier that joins a
// key set fetched before refreshes it in the background, as a reload did
// when it built its own (a rotated or withdrawn key is seen at the reload),
// and keeps the keys it has when that fetch fails. Fetch outcomes are told
// to the OnJWKSFetch of the verifier that joined last. The key set is
// released, and its refresh stopped, when the last verifier using it
// closes.

type urlKey struct {
	issuer, url string
	every       time.Duration
	algs        string       // the issuer's algorithms, which a fetched set must serve
	client      *http.Client // as given in Options (nil: the default)
}

type sharedURL struct {
	refs       int                // under urlMu
	ready      chan struct{}      // closed after the first fetch attempt
	ks         *keySource         // set before ready is closed; nil: it could not be built
	ctx        context.Context    // the key set's: done when the last user releases it
	cancel     context.CancelFunc // stops its refresh
	refreshing atomic.Bool        // a joiner's refresh is in flight
	report     atomic.Pointer[func(issuer string, ok bool)]
}

// reportFetch tells the latest joiner's OnJWKSFetch a fetch's outcome.
func (s *sharedURL) reportFetch(issuer string, ok bool) {
	if f := s.report.Load(); f != nil && *f != nil {
		(*f)(issuer, ok)
	}
}

var (
	urlMu      sync.Mutex
	urlSources = map[urlKey]*sharedURL{}
)

// acquireURL returns the shared key set for k, started by start (on a
// context of its own, reporting fetches to s.reportFetch) when there is
// none, or none that could be built; one fetched before is refreshed.
// report receives fetch outcomes from now on. A new key set of an issuer
// and URL that a live one of another refresh interval serves (a reload
// that changed refresh_interval_seconds) starts with that one's keys,
// given to start and returned as seed, to verify with until its own first
// fetch: without them it denied every token auth_unavailable until then,
// and for good when the provider was down.
func acquireURL(k urlKey, report func(issuer string, ok bool), start func(ctx context.Context, s *sharedURL, seed *keySource) (*keySource, error)) (s *sharedURL, seed *keySource) {
	urlMu.Lock()
	defer urlMu.Unlock()
	if s := urlSources[k]; s != nil && !s.failed() {
		s.refs++
		s.report.Store(&report)
		s.refresh()
		return s, nil
	}
	for k2, s2 := range urlSources {
		if k2.issuer == k.issuer && k2.url == k.url && k2.client == k.client && !s2.failed() {
			select {
			case <-s2.ready:
				seed = s2.ks
			default:
			}
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	s = &sharedURL{refs: 1, ready: make(chan struct{}), ctx: ctx, cancel: cancel}
	s.report.Store(&report)
	urlSources[k] = s
	go func() {
		defer close(s.ready)
		ks, err := start(ctx, s, seed)
		if err == nil {
			s.ks = ks
		}
	}()
	return s, seed
}

// refresh fetches a ready key set once more in the background, unless a
// refresh is in flight (successive reloads coalesce); a key set still on
// its first fetch needs none.
func (s *sharedURL) refresh() {
	select {
	case <-s.ready:
	default:
		return
	}
	if s.ks == nil || s.ks.refresh == nil || !s.refreshing.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer s.refreshing.Store(false)
		s.ks.refresh(s.ctx)
	}()
}

// failed reports a key set whose first attempt ended without one.
func (s *sharedURL) failed() bool {
	select {
	case <-s.ready:
		return s.ks == nil
	default:
		return false
	}
}

// releaseURL drops one use of s; the last stops its refresh.
func releaseURL(k urlKey, s *sharedURL) {
	urlMu.Lock()
	defer urlMu.Unlock()
	if s.refs--; s.refs > 0 {
		return
	}
	s.cancel()
	if urlSources[k] == s {
		delete(urlSources, k)
	}
}
