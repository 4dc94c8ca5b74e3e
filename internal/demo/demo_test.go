package demo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/envoytest"
	"github.com/extauthz/extauthz/internal/testutil"
)

// The embedded fallback must be the shipped file, byte for byte.
func TestEmbeddedEnvoyYAMLInSync(t *testing.T) {
	shipped, err := os.ReadFile("../../envoy/envoy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(shipped, envoyYAML) {
		t.Fatal("internal/demo/envoy.yaml differs from envoy/envoy.yaml; run: cp envoy/envoy.yaml internal/demo/envoy.yaml")
	}
}

// TestRunFromRepoRoot: envoy/envoy.yaml and testdata/demo.jwt are found,
// so the JWT command is printed with the token.
func TestRunFromRepoRoot(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	t.Chdir(root)
	out := runDemo(t, func(out string) {
		if !strings.Contains(out, filepath.Join(root, "envoy", "envoy.yaml")) {
			t.Errorf("config source not reported:\n%s", out)
		}
		if !strings.Contains(out, "bearer JWT from testdata/demo.jwt: allow") {
			t.Errorf("no JWT command:\n%s", out)
		}
	})
	_ = out
}

// TestRunAnywhere: outside the repository the built-in config is used and
// the JWT command is explained instead of printed.
func TestRunAnywhere(t *testing.T) {
	t.Chdir(t.TempDir())
	runDemo(t, func(out string) {
		if !strings.Contains(out, "built-in copy of envoy/envoy.yaml") || !strings.Contains(out, "Envoy "+envoytest.Version) {
			t.Errorf("config source not reported:\n%s", out)
		}
		if !strings.Contains(out, "$(cat testdata/demo.jwt)") {
			t.Errorf("no hint for the JWT:\n%s", out)
		}
	})
}

// TestRunWithoutEnvoy: no binary anywhere is an error that says how to get one.
func TestRunWithoutEnvoy(t *testing.T) {
	t.Chdir(t.TempDir())
	t.Setenv("PATH", t.TempDir())
	err := Run(context.Background(), io.Discard, Options{ListenAddr: testutil.FreeAddr(t), Getenv: func(string) string { return "" }})
	var ne *NoEnvoyError
	if !errors.As(err, &ne) || !strings.Contains(err.Error(), "make envoy") || !strings.Contains(err.Error(), "ENVOY_BIN") {
		t.Errorf("err = %v", err)
	}
}

// runDemo starts Run on a free loopback port, executes every printed curl
// command with net/http, checks the statuses, cancels and expects a clean
// return within 2s.
func runDemo(t *testing.T, checkOutput func(string)) string {
	t.Helper()
	envoytest.Require(t)
	addr := testutil.FreeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := &testutil.SyncBuffer{}
	done := make(chan error, 1)
	// The shipped 250ms Check deadline and the 100ms evaluation budget can
	// be exceeded under -race on a loaded machine; this test is about the
	// wiring and the printed commands, not the deadlines.
	go func() { done <- Run(ctx, out, Options{ListenAddr: addr, slack: 10 * time.Second}) }()

	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(out.String(), "Press Ctrl-C to stop.") {
		select {
		case err := <-done:
			t.Fatalf("Run returned early: %v\n%s", err, out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("demo not ready after 30s:\n%s", out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	printed := out.String()
	checkOutput(printed)

	cmds := parseCommands(t, printed)
	if len(cmds) < 13 {
		t.Fatalf("only %d commands printed:\n%s", len(cmds), printed)
	}
	hosts := map[string][2]bool{} // host -> seen allow, seen deny
	client := &http.Client{Timeout: 10 * time.Second}
	for _, c := range cmds {
		if !strings.HasPrefix(c.url, "http://"+addr+"/") {
			t.Errorf("%s: URL %s is not on %s", c.line, c.url, addr)
			continue
		}
		req, err := http.NewRequest(c.method, c.url, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range c.headers {
			if strings.EqualFold(h[0], "Host") {
				req.Host = h[1]
				continue
			}
			req.Header.Add(h[0], h[1])
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", c.line, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.expect {
			t.Errorf("%s\n  got %d, printed expectation %d: %s", c.line, resp.StatusCode, c.expect, body)
		}
		seen := hosts[req.Host]
		switch {
		case c.expect == http.StatusOK:
			seen[0] = true
		case c.expect >= 400 && c.expect < 500:
			seen[1] = true
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("%s: deny content-type %q", c.line, ct)
			}
		default:
			t.Errorf("%s: expectation %d is neither allow (200) nor deny (4xx)", c.line, c.expect)
		}
		hosts[req.Host] = seen
	}
	for _, h := range []string{"aidial.localhost", "dialektai.localhost", "aidelly.localhost", "lowercase.localhost", "aisafe.localhost"} {
		if s := hosts[h]; !s[0] || !s[1] {
			t.Errorf("%s: allow printed %v, deny printed %v", h, s[0], s[1])
		}
	}
	client.CloseIdleConnections()

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run returned %v after cancel", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Run did not return within 2s of cancel")
	}
	// The listener is gone.
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Errorf("%s still accepts connections after Run returned", addr)
	}
	return out.String()
}

type curlCmd struct {
	line    string
	method  string
	url     string
	headers [][2]string
	expect  int
}

var expectRE = regexp.MustCompile(`\(expect (\d{3})\)$`)

// parseCommands reads the printed "# label (expect NNN)" + "curl ..." pairs.
func parseCommands(t *testing.T, out string) []curlCmd {
	t.Helper()
	var cmds []curlCmd
	expect := 0
	for line := range strings.Lines(out) {
		line = strings.TrimRight(line, "\n")
		if m := expectRE.FindStringSubmatch(line); m != nil && strings.HasPrefix(line, "# ") {
			expect, _ = strconv.Atoi(m[1])
			continue
		}
		if !strings.HasPrefix(line, "curl ") {
			continue
		}
		args, err := shellSplit(line)
		if err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		c := curlCmd{line: line, method: http.MethodGet, expect: expect}
		for i := 1; i < len(args); i++ {
			switch a := args[i]; {
			case a == "-s" || a == "-i":
			case a == "-X" && i+1 < len(args):
				i++
				c.method = args[i]
			case a == "-H" && i+1 < len(args):
				i++
				name, value, ok := strings.Cut(args[i], ":")
				if !ok {
					t.Fatalf("%s: bad header %q", line, args[i])
				}
				c.headers = append(c.headers, [2]string{name, strings.TrimSpace(value)})
			case !strings.HasPrefix(a, "-") && c.url == "":
				c.url = a
			default:
				t.Fatalf("%s: unexpected argument %q", line, a)
			}
		}
		if expect == 0 {
			t.Fatalf("%s: no (expect NNN) comment before it", line)
		}
		cmds = append(cmds, c)
		expect = 0
	}
	return cmds
}

// shellSplit splits a command line with single-quoted words (as printed).
func shellSplit(s string) ([]string, error) {
	var args []string
	var cur strings.Builder
	inWord, inQuote := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case inQuote && c == '\'':
			inQuote = false
		case inQuote:
			cur.WriteByte(c)
		case c == '\'':
			inQuote, inWord = true, true
		case c == '\\' && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
			inWord = true
		case c == ' ':
			if inWord {
				args = append(args, cur.String())
				cur.Reset()
				inWord = false
			}
		case c == '"' || c == '$' || c == '`':
			return nil, fmt.Errorf("unsupported shell syntax %q", c)
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if inQuote {
		return nil, fmt.Errorf("unterminated quote")
	}
	if inWord {
		args = append(args, cur.String())
	}
	return args, nil
}
