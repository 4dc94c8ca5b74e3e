package check

import (
	"sync/atomic"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/extauthz/extauthz/internal/memo"
)

// rendered are the parts of a remembered decision's response that depend
// only on what its memo key holds (identity, route, tenant, output): built
// on first use, attached to the memo entry (memo.Entry.Derived) and shared
// by every response from it.
type rendered struct {
	ok atomic.Pointer[okParts]
	// The encoded dynamic metadata but decision_id (see encode.go): the
	// default fields, and the full set (Server.FullMetadata), kept apart
	// because servers with either setting may share an engine's memo.
	meta, metaFull atomic.Pointer[[]byte]
	deny           atomic.Pointer[denyParts]
}

func newRendered() any { return &rendered{} }

// renderedFor returns the rendered parts of e.
func renderedFor(e *memo.Entry) *rendered { return e.Derived(newRendered).(*rendered) }

// okParts are read-only once stored; responses share them.
type okParts struct {
	set    []*corev3.HeaderValueOption
	remove []string
	head   []byte // encoded status and ok_response (see encode.go)
}
