package source

import (
	"context"
	"errors"
	"log/slog"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/extauthz/extauthz/internal/authn/jwt"
	"github.com/extauthz/extauthz/internal/engine"
	"github.com/extauthz/extauthz/internal/policy"
)

// Status is the outcome of the last reload attempt.
type Status struct {
	Version   string    `json:"version,omitempty"`    // serving version
	LoadedAt  time.Time `json:"loaded_at,omitempty"`  // when it started serving
	LastError string    `json:"last_error,omitempty"` // last rejected version's error; "" after a success
	LastTry   time.Time `json:"last_try,omitempty"`
}

// Reloader builds engines from a Loader and swaps good ones into a Holder.
type Reloader struct {
	Loader Loader
	Build  func(context.Context, *policy.Source) (*engine.Engine, error)
	Holder *engine.Holder
	Log    *slog.Logger
	// OnResult observes every attempt that saw a new version (metrics).
	OnResult func(ok bool)

	mu     sync.Mutex // one reload at a time
	status atomic.Pointer[Status]
	// failDigest is the content of the version that last failed to load
	// (a *VersionError): the same content again is not logged or counted.
	failDigest string
}

// Status is the last reload outcome.
func (r *Reloader) Status() Status {
	if s := r.status.Load(); s != nil {
		return *s
	}
	return Status{}
}

// Reload makes one attempt: load, and if there is a new version, build it
// and swap it in. The old engine is closed after the swap; checks in flight
// finish on the engine they started with.
func (r *Reloader) Reload(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.Status()
	st.LastTry = time.Now()
	src, changed, err := r.Loader.Load(ctx)
	if err == nil && !changed {
		if r.failDigest != "" {
			// The loader is back to the version it returned last, the one
			// serving (a version that failed to load does not replace it
			// there): the error is over.
			r.failDigest, st.LastError = "", ""
			r.log().Info("policy source is back to the serving version", "source", r.Loader.String(), "serving", st.Version)
		}
		r.status.Store(&st)
		return nil
	}
	var ve *VersionError
	if errors.As(err, &ve) {
		if ve.Digest == r.failDigest {
			// Reported already: one broken version is one failure.
			st.LastError = err.Error()
			r.status.Store(&st)
			return err
		}
		r.failDigest = ve.Digest
	} else {
		r.failDigest = ""
	}
	var eng *engine.Engine
	if err == nil {
		eng, err = r.Build(ctx, src)
		_ = src.Close() // the data file its API keys were read from
	}
	if err == nil {
		// A version that would deny everything by mistake (no data.json, no
		// routes, no credentials) is refused like a broken one.
		if err = eng.Servable(); err != nil {
			eng.Close()
			eng = nil
		}
	}
	if err != nil {
		st.LastError = err.Error()
		r.status.Store(&st)
		if st.Version == "" {
			r.log().Error("policy rejected; no version is serving (checks are denied internal_error until one loads)", "source", r.Loader.String(), "error", err.Error())
		} else {
			r.log().Error("policy rejected; the last good version keeps serving", "source", r.Loader.String(), "serving", st.Version, "error", err.Error())
		}
		if r.OnResult != nil {
			r.OnResult(false)
		}
		return err
	}
	old := r.Holder.Store(eng)
	if w, ok := r.Loader.(interface{ Watch([]jwt.File) }); ok {
		w.Watch(eng.Files())
	}
	st = Status{Version: eng.Version, LoadedAt: time.Now(), LastTry: st.LastTry}
	r.status.Store(&st)
	r.log().Info("policy loaded", "source", r.Loader.String(), "version", eng.Version,
		"routes", eng.Routes.Len(), "api_keys", eng.Keys.Len(), "profiles", len(eng.Profiles.Names()), "memoized", eng.Policy.Pure(),
		"client_ip_traced", eng.Policy.Purity().TracesClientIP)
	for _, w := range eng.Warnings {
		r.log().Warn("policy warning", "version", eng.Version, "warning", w)
	}
	if !eng.Policy.Pure() {
		r.log().Info("decision memo off: the policy reads more than input.extauthz", "why", eng.Policy.Purity().Why)
	}
	if r.OnResult != nil {
		r.OnResult(true)
	}
	if old != nil {
		old.Close()
	}
	// Building a version leaves garbage (the sections decoded for the
	// policy store, the key index's build tables, the retired version's
	// store once the last check on it ends), and the runtime would hand
	// it back to the OS only slowly. Reloads are rare, so collect and
	// return it now.
	debug.FreeOSMemory()
	return nil
}

// Run reloads every interval (if > 0) and on each signal from hup, until ctx ends.
func (r *Reloader) Run(ctx context.Context, interval time.Duration, hup <-chan struct{}) {
	var tick <-chan time.Time
	if interval > 0 {
		t := time.NewTicker(interval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick:
		case <-hup:
		}
		_ = r.Reload(ctx)
	}
}

func (r *Reloader) log() *slog.Logger {
	if r.Log != nil {
		return r.Log
	}
	return slog.Default()
}
