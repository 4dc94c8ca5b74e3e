package rediskeys

import "sync"

// registry holds the stores policy versions share: a reload with the same
// api_keys_store keeps the connections, the subscription, the warm cache
// and so the identities (the decision memo keys on them).
var registry struct {
	mu     sync.Mutex
	stores []*Store
}

// Shared returns the open store for cfg, or opens one with opts. Each call
// takes a reference, which Release gives back; the last Release closes it.
func Shared(cfg Config, opts Options) *Store {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	for _, s := range registry.stores {
		if s.cfg == cfg {
			s.refs++
			return s
		}
	}
	s := New(cfg, opts)
	s.refs = 1
	registry.stores = append(registry.stores, s)
	return s
}

// Release gives back a reference Shared took.
func (s *Store) Release() {
	registry.mu.Lock()
	s.refs--
	last := s.refs == 0
	if last {
		for i, o := range registry.stores {
			if o == s {
				registry.stores = append(registry.stores[:i], registry.stores[i+1:]...)
				break
			}
		}
	}
	registry.mu.Unlock()
	if last {
		s.Close()
	}
}
