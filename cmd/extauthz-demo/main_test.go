package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestFlags: help and flag errors (the demo itself is tested in internal/demo).
func TestFlags(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"--help"}, &out, &errOut); code != 0 ||
		!strings.Contains(out.String(), "Usage: extauthz-demo") || !strings.Contains(out.String(), "-listen") {
		t.Errorf("--help: %d\n%s%s", code, out.String(), errOut.String())
	}
	out.Reset()
	errOut.Reset()
	if code := run(context.Background(), []string{"--no-such-flag"}, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), "no-such-flag") {
		t.Errorf("bad flag: %d\n%s%s", code, out.String(), errOut.String())
	}
}
