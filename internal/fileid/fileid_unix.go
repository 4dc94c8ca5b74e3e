//go:build linux

package fileid

import (
	"fmt"
	"os"
	"syscall"
)

func of(st os.FileInfo) string {
	s, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return ""
	}
	return fmt.Sprintf("%d:%d:%d.%d", s.Dev, s.Ino, s.Ctim.Sec, s.Ctim.Nsec)
}
