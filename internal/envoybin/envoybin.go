// Package envoybin locates an Envoy binary and runs `envoy --mode validate`
// with it. The CLI (extauthz validate), the demo (cmd/extauthz-demo) and the
// test tooling (internal/envoytest) share it.
package envoybin

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Version is the pinned Envoy release: the Makefile's ENVOY_VERSION, the
// docker compose and Kubernetes images (a test keeps them equal).
const Version = "1.40.0"

// LocalPath is where `make envoy` installs Version, relative to the module root.
var LocalPath = filepath.Join(".envoy", Version, "envoy", "_bin", "envoy")

// ErrNotFound is returned (wrapped) when no binary is found.
var ErrNotFound = errors.New("no Envoy binary")

// ModuleRoot walks up from the working directory to the directory holding
// go.mod ("" when there is none).
func ModuleRoot() string {
	dir, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return ""
		}
		dir = parent
	}
}

// Local returns the project-local binary `make envoy` installs, or an error
// naming where it was looked for.
func Local() (string, error) {
	root := ModuleRoot()
	if root == "" {
		return "", fmt.Errorf("%w: not inside the extauthz module (no go.mod above the working directory)", ErrNotFound)
	}
	p := filepath.Join(root, LocalPath)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%w at %s (run `make envoy`, or set ENVOY_BIN)", ErrNotFound, p)
	}
	return p, nil
}

// Find returns an Envoy binary: $ENVOY_BIN when set (it must exist), else
// the project-local copy, else (when path is true) `envoy` on $PATH.
func Find(getenv func(string) string, path bool) (string, error) {
	if p := getenv("ENVOY_BIN"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%w: ENVOY_BIN=%s: %v", ErrNotFound, p, err)
		}
		return p, nil
	}
	p, err := Local()
	if err == nil || !path {
		return p, err
	}
	if lp, lerr := exec.LookPath("envoy"); lerr == nil {
		return lp, nil
	}
	return "", fmt.Errorf("%w: ENVOY_BIN is unset, none on PATH, and %v", ErrNotFound, err)
}

// VersionOf returns the release a binary reports ("1.40.0"), or "".
func VersionOf(bin string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "--version").Output()
	if err != nil {
		return ""
	}
	// "... version: <sha>/1.40.0/Clean/RELEASE/BoringSSL"
	_, v, _ := strings.Cut(string(out), "version:")
	parts := strings.Split(strings.TrimSpace(v), "/")
	if len(parts) > 1 {
		return parts[1]
	}
	return ""
}

// Validate runs `envoy --mode validate -c file`; the error carries Envoy's
// own message.
func Validate(bin, file string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "--mode", "validate", "-c", file,
		"--disable-hot-restart", "--use-dynamic-base-id", "-l", "error").CombinedOutput()
	if err != nil {
		msg := strings.TrimSpace(string(out))
		if msg == "" {
			msg = err.Error()
		}
		return fmt.Errorf("envoy --mode validate: %s", msg)
	}
	return nil
}
