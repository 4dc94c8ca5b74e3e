package main

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/extauthz/extauthz"

// notInProduct are the module's packages that exist for tests, benchmarks,
// load runs and the demo. They must never be linked into the product binary.
var notInProduct = []string{
	module + "/internal/demo",
	module + "/internal/e2e",
	module + "/internal/envoytest",
	module + "/internal/loadtest",
	module + "/internal/testutil",
}

// testOnlyImports mark a package as test tooling whatever its name: a
// package of this module that imports one of them is not product code.
var testOnlyImports = []string{
	"testing",
	"net/http/httptest",
	"github.com/google/go-cmp/",
	"google.golang.org/protobuf/testing/",
}

// TestProductBinaryHoldsTheProduct runs `go list -deps ./cmd/extauthz` and
// fails when the product binary links test, benchmark, load or demo
// tooling: a package listed in notInProduct, another command, or a package
// of this module importing a test-only package. (The standard library's
// testing package itself is linked, by OPA's Rego test runner behind
// `extauthz validate`; what matters is that none of our code imports it.)
func TestProductBinaryHoldsTheProduct(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command on PATH")
	}
	// The forbidden packages must exist, or a rename would make this test
	// pass vacuously.
	if out, err := exec.Command(goBin, append([]string{"list"}, notInProduct...)...).CombinedOutput(); err != nil {
		t.Fatalf("go list %s: %v\n%s\n(a package was renamed or removed: update notInProduct)", strings.Join(notInProduct, " "), err, out)
	}

	cmd := exec.Command(goBin, "list", "-deps", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, ".")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, stderr.Bytes())
	}
	linked := 0
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		pkg, imports := f[0], f[1:]
		if pkg != module && !strings.HasPrefix(pkg, module+"/") {
			continue
		}
		linked++
		for _, bad := range notInProduct {
			if pkg == bad {
				t.Errorf("cmd/extauthz links %s (test/dev tooling)", pkg)
			}
		}
		if strings.HasPrefix(pkg, module+"/cmd/") && pkg != module+"/cmd/extauthz" {
			t.Errorf("cmd/extauthz links another command, %s", pkg)
		}
		for _, imp := range imports {
			for _, bad := range testOnlyImports {
				if imp == bad || (strings.HasSuffix(bad, "/") && strings.HasPrefix(imp, bad)) {
					t.Errorf("cmd/extauthz links %s, which imports the test-only %s", pkg, imp)
				}
			}
		}
	}
	if linked < 10 {
		t.Fatalf("go list -deps saw only %d packages of %s; is the test running in cmd/extauthz?\n%s", linked, module, out)
	}
}
