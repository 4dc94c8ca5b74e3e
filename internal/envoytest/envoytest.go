// Package envoytest runs the real Envoy binary in tests: it finds the binary
// (ENVOY_BIN, else the copy `make envoy` puts in .envoy/<Version>/ at the
// module root), rewrites a shipped bootstrap's addresses onto loopback and
// starts Envoy on it, one process per config, killed by t.Cleanup.
//
// It is test tooling: nothing under cmd/ imports it for serving.
//
// Where no binary is found, Require skips the test with one loud line;
// with EXTAUTHZ_REQUIRE_ENVOY=1 (CI) a missing binary fails the test.
package envoytest

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/extauthz/extauthz/internal/envoybin"
)

// Version is the pinned Envoy release (see envoybin.Version).
const Version = envoybin.Version

// RequireEnv names the variable that turns a missing binary into a failure.
const RequireEnv = "EXTAUTHZ_REQUIRE_ENVOY"

// ModuleRoot is the directory holding go.mod.
func ModuleRoot() (string, error) {
	if r := envoybin.ModuleRoot(); r != "" {
		return r, nil
	}
	return "", errors.New("no go.mod above the working directory")
}

// Binary returns the Envoy binary: $ENVOY_BIN when set (it must exist),
// else <module root>/.envoy/<Version>/envoy/_bin/envoy. $PATH is not
// searched: the tests pin a version.
func Binary() (string, error) { return envoybin.Find(os.Getenv, false) }

// Require returns the binary, or skips the test (fails it when
// EXTAUTHZ_REQUIRE_ENVOY=1) saying what is missing.
func Require(t testing.TB) string {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		if os.Getenv(RequireEnv) == "1" {
			t.Fatalf("REAL ENVOY REQUIRED (%s=1) BUT MISSING: %v", RequireEnv, err)
		}
		t.Skipf("!!! SKIPPED, NO REAL ENVOY: %v", err)
	}
	return bin
}

// Validate runs `envoy --mode validate` on the config file path.
func Validate(bin, path string) error { return envoybin.Validate(bin, path) }

// Bootstrap is envoybin.Bootstrap.
type Bootstrap = envoybin.Bootstrap

// LoadBootstrap reads a YAML (or JSON) bootstrap file.
func LoadBootstrap(path string) (Bootstrap, error) { return envoybin.LoadBootstrap(path) }

// Shipped loads a config shipped in the repository (path relative to the
// module root) and puts it on loopback: listeners on 127.0.0.1:0, each
// cluster at clusters[name]. Nothing else changes.
func Shipped(t testing.TB, path string, clusters map[string]string) Bootstrap {
	t.Helper()
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	b, err := LoadBootstrap(filepath.Join(root, path))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Loopback("127.0.0.1:0", clusters); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return b
}

// Envoy is a running Envoy, stopped when the test ends.
type Envoy struct{ *envoybin.Process }

// Start runs Envoy on b until the test ends; its output is logged when the
// test failed.
func Start(t testing.TB, bin string, b Bootstrap) *Envoy {
	t.Helper()
	p, err := envoybin.Run(bin, b, envoybin.RunOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.Close()
		if t.Failed() {
			t.Logf("envoy output:\n%s", envoybin.Tail(p.Logs(), 4000))
		}
	})
	return &Envoy{p}
}

// Addr is the bound address of the named listener.
func (e *Envoy) Addr(name string) string {
	if a, ok := e.Listeners[name]; ok {
		return a
	}
	panic(fmt.Sprintf("envoytest: no listener %q (have %v)", name, e.Listeners))
}

// Stat returns one admin counter (0 when absent).
func (e *Envoy) Stat(t testing.TB, name string) int {
	t.Helper()
	n, err := e.Process.Stat(name)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
