package envoybin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Process is a running Envoy.
type Process struct {
	// Listeners maps each listener's name to its bound host:port.
	Listeners map[string]string
	Admin     string // admin API host:port

	cmd  *exec.Cmd
	dir  string
	logs *LogBuffer
	done chan struct{}
	err  error
	once sync.Once
}

// RunOptions tune Run.
type RunOptions struct {
	LogLevel string    // Envoy's -l; default "warning"
	Output   io.Writer // also receives Envoy's stdout and stderr (nil: only kept in Logs)
	Wait     time.Duration
}

// Run writes b to a temporary directory and starts Envoy on it: one worker
// thread, no hot restart, a dynamic base id (instances never collide). It
// returns once the server is LIVE and every listener is bound; Close stops it.
func Run(bin string, b Bootstrap, opts RunOptions) (*Process, error) {
	dir, err := os.MkdirTemp("", "extauthz-envoy-")
	if err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "envoy.json")
	data, err := json.MarshalIndent(b, "", " ")
	if err == nil {
		err = os.WriteFile(cfg, data, 0o600)
	}
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	if opts.LogLevel == "" {
		opts.LogLevel = "warning"
	}
	if opts.Wait == 0 {
		opts.Wait = 60 * time.Second
	}
	adminPath := filepath.Join(dir, "admin-address")
	p := &Process{dir: dir, logs: &LogBuffer{}, done: make(chan struct{})}
	var out io.Writer = p.logs
	if opts.Output != nil {
		out = io.MultiWriter(p.logs, opts.Output)
	}
	p.cmd = exec.Command(bin, "-c", cfg,
		"--admin-address-path", adminPath,
		"--disable-hot-restart", "--use-dynamic-base-id",
		"--concurrency", "1", "-l", opts.LogLevel)
	p.cmd.Stdout, p.cmd.Stderr = out, out
	// Envoy must not outlive a test binary or demo killed hard.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	if err := p.waitLive(adminPath, opts.Wait); err != nil {
		p.Close()
		return nil, fmt.Errorf("envoy did not start: %w\n%s", err, Tail(p.logs.String(), 4000))
	}
	return p, nil
}

// Close stops Envoy: SIGTERM, then SIGKILL after 5s.
func (p *Process) Close() {
	p.once.Do(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		os.RemoveAll(p.dir)
	})
}

// Pid is the Envoy process's id.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process exits.
func (p *Process) Done() <-chan struct{} { return p.done }

// Logs is what Envoy wrote (access log and its own log), bounded.
func (p *Process) Logs() string { return p.logs.String() }

// Tail keeps the last n bytes of s.
func Tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}

func (p *Process) waitLive(adminPath string, limit time.Duration) error {
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(limit)
	for ; time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		select {
		case <-p.done:
			return fmt.Errorf("exited: %v", p.err)
		default:
		}
		if p.Admin == "" {
			b, err := os.ReadFile(adminPath)
			if err != nil || len(bytes.TrimSpace(b)) == 0 {
				continue
			}
			p.Admin = strings.TrimSpace(string(b))
		}
		if code, _, err := get(client, "http://"+p.Admin+"/ready"); err != nil || code != http.StatusOK {
			continue
		}
		code, body, err := get(client, "http://"+p.Admin+"/listeners?format=json")
		if err != nil || code != http.StatusOK {
			continue
		}
		var ls struct {
			ListenerStatuses []struct {
				Name         string `json:"name"`
				LocalAddress struct {
					SocketAddress struct {
						Address   string `json:"address"`
						PortValue int    `json:"port_value"`
					} `json:"socket_address"`
				} `json:"local_address"`
			} `json:"listener_statuses"`
		}
		if err := json.Unmarshal(body, &ls); err != nil {
			return fmt.Errorf("admin /listeners: %w", err)
		}
		m := map[string]string{}
		for _, l := range ls.ListenerStatuses {
			sa := l.LocalAddress.SocketAddress
			if sa.PortValue == 0 {
				m = nil
				break
			}
			m[l.Name] = fmt.Sprintf("%s:%d", sa.Address, sa.PortValue)
		}
		if len(m) > 0 {
			p.Listeners = m
			return nil
		}
	}
	return fmt.Errorf("not live after %v", limit)
}

func get(c *http.Client, u string) (int, []byte, error) {
	resp, err := c.Get(u)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// Stat returns one admin counter or gauge (0 when absent).
func (p *Process) Stat(name string) (int, error) {
	code, body, err := get(&http.Client{Timeout: 5 * time.Second},
		"http://"+p.Admin+"/stats?format=json&filter="+url.QueryEscape("^"+regexp.QuoteMeta(name)+"$"))
	if err != nil {
		return 0, err
	}
	if code != http.StatusOK {
		return 0, fmt.Errorf("admin /stats: %d", code)
	}
	var s struct {
		Stats []struct {
			Name  string `json:"name"`
			Value int    `json:"value"`
		} `json:"stats"`
	}
	if err := json.Unmarshal(body, &s); err != nil {
		return 0, fmt.Errorf("admin /stats: %w", err)
	}
	for _, st := range s.Stats {
		if st.Name == name {
			return st.Value, nil
		}
	}
	return 0, nil
}

// LogBuffer is a goroutine-safe buffer that keeps at most the last 4 MiB
// (an access log grows by a line per request).
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf.Len() > 4<<20 {
		b.buf.Reset()
	}
	return b.buf.Write(p)
}

func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
