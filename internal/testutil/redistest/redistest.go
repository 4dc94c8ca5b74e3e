// Package redistest runs a throw-away redis-server on loopback for tests
// that need a real one. Without redis-server in PATH the test is skipped,
// saying so, or fails when EXTAUTHZ_REQUIRE_REDIS=1 (as CI sets).
package redistest

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// RequireEnv, set to 1, turns the skip into a failure.
const RequireEnv = "EXTAUTHZ_REQUIRE_REDIS"

// Missing is what to say when redis-server is not installed (pkg names the
// package), and whether the test must fail rather than skip.
func Missing(pkg string) (notice string, fail bool) {
	if os.Getenv(RequireEnv) == "1" {
		return "!!! " + pkg + ": redis-server not found in PATH and " + RequireEnv + "=1: the Redis tests FAIL (apt-get install -y redis-server)", true
	}
	return "!!! " + pkg + ": redis-server not found in PATH: the Redis tests are SKIPPED (apt-get install -y redis-server; " + RequireEnv + "=1 makes this a failure)", false
}

// Installed reports whether redis-server is in PATH.
func Installed() bool {
	_, err := exec.LookPath("redis-server")
	return err == nil
}

// Server is a private redis-server on a free loopback port.
type Server struct {
	tb   testing.TB
	bin  string
	dir  string
	port int
	cmd  *exec.Cmd
	exit chan struct{}
}

// Start starts a server, stopped when the test ends; or skips (fails) the
// test when redis-server is not installed.
func Start(tb testing.TB, pkg string) *Server {
	tb.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		notice, fail := Missing(pkg)
		if fail {
			tb.Fatal(notice)
		}
		tb.Skip(notice)
	}
	s := &Server{tb: tb, bin: bin, dir: tb.TempDir()}
	tb.Cleanup(s.Kill)
	for range 5 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatal(err)
		}
		s.port = ln.Addr().(*net.TCPAddr).Port
		_ = ln.Close()
		if err = s.Restart(); err == nil {
			return s
		}
		tb.Logf("redis-server on port %d: %v", s.port, err)
	}
	tb.Fatal("could not start redis-server")
	return nil
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return fmt.Sprintf("127.0.0.1:%d", s.port) }

// Restart starts the (killed) server again on its port and waits, at most
// 5s, for PONG.
func (s *Server) Restart() error {
	s.cmd = exec.Command(s.bin, "--port", fmt.Sprint(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", s.dir, "--daemonize", "no", "--loglevel", "warning")
	if err := s.cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func(c *exec.Cmd) { _ = c.Wait(); close(exited) }(s.cmd)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			s.cmd = nil
			return errors.New("redis-server exited")
		default:
		}
		if ping(s.Addr()) {
			s.exit = exited
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = s.cmd.Process.Kill()
	<-exited
	s.cmd = nil
	return errors.New("redis-server did not answer PING within 5s")
}

// Kill stops the server (SIGKILL) and waits for it to exit.
func (s *Server) Kill() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.exit
	s.cmd = nil
}

func ping(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return false
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return err == nil && strings.HasPrefix(line, "+PONG")
}
