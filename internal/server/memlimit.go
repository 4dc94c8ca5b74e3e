package server

import (
	"strconv"
	"strings"
)

// The files a container's memory limit is read from: cgroup v2, then v1.
var cgroupMemoryFiles = []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}

// softMemoryLimit is the soft memory limit for the Go runtime: 90% of the
// container's memory limit, unless GOMEMLIMIT is set (the runtime then
// uses it; GOMEMLIMIT=off sets none) or the container has no limit.
//
// Without one the runtime lets the heap grow to twice what is live before
// collecting, and what is live includes the API key store: a sidecar with
// a million keys (about 160 MiB idle) grew to 570 MiB after serving
// 200,000 of them once, past the limit its manifest gives, though at most
// about 290 MiB of it was live; with the limit the collector works harder
// as the heap nears it instead (375 MiB with a limit of 360 MiB).
func softMemoryLimit(getenv func(string) string, readFile func(string) ([]byte, error)) (limit int64, from string) {
	if getenv("GOMEMLIMIT") != "" {
		return 0, ""
	}
	for _, f := range cgroupMemoryFiles {
		b, err := readFile(f)
		if err != nil {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil || n <= 0 || n >= 1<<60 { // "max", or v1's "unlimited"
			return 0, ""
		}
		return n / 10 * 9, f
	}
	return 0, ""
}
