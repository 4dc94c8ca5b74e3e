// Package fileid tells two versions of a file apart when their size and
// modification time agree: a file replaced by one of the same length with
// its time kept (cp -p, rsync -t, tar x, then a rename) has another inode,
// and one rewritten in place another change time, neither of which a writer
// can set.
package fileid

import "os"

// Of is what identifies st's version beyond its size and modification
// time: the inode and the change time (nanoseconds) where the system has
// them, "" elsewhere.
func Of(st os.FileInfo) string {
	if st == nil {
		return ""
	}
	return of(st)
}
