package route

import (
	"maps"
	"slices"
)

// IDs are the ids of the table's routes (not the default route), sorted.
func (t *Table) IDs() []string { return slices.Sorted(maps.Keys(t.byID)) }
