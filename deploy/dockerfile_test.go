package deploy_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestDockerfile pins the image recipe: pinned Go builder, static trimmed
// build of ./cmd/extauthz, distroless nonroot runtime, ports and entrypoint.
func TestDockerfile(t *testing.T) {
	data, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	src := string(data)
	for _, re := range []string{
		`(?m)^FROM golang:1\.26-bookworm AS build$`,
		`CGO_ENABLED=0 go build -trimpath -ldflags=-s -o /extauthz \./cmd/extauthz`,
		`(?m)^FROM gcr\.io/distroless/static-debian12:nonroot$`,
		`(?m)^COPY --from=build /extauthz /extauthz$`,
		`(?m)^USER nonroot:nonroot$`,
		`(?m)^EXPOSE 9001 9002$`,
		`(?m)^ENTRYPOINT \["/extauthz"\]$`,
		`(?m)^CMD \["--grpc-addr=0\.0\.0\.0:9001", "--admin-addr=0\.0\.0\.0:9002"\]$`,
	} {
		if !regexp.MustCompile(re).MatchString(src) {
			t.Errorf("Dockerfile does not match %s", re)
		}
	}
	// The last stage is the runtime image.
	froms := regexp.MustCompile(`(?m)^FROM (\S+)`).FindAllStringSubmatch(src, -1)
	if len(froms) != 2 || froms[1][1] != "gcr.io/distroless/static-debian12:nonroot" {
		t.Errorf("stages = %v, want builder + distroless nonroot", froms)
	}
	// The build context is the repository root.
	if _, err := os.Stat(filepath.Join("..", "cmd", "extauthz")); err != nil {
		t.Errorf("build target ./cmd/extauthz: %v", err)
	}
}

// TestE2EScriptSkipsWithoutDocker runs scripts/e2e-docker.sh with a docker
// command that fails (as without an engine): it must skip with exit 0.
func TestE2EScriptSkipsWithoutDocker(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	script, err := filepath.Abs(filepath.Join("..", "scripts", "e2e-docker.sh"))
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bash, "-n", script).CombinedOutput(); err != nil {
		t.Fatalf("bash -n: %v\n%s", err, out)
	}
	bin := t.TempDir()
	fake := "#!/bin/sh\necho 'Cannot connect to the Docker daemon' >&2\nexit 1\n"
	if err := os.WriteFile(filepath.Join(bin, "docker"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bash, script)
	cmd.Env = append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("exit: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "e2e-docker: skipped: no Docker engine available") {
		t.Errorf("output = %q", out)
	}
}
