package policy

import (
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// virtualCache is topdown's cache of the values of rules (and function
// calls) within one evaluation, kept flat and reused: a slice of entries
// per frame instead of topdown's default (a tree with a hash map at every
// level of every reference, made anew for every evaluation). A policy
// evaluates a handful of rules per check, so the default's maps were a
// fifth of the allocations of an OPA-Envoy check (BENCHMARKS.md); here a
// short frame is searched linearly by hash, and a frame that grows past
// indexAfter entries gets a hash index, so a policy that caches thousands
// of values (a function called in a loop) stays linear.
//
// The semantics are topdown's (topdown.VirtualCache): Get and Put see the
// top frame only; Put of nil marks the reference undefined; a reference is
// stored as a copy of its terms (topdown reuses the slice it passes).
type virtualCache struct {
	frames  []vcFrame
	entries []vcEntry
	terms   []*ast.Term // the stored references' terms
}

type vcFrame struct {
	start int           // first entry of the frame
	index map[int][]int // ref hash → entries; nil until the frame is large
}

type vcEntry struct {
	hash      int
	ref       ast.Ref
	value     *ast.Term
	undefined bool
}

const (
	// indexAfter is the size of a frame past which it is indexed.
	indexAfter = 16
	// keepUpTo bounds the entries of a cache put back for reuse: a larger
	// one (an unusual policy) is left to the collector.
	keepUpTo = 1024
)

var virtualCaches = sync.Pool{New: func() any { return newVirtualCache() }}

func newVirtualCache() *virtualCache {
	c := &virtualCache{}
	c.Push()
	return c
}

// getVirtualCache is an empty cache for one evaluation; putVirtualCache
// takes it back once the evaluation has returned.
func getVirtualCache() *virtualCache { return virtualCaches.Get().(*virtualCache) }

func putVirtualCache(c *virtualCache) {
	if len(c.entries) > keepUpTo || len(c.frames) > 64 {
		return
	}
	clear(c.entries)
	clear(c.terms)
	c.entries, c.terms = c.entries[:0], c.terms[:0]
	clear(c.frames)
	c.frames = c.frames[:0]
	c.Push()
	virtualCaches.Put(c)
}

func (c *virtualCache) Push() { c.frames = append(c.frames, vcFrame{start: len(c.entries)}) }

func (c *virtualCache) Pop() {
	if len(c.frames) == 0 {
		return
	}
	f := c.frames[len(c.frames)-1]
	clear(c.entries[f.start:])
	c.entries = c.entries[:f.start]
	c.frames[len(c.frames)-1] = vcFrame{}
	c.frames = c.frames[:len(c.frames)-1]
}

// find is the entry of ref in the top frame, -1 if none.
func (c *virtualCache) find(ref ast.Ref, h int) int {
	if len(c.frames) == 0 {
		return -1
	}
	f := &c.frames[len(c.frames)-1]
	if f.index != nil {
		for _, i := range f.index[h] {
			if c.entries[i].ref.Equal(ref) {
				return i
			}
		}
		return -1
	}
	for i := f.start; i < len(c.entries); i++ {
		if e := &c.entries[i]; e.hash == h && e.ref.Equal(ref) {
			return i
		}
	}
	return -1
}

func (c *virtualCache) Get(ref ast.Ref) (*ast.Term, bool) {
	i := c.find(ref, ref.Hash())
	if i < 0 {
		return nil, false
	}
	if e := &c.entries[i]; e.undefined {
		return nil, true
	}
	return c.entries[i].value, false
}

func (c *virtualCache) Put(ref ast.Ref, value *ast.Term) {
	if len(c.frames) == 0 {
		c.Push()
	}
	h := ref.Hash()
	i := c.find(ref, h)
	if i < 0 {
		n := len(c.terms)
		c.terms = append(c.terms, ref...)
		c.entries = append(c.entries, vcEntry{hash: h, ref: ast.Ref(c.terms[n:len(c.terms):len(c.terms)])})
		i = len(c.entries) - 1
		f := &c.frames[len(c.frames)-1]
		switch {
		case f.index != nil:
			f.index[h] = append(f.index[h], i)
		case i-f.start >= indexAfter:
			f.index = make(map[int][]int, 2*indexAfter)
			for j := f.start; j <= i; j++ {
				f.index[c.entries[j].hash] = append(f.index[c.entries[j].hash], j)
			}
		}
	}
	// As topdown's: a value after undefined leaves the reference
	// undefined (the evaluation does not do that).
	if value != nil {
		c.entries[i].value = value
	} else {
		c.entries[i].undefined = true
	}
}

// Keys are the references with a value in the top frame.
func (c *virtualCache) Keys() []ast.Ref {
	if len(c.frames) == 0 {
		return nil
	}
	var keys []ast.Ref
	for _, e := range c.entries[c.frames[len(c.frames)-1].start:] {
		if e.value != nil {
			keys = append(keys, e.ref.Copy())
		}
	}
	return keys
}

var _ topdown.VirtualCache = (*virtualCache)(nil)
