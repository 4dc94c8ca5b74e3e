package loadtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// ProcCPU is a process's CPU time so far, in clock ticks, from
// /proc/<pid>/stat (all threads, including exited ones).
type ProcCPU struct {
	UTime, STime uint64
}

// Ticks is user + system time.
func (c ProcCPU) Ticks() uint64 { return c.UTime + c.STime }

// ReadProcCPU reads /proc/<pid>/stat.
func ReadProcCPU(pid int) (ProcCPU, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ProcCPU{}, err
	}
	return ParseProcStat(b)
}

// ParseProcStat extracts utime and stime (fields 14 and 15) from the text of
// /proc/<pid>/stat. The command name (field 2) is in parentheses and may hold
// spaces and parentheses, so fields are counted from the last ')'.
func ParseProcStat(b []byte) (ProcCPU, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return ProcCPU{}, errors.New("proc stat: no ')' after the command name")
	}
	// After ")": field 3 (state) onwards.
	f := strings.Fields(string(b[i+1:]))
	const utimeIdx = 14 - 3
	if len(f) <= utimeIdx+1 {
		return ProcCPU{}, fmt.Errorf("proc stat: %d fields after the command name, want at least %d", len(f), utimeIdx+2)
	}
	u, err := strconv.ParseUint(f[utimeIdx], 10, 64)
	if err != nil {
		return ProcCPU{}, fmt.Errorf("proc stat: utime: %w", err)
	}
	s, err := strconv.ParseUint(f[utimeIdx+1], 10, 64)
	if err != nil {
		return ProcCPU{}, fmt.Errorf("proc stat: stime: %w", err)
	}
	return ProcCPU{UTime: u, STime: s}, nil
}

// ProcMem is a process's memory from /proc/<pid>/status, in bytes.
type ProcMem struct {
	RSS  int64 // VmRSS: resident now
	Peak int64 // VmHWM: peak resident ("high water mark")
}

// ReadProcMem reads /proc/<pid>/status.
func ReadProcMem(pid int) (ProcMem, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return ProcMem{}, err
	}
	return ParseProcStatus(b)
}

// ParseProcStatus extracts VmRSS and VmHWM (reported in kB) from the text of
// /proc/<pid>/status.
func ParseProcStatus(b []byte) (ProcMem, error) {
	var m ProcMem
	var seen int
	for line := range strings.SplitSeq(string(b), "\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		var dst *int64
		switch name {
		case "VmRSS":
			dst = &m.RSS
		case "VmHWM":
			dst = &m.Peak
		default:
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return ProcMem{}, fmt.Errorf("proc status: %s: unexpected %q", name, strings.TrimSpace(rest))
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return ProcMem{}, fmt.Errorf("proc status: %s: %w", name, err)
		}
		*dst = kb * 1024
		seen++
	}
	if seen != 2 {
		return ProcMem{}, errors.New("proc status: VmRSS or VmHWM missing (kernel thread or exited process?)")
	}
	return m, nil
}

// ClockTicks is the kernel's USER_HZ (clock ticks per second, the unit of
// /proc/<pid>/stat times), from `getconf CLK_TCK`. When getconf is missing
// or says something odd it returns 100 (the value on every mainstream Linux
// architecture) and assumed=true.
func ClockTicks() (hz int, assumed bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "getconf", "CLK_TCK").Output()
	if err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(out))); err == nil && n > 0 {
			return n, false
		}
	}
	return 100, true
}
