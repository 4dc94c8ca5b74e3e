package cli

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
)

// comparison counts verdicts of the same requests side by side (serving and
// candidate, or recorded and replayed) and prints where the last two
// columns differ: extauthz check --requests and --decision-log.
type comparison struct {
	w       io.Writer
	columns []string       // what each verdict is, e.g. "serving", "candidate"
	counts  map[string]int // verdicts joined by " -> "
	differ  int
	// Records that could not be compared: by why, and unreadable lines.
	skipped    map[string]int
	nSkipped   int
	unreadable int
}

func newComparison(w io.Writer, columns ...string) *comparison {
	return &comparison{w: w, columns: columns, counts: map[string]int{}, skipped: map[string]int{}}
}

// add counts one request's verdicts (one per column) and prints it, as
// "where: what: col1 v1, col2 v2", when the last two differ.
func (c *comparison) add(where, what string, verdicts ...string) {
	c.counts[strings.Join(verdicts, " -> ")]++
	n := len(verdicts)
	if verdicts[n-2] == verdicts[n-1] {
		return
	}
	c.differ++
	parts := make([]string, n)
	for i, v := range verdicts {
		parts[i] = c.columns[i] + " " + v
	}
	fmt.Fprintf(c.w, "%s: %s: %s\n", where, what, strings.Join(parts, ", "))
}

// skip counts a request that could not be compared, by why.
func (c *comparison) skip(where, why, detail string) {
	c.skipped[why]++
	c.nSkipped++
	if detail != "" {
		why += ": " + detail
	}
	fmt.Fprintf(c.w, "%s: not replayable: %s\n", where, why)
}

// bad counts a line that could not be read.
func (c *comparison) bad(where string, err error) {
	c.unreadable++
	fmt.Fprintf(c.w, "%s: unreadable: %v\n", where, err)
}

// finish prints the counts. Its error is the exit status: 2 when the last
// two columns differ anywhere, else 3 when something could not be
// compared, else none.
func (c *comparison) finish(unit string) error {
	fmt.Fprintf(c.w, "\n%s: %s\n", strings.Join(c.columns, " -> "), unit)
	for _, k := range slices.Sorted(maps.Keys(c.counts)) {
		fmt.Fprintf(c.w, "  %s: %d\n", k, c.counts[k])
	}
	if c.nSkipped > 0 {
		fmt.Fprintf(c.w, "not replayable: %d\n", c.nSkipped)
		for _, k := range slices.Sorted(maps.Keys(c.skipped)) {
			fmt.Fprintf(c.w, "  %s: %d\n", k, c.skipped[k])
		}
	}
	if c.unreadable > 0 {
		fmt.Fprintf(c.w, "unreadable: %d\n", c.unreadable)
	}
	switch {
	case c.differ > 0:
		return exitError(2)
	case c.nSkipped > 0 || c.unreadable > 0:
		return exitError(3)
	}
	return nil
}

// printable makes a value read from a file safe for a terminal line:
// printable ASCII, at most 200 bytes.
func printable(s string) string {
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return '?'
		}
		return r
	}, s)
}
