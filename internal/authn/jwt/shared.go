package jwt

import (
	"context"
	"net/http"
	"sync"
	"time"
)

// A JWKS URL's key set is shared by every live verifier with the same
// issuer, URL, refresh interval and HTTP client: a policy reload builds a
// new verifier, which takes the key set fetched so far and its refresh
// schedule instead of starting empty. (A new, empty key set denied every
// token of the issuer auth_unavailable until its first fetch, and for up
// to a refresh interval when that fetch failed.) The key set is released,
// and its refresh stopped, when the last verifier using it closes.

type urlKey struct {
	issuer, url string
	every       time.Duration
	client      *http.Client // as given in Options (nil: the default)
}

type sharedURL struct {
	refs   int                // under urlMu
	ready  chan struct{}      // closed after the first fetch attempt
	ks     *keySource         // set before ready is closed; nil: it could not be built
	cancel context.CancelFunc // stops its refresh
}

var (
	urlMu      sync.Mutex
	urlSources = map[urlKey]*sharedURL{}
)

// acquireURL returns the shared key set for k, started by start (on a
// context of its own) when there is none, or none that could be built.
func acquireURL(k urlKey, start func(ctx context.Context) (*keySource, error)) *sharedURL {
	urlMu.Lock()
	defer urlMu.Unlock()
	if s := urlSources[k]; s != nil && !s.failed() {
		s.refs++
		return s
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &sharedURL{refs: 1, ready: make(chan struct{}), cancel: cancel}
	urlSources[k] = s
	go func() {
		defer close(s.ready)
		ks, err := start(ctx)
		if err == nil {
			s.ks = ks
		}
	}()
	return s
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
