package loadtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/extauthz/extauthz/internal/config"
)

// ModuleRoot finds the directory holding go.mod, walking up from the
// working directory.
func ModuleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// Build compiles ./cmd/extauthz and ./cmd/extauthz-noop of the module at
// moduleDir into outDir and returns the two binaries' paths.
func Build(ctx context.Context, moduleDir, outDir string) (extauthz, noop string, err error) {
	extauthz = filepath.Join(outDir, "extauthz")
	noop = filepath.Join(outDir, "extauthz-noop")
	for _, b := range []struct{ out, pkg string }{{extauthz, "./cmd/extauthz"}, {noop, "./cmd/extauthz-noop"}} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", b.out, b.pkg)
		cmd.Dir = moduleDir
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", "", fmt.Errorf("go build %s: %w\n%s", b.pkg, err, out)
		}
	}
	return extauthz, noop, nil
}

// Child is a server process under test.
type Child struct {
	Name     string
	GRPCAddr string
	// AdminAddr is extauthz's admin listener (/readyz), "" for others.
	AdminAddr string
	// Ready is how long the process took from start to serving.
	Ready time.Duration
	// FailClosedAfter is the server's own deadline for a check, past which
	// it denies (internal_error) rather than answers late: for extauthz
	// the earlier of its --eval-timeout and --check-timeout; 0 for a
	// server without one (the no-op server, the OPA-Envoy plugin).
	FailClosedAfter time.Duration

	cmd    *exec.Cmd
	stderr *tailBuffer
	done   chan struct{} // closed when the process has exited
	err    error         // Wait's result, valid after done
	once   sync.Once
}

// Pid is the process id.
func (c *Child) Pid() int { return c.cmd.Process.Pid }

// Exited reports whether the process has ended.
func (c *Child) Exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// Signal sends sig to the process.
func (c *Child) Signal(sig os.Signal) error { return c.cmd.Process.Signal(sig) }

// Stderr is the last few KiB the process wrote to stderr.
func (c *Child) Stderr() string { return c.stderr.String() }

// Stop kills the process (SIGTERM, then SIGKILL after 2s) and waits for it.
// It is safe to call more than once and on a process that already exited.
func (c *Child) Stop() {
	c.once.Do(func() {
		if c.Exited() {
			return
		}
		_ = c.cmd.Process.Signal(os.Interrupt)
		select {
		case <-c.done:
		case <-time.After(2 * time.Second):
			_ = c.cmd.Process.Kill()
			<-c.done
		}
	})
}

func start(ctx context.Context, name, bin string, args []string, stdout io.Writer) (*Child, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Cancel = func() error { return cmd.Process.Kill() }
	cmd.WaitDelay = 2 * time.Second
	setDeathSignal(cmd)
	c := &Child{Name: name, cmd: cmd, stderr: &tailBuffer{max: 16 << 10}, done: make(chan struct{})}
	cmd.Stderr = c.stderr
	cmd.Stdout = stdout
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: start: %w", name, err)
	}
	go func() { c.err = cmd.Wait(); close(c.done) }()
	return c, nil
}

// StartExtauthz starts extauthz on two free loopback ports and waits until
// /readyz answers 200 (or timeout). policyDir may be empty (embedded demo
// policy); extra flags are appended (e.g. "--decision-log", "none"). The
// child inherits the environment, so EXTAUTHZ_* variables apply. It retries on another pair of ports if the process exits early
// (a port taken between choosing and binding).
func StartExtauthz(ctx context.Context, bin, policyDir string, timeout time.Duration, extra ...string) (*Child, error) {
	var lastErr error
	for range 3 {
		ports, err := freePorts(2)
		if err != nil {
			return nil, err
		}
		grpcAddr := fmt.Sprintf("127.0.0.1:%d", ports[0])
		adminAddr := fmt.Sprintf("127.0.0.1:%d", ports[1])
		args := []string{"--grpc-addr", grpcAddr, "--admin-addr", adminAddr}
		if policyDir != "" {
			args = append(args, "--policy-dir", policyDir)
		}
		args = append(args, extra...)
		t0 := time.Now()
		c, err := start(ctx, "extauthz", bin, args, io.Discard)
		if err != nil {
			return nil, err
		}
		c.GRPCAddr, c.AdminAddr = grpcAddr, adminAddr
		c.FailClosedAfter = extauthzDeadline(args)
		err = waitReady(ctx, c, "http://"+adminAddr+"/readyz", timeout)
		if err == nil {
			c.Ready = time.Since(t0)
			return c, nil
		}
		c.Stop()
		lastErr = err
		if !c.Exited() || !strings.Contains(c.Stderr(), "address already in use") {
			break
		}
	}
	return nil, lastErr
}

// extauthzDeadline is the earlier of the --eval-timeout and the
// --check-timeout extauthz runs with, given its flags and the environment
// it inherits (EXTAUTHZ_*): an evaluation past the first or a check past
// the second is denied internal_error.
func extauthzDeadline(args []string) time.Duration {
	// A configuration Load rejects (it is not the driver's to judge) still
	// yields the values it parsed; extauthz itself would refuse to start.
	c, _ := config.Load("extauthz", args, os.Getenv)
	return min(c.EvalTimeout, c.CheckTimeout)
}

func waitReady(ctx context.Context, c *Child, url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: time.Second}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := client.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-c.done:
			return fmt.Errorf("%s exited before ready (%v); stderr:\n%s", c.Name, c.err, c.Stderr())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s; stderr:\n%s", c.Name, timeout, c.Stderr())
		}
	}
}

// StartNoop starts the no-op server on a free loopback port and waits for
// its "listening <addr>" line; extra flags are appended (e.g. "--reply", "identity").
func StartNoop(ctx context.Context, bin string, timeout time.Duration, extra ...string) (*Child, error) {
	pr, pw := io.Pipe()
	t0 := time.Now()
	c, err := start(ctx, "no-op", bin, append([]string{"--grpc-addr", "127.0.0.1:0"}, extra...), pw)
	if err != nil {
		pw.Close()
		return nil, err
	}
	go func() { <-c.done; pw.Close() }()
	line := make(chan string, 1)
	go func() {
		br := bufio.NewReader(pr)
		l, _ := br.ReadString('\n')
		line <- strings.TrimSpace(l)
		_, _ = io.Copy(io.Discard, br) // keep draining stdout
	}()
	select {
	case l := <-line:
		addr, ok := strings.CutPrefix(l, "listening ")
		if !ok {
			c.Stop()
			return nil, fmt.Errorf("no-op: first stdout line %q, want \"listening <addr>\"; stderr:\n%s", l, c.Stderr())
		}
		c.GRPCAddr = addr
		c.Ready = time.Since(t0)
		return c, nil
	case <-time.After(timeout):
		c.Stop()
		return nil, fmt.Errorf("no-op: no listening line after %s; stderr:\n%s", timeout, c.Stderr())
	case <-ctx.Done():
		c.Stop()
		return nil, ctx.Err()
	}
}

// freePorts reserves n distinct loopback ports by binding them at once, then
// releases them for the child to bind.
func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	// Trim only when twice over, so a chatty child (a decision log line per
	// check) costs an amortised copy, not one per write.
	if len(t.b) > 2*t.max {
		t.b = append(t.b[:0], t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b[max(len(t.b)-t.max, 0):])
}
