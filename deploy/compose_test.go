package deploy_test

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"testing"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/extauthz/extauthz/internal/envoyconfig"
)

// pinnedEnvoy matches a released Envoy image: no :latest, :dev or digest-less
// moving tag.
var pinnedEnvoy = regexp.MustCompile(`^envoyproxy/envoy:v\d+\.\d+\.\d+$`)

func loadCompose(t *testing.T) *types.Project {
	t.Helper()
	wd, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	p, err := loader.LoadWithContext(context.Background(), types.ConfigDetails{
		WorkingDir:  wd,
		ConfigFiles: []types.ConfigFile{{Filename: filepath.Join(wd, "docker-compose.yml")}},
		Environment: types.Mapping{}, // no host environment: the file must not need any
	}, func(o *loader.Options) {
		o.SetProjectName("extauthz", true)
		o.ResolvePaths = true
	})
	if err != nil {
		t.Fatalf("compose-go: %v", err)
	}
	return p
}

// TestCompose: the three services, a pinned Envoy release on port 8000 with
// the repo's envoy/envoy.yaml mounted read-only (and that file valid), the
// sidecar built from the repo with deploy/Dockerfile and not published,
// pinned upstream image, and the XFF hop count agreeing with Envoy's.
func TestCompose(t *testing.T) {
	p := loadCompose(t)
	names := slices.Sorted(maps.Keys(p.Services))
	if !slices.Equal(names, []string{"envoy", "extauthz", "upstream"}) {
		t.Fatalf("services = %v, want envoy, extauthz, upstream", names)
	}
	envoy, authz, upstream := p.Services["envoy"], p.Services["extauthz"], p.Services["upstream"]

	if !pinnedEnvoy.MatchString(envoy.Image) {
		t.Errorf("envoy image %q is not a pinned release tag (envoyproxy/envoy:vX.Y.Z)", envoy.Image)
	}
	if len(envoy.Ports) != 1 || envoy.Ports[0].Target != 8000 || envoy.Ports[0].Published != "8000" {
		t.Errorf("envoy ports = %+v, want 8000:8000", envoy.Ports)
	}
	var envoyYAML string
	for _, v := range envoy.Volumes {
		if v.Target == "/etc/envoy/envoy.yaml" {
			envoyYAML = v.Source
			if !v.ReadOnly {
				t.Error("envoy.yaml mount is not read-only")
			}
		}
	}
	want, _ := filepath.Abs(filepath.Join("..", "envoy", "envoy.yaml"))
	if envoyYAML != want {
		t.Fatalf("envoy config mount source = %q, want %q", envoyYAML, want)
	}
	if _, err := os.Stat(envoyYAML); err != nil {
		t.Fatalf("mounted envoy config: %v", err)
	}
	if _, err := envoyconfig.ValidateFileStrict(envoyYAML); err != nil {
		t.Errorf("mounted envoy config:\n%v", err)
	}
	for _, dep := range []string{"extauthz", "upstream"} {
		if d, ok := envoy.DependsOn[dep]; !ok || d.Condition != types.ServiceConditionStarted {
			t.Errorf("envoy.depends_on[%s] = %+v, want service_started", dep, d)
		}
	}

	root, _ := filepath.Abs("..")
	if authz.Build == nil || authz.Build.Context != root {
		t.Fatalf("extauthz build = %+v, want context %s", authz.Build, root)
	}
	if authz.Build.Dockerfile != "deploy/Dockerfile" {
		t.Errorf("extauthz dockerfile = %q", authz.Build.Dockerfile)
	}
	if _, err := os.Stat(filepath.Join(root, authz.Build.Dockerfile)); err != nil {
		t.Error(err)
	}
	if len(authz.Ports) != 0 || len(upstream.Ports) != 0 {
		t.Errorf("only Envoy may publish ports; extauthz=%v upstream=%v", authz.Ports, upstream.Ports)
	}
	hops := authz.Environment["EXTAUTHZ_XFF_TRUSTED_HOPS"]
	if hops == nil || *hops != strconv.Itoa(int(xffHops(t, envoyYAML))) {
		t.Errorf("EXTAUTHZ_XFF_TRUSTED_HOPS = %v, want Envoy's xff_num_trusted_hops %d", hops, xffHops(t, envoyYAML))
	}

	if upstream.Image == "" || !regexp.MustCompile(`:[^:/]+$`).MatchString(upstream.Image) || regexp.MustCompile(`:(latest|dev)$`).MatchString(upstream.Image) {
		t.Errorf("upstream image %q is not pinned", upstream.Image)
	}
	if port := upstream.Environment["PORT"]; port == nil || *port != "8080" {
		t.Errorf("upstream PORT = %v, want 8080 (Envoy's upstream cluster port)", port)
	}
}

// xffHops returns xff_num_trusted_hops of the (single) HCM in an Envoy file.
func xffHops(t *testing.T, path string) uint32 {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := envoyconfig.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	hcm := &hcmv3.HttpConnectionManager{}
	tc := b.GetStaticResources().GetListeners()[0].GetFilterChains()[0].GetFilters()[0].GetTypedConfig()
	if err := tc.UnmarshalTo(hcm); err != nil {
		t.Fatal(err)
	}
	return hcm.GetXffNumTrustedHops()
}
