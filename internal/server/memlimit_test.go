package server

import (
	"errors"
	"io/fs"
	"testing"
)

// The soft memory limit is 90% of the container's, read from cgroup v2 or
// v1; none without a limit, and none when GOMEMLIMIT is set (the runtime
// honours it, "off" included).
func TestSoftMemoryLimit(t *testing.T) {
	files := func(m map[string]string) func(string) ([]byte, error) {
		return func(p string) ([]byte, error) {
			if v, ok := m[p]; ok {
				return []byte(v), nil
			}
			return nil, fs.ErrNotExist
		}
	}
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == "GOMEMLIMIT" {
				return v
			}
			return ""
		}
	}
	v2, v1 := cgroupMemoryFiles[0], cgroupMemoryFiles[1]
	for _, tc := range []struct {
		name  string
		env   string
		files map[string]string
		want  int64
	}{
		{"cgroup v2, 384Mi", "", map[string]string{v2: "402653184\n"}, 362387862},
		{"cgroup v2, no limit", "", map[string]string{v2: "max\n", v1: "402653184\n"}, 0},
		{"cgroup v1, 256Mi", "", map[string]string{v1: "268435456\n"}, 241591905},
		{"cgroup v1, unlimited", "", map[string]string{v1: "9223372036854771712\n"}, 0},
		{"no cgroup", "", nil, 0},
		{"GOMEMLIMIT set", "300MiB", map[string]string{v2: "402653184\n"}, 0},
		{"GOMEMLIMIT=off", "off", map[string]string{v2: "402653184\n"}, 0},
	} {
		got, from := softMemoryLimit(env(tc.env), files(tc.files))
		if got != tc.want || (got > 0) != (from != "") {
			t.Errorf("%s: %d from %q, want %d", tc.name, got, from, tc.want)
		}
	}
	if got, _ := softMemoryLimit(env(""), func(string) ([]byte, error) { return nil, errors.New("denied") }); got != 0 {
		t.Errorf("unreadable cgroup files: %d", got)
	}
}
