// Package policies embeds the default Rego rulebook, its Rego tests and the
// demo data, so the binary runs with no files at all.
package policies

import "embed"

// FS holds *.rego (rules and _test.rego tests) and data.json.
//
//go:embed *.rego data.json
var FS embed.FS
