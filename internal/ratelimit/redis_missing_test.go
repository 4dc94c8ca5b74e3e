package ratelimit

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/extauthz/extauthz/internal/testutil/redistest"
)

// Without redis-server in PATH, this package's test binary prints one loud
// line even without -v, and with EXTAUTHZ_REQUIRE_REDIS=1 the Redis tests
// fail instead of skipping. The test re-runs its own binary with an empty
// PATH.
func TestRedisMissingIsLoud(t *testing.T) {
	if os.Getenv("EXTAUTHZ_REDIS_MISSING_CHILD") != "" {
		t.Skip("child run")
	}
	run := func(require string) (string, error) {
		cmd := exec.Command(os.Args[0], "-test.run=^TestRedisKeys$", "-test.count=1")
		cmd.Env = append(os.Environ(), "PATH=", "EXTAUTHZ_REDIS_MISSING_CHILD=1", redistest.RequireEnv+"="+require)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		return out.String(), err
	}
	out, err := run("")
	if err != nil || strings.Count(out, "redis-server not found") != 1 || !strings.Contains(out, "SKIPPED") {
		t.Errorf("without %s: err %v, output:\n%s", redistest.RequireEnv, err, out)
	}
	out, err = run("1")
	if err == nil || !strings.Contains(out, "FAIL") || !strings.Contains(out, "Redis tests FAIL") {
		t.Errorf("with %s=1: err %v, output:\n%s", redistest.RequireEnv, err, out)
	}
}
