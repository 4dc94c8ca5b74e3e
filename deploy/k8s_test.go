package deploy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/extauthz/extauthz/internal/engine"
	"github.com/extauthz/extauthz/internal/envoyconfig"
	"github.com/extauthz/extauthz/internal/source"
)

// manifests decodes every document of deploy/k8s/*.yaml into k8s.io/api
// types. UnmarshalStrict rejects unknown (misspelt) fields.
type manifests struct {
	deployments []*appsv1.Deployment
	configMaps  map[string]*corev1.ConfigMap
	services    []*corev1.Service
}

func loadManifests(t *testing.T) manifests {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("k8s", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in deploy/k8s: %v", err)
	}
	m := manifests{configMaps: map[string]*corev1.ConfigMap{}}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range bytes.Split(data, []byte("\n---\n")) {
			if len(bytes.TrimSpace(doc)) == 0 {
				continue
			}
			var meta struct{ APIVersion, Kind string }
			if err := yaml.Unmarshal(doc, &meta); err != nil {
				t.Fatalf("%s doc %d: %v", f, i, err)
			}
			var obj any
			switch meta.APIVersion + " " + meta.Kind {
			case "apps/v1 Deployment":
				d := &appsv1.Deployment{}
				m.deployments, obj = append(m.deployments, d), d
			case "v1 ConfigMap":
				obj = &corev1.ConfigMap{}
			case "v1 Service":
				s := &corev1.Service{}
				m.services, obj = append(m.services, s), s
			default:
				t.Fatalf("%s doc %d: unexpected %s %s", f, i, meta.APIVersion, meta.Kind)
			}
			if err := yaml.UnmarshalStrict(doc, obj); err != nil {
				t.Fatalf("%s doc %d: %v", f, i, err)
			}
			if cm, ok := obj.(*corev1.ConfigMap); ok {
				m.configMaps[cm.Name] = cm
			}
		}
	}
	return m
}

func container(t *testing.T, pod *corev1.PodSpec, name string) *corev1.Container {
	t.Helper()
	for i := range pod.Containers {
		if pod.Containers[i].Name == name {
			return &pod.Containers[i]
		}
	}
	t.Fatalf("no container %q", name)
	return nil
}

// flags parses "--name=value" args.
func flags(args []string) map[string]string {
	out := map[string]string{}
	for _, a := range args {
		if k, v, ok := strings.Cut(strings.TrimPrefix(a, "--"), "="); ok && strings.HasPrefix(a, "--") {
			out[k] = v
		}
	}
	return out
}

func portNumber(c *corev1.Container, p intstr.IntOrString) int32 {
	if p.Type == intstr.Int {
		return p.IntVal
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort
		}
	}
	return 0
}

// TestK8sDeployment: Envoy + extauthz + app in one pod; extauthz gRPC on
// loopback (or a unix socket), admin on the pod IP with /readyz and
// /healthz probes, policy from the ConfigMap, and for every container
// resource requests, non-root, read-only root filesystem, no privilege
// escalation and all capabilities dropped.
func TestK8sDeployment(t *testing.T) {
	m := loadManifests(t)
	if len(m.deployments) != 1 {
		t.Fatalf("%d Deployments, want 1", len(m.deployments))
	}
	pod := &m.deployments[0].Spec.Template.Spec
	if len(pod.Containers) != 3 {
		t.Errorf("%d containers, want envoy, extauthz, app", len(pod.Containers))
	}
	envoy, authz, app := container(t, pod, "envoy"), container(t, pod, "extauthz"), container(t, pod, "app")

	f := flags(authz.Args)
	grpc := f["grpc-addr"]
	if host, _, err := net.SplitHostPort(grpc); !strings.HasPrefix(grpc, "unix://") && (err != nil || !net.ParseIP(host).IsLoopback()) {
		t.Errorf("extauthz --grpc-addr=%q: must be loopback or unix://", grpc)
	}
	_, adminPort, err := net.SplitHostPort(f["admin-addr"])
	if err != nil {
		t.Fatalf("extauthz --admin-addr=%q: %v", f["admin-addr"], err)
	}
	for _, probe := range []struct {
		name string
		p    *corev1.Probe
		path string
	}{{"readiness", authz.ReadinessProbe, "/readyz"}, {"liveness", authz.LivenessProbe, "/healthz"}} {
		if probe.p == nil || probe.p.HTTPGet == nil {
			t.Errorf("extauthz %s probe is not httpGet", probe.name)
			continue
		}
		if probe.p.HTTPGet.Path != probe.path || strconv.Itoa(int(portNumber(authz, probe.p.HTTPGet.Port))) != adminPort {
			t.Errorf("extauthz %s probe = %s on port %v, want %s on the admin port %s", probe.name, probe.p.HTTPGet.Path, probe.p.HTTPGet.Port.String(), probe.path, adminPort)
		}
	}
	if envoy.ReadinessProbe == nil {
		t.Error("envoy has no readiness probe")
	}

	// Policy ConfigMap mounted where --policy-dir points.
	checkMount(t, pod, authz, "extauthz-policy", f["policy-dir"])
	// Envoy config ConfigMap mounted where --config-path points.
	cfgPath := ""
	for i, a := range envoy.Args {
		if (a == "--config-path" || a == "-c") && i+1 < len(envoy.Args) {
			cfgPath = envoy.Args[i+1]
		}
	}
	if filepath.Base(cfgPath) != "envoy.yaml" {
		t.Errorf("envoy --config-path = %q, want .../envoy.yaml (the ConfigMap key)", cfgPath)
	}
	checkMount(t, pod, envoy, "extauthz-envoy", filepath.Dir(cfgPath))

	// The sidecar's XFF hops and address agree with the Envoy config.
	b := sidecarBootstrap(t, m)
	hcm := &hcmv3.HttpConnectionManager{}
	if err := b.GetStaticResources().GetListeners()[0].GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(hcm); err != nil {
		t.Fatal(err)
	}
	if f["xff-trusted-hops"] != strconv.Itoa(int(hcm.GetXffNumTrustedHops())) {
		t.Errorf("--xff-trusted-hops=%q, Envoy xff_num_trusted_hops=%d", f["xff-trusted-hops"], hcm.GetXffNumTrustedHops())
	}
	for _, c := range b.GetStaticResources().GetClusters() {
		a := c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
		if c.GetName() == "extauthz" && net.JoinHostPort(a.GetAddress(), strconv.Itoa(int(a.GetPortValue()))) != grpc {
			t.Errorf("Envoy extauthz cluster %s:%d != --grpc-addr=%s", a.GetAddress(), a.GetPortValue(), grpc)
		}
	}
	lport := b.GetStaticResources().GetListeners()[0].GetAddress().GetSocketAddress().GetPortValue()
	if len(envoy.Ports) == 0 || uint32(envoy.Ports[0].ContainerPort) != lport {
		t.Errorf("envoy containerPort %v, listener port %d", envoy.Ports, lport)
	}

	for _, c := range []*corev1.Container{envoy, authz, app} {
		checkContainer(t, pod, c)
	}
}

func checkMount(t *testing.T, pod *corev1.PodSpec, c *corev1.Container, configMap, dir string) {
	t.Helper()
	for _, v := range pod.Volumes {
		if v.ConfigMap == nil || v.ConfigMap.Name != configMap {
			continue
		}
		for _, vm := range c.VolumeMounts {
			if vm.Name == v.Name && vm.MountPath == dir && vm.ReadOnly {
				return
			}
		}
	}
	t.Errorf("container %s: ConfigMap %s not mounted read-only at %q", c.Name, configMap, dir)
}

func checkContainer(t *testing.T, pod *corev1.PodSpec, c *corev1.Container) {
	t.Helper()
	if i := strings.LastIndex(c.Image, ":"); i < 0 || strings.Contains(c.Image[i:], "/") || strings.HasSuffix(c.Image, ":latest") {
		t.Errorf("%s: image %q is not pinned to a tag", c.Name, c.Image)
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("%s: want cpu+memory requests and a memory limit, got %+v", c.Name, c.Resources)
	}
	sc := c.SecurityContext
	if sc == nil {
		t.Fatalf("%s: no securityContext", c.Name)
	}
	nonRoot := sc.RunAsNonRoot
	if nonRoot == nil && pod.SecurityContext != nil {
		nonRoot = pod.SecurityContext.RunAsNonRoot
	}
	if nonRoot == nil || !*nonRoot {
		t.Errorf("%s: runAsNonRoot not true", c.Name)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("%s: readOnlyRootFilesystem not true", c.Name)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("%s: allowPrivilegeEscalation not false", c.Name)
	}
	if sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 || sc.Capabilities.Drop[0] != "ALL" || len(sc.Capabilities.Add) != 0 {
		t.Errorf("%s: capabilities = %+v, want drop [ALL]", c.Name, sc.Capabilities)
	}
}

func sidecarBootstrap(t *testing.T, m manifests) *bootstrapv3.Bootstrap {
	t.Helper()
	cm := m.configMaps["extauthz-envoy"]
	if cm == nil {
		t.Fatal("no ConfigMap extauthz-envoy")
	}
	b, err := envoyconfig.Parse([]byte(cm.Data["envoy.yaml"]))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestK8sConfigMaps: the Envoy ConfigMap passes envoyconfig.ValidateStrict
// and equals envoy/envoy-sidecar.yaml; the policy ConfigMap carries a valid
// data.json.
func TestK8sConfigMaps(t *testing.T) {
	m := loadManifests(t)
	cm := m.configMaps["extauthz-envoy"]
	if cm == nil {
		t.Fatal("no ConfigMap extauthz-envoy")
	}
	cfg := cm.Data["envoy.yaml"]
	warnings, err := envoyconfig.ValidateStrict([]byte(cfg))
	if err != nil {
		t.Errorf("ConfigMap extauthz-envoy data[envoy.yaml]:\n%v", err)
	}
	if len(warnings) > 0 {
		t.Errorf("warnings: %q", warnings)
	}
	if src, err := os.ReadFile(filepath.Join("..", "envoy", "envoy-sidecar.yaml")); err != nil || string(src) != cfg {
		t.Errorf("data[envoy.yaml] differs from envoy/envoy-sidecar.yaml (err=%v)", err)
	}

	policy := m.configMaps["extauthz-policy"]
	if policy == nil {
		t.Fatal("no ConfigMap extauthz-policy")
	}
	if !json.Valid([]byte(policy.Data["data.json"])) {
		t.Errorf("extauthz-policy data.json is not valid JSON: %q", policy.Data["data.json"])
	}
}

var update = flag.Bool("update", false, "rewrite generated manifests (k8s/configmap-policy.yaml)")

// policyFiles are the files of policies/ that the policy ConfigMap ships.
func policyFiles(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, pat := range []string{"*.rego", "data.json"} {
		names, err := filepath.Glob(filepath.Join("..", "policies", pat))
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range names {
			b, err := os.ReadFile(n)
			if err != nil {
				t.Fatal(err)
			}
			out[filepath.Base(n)] = string(b)
		}
	}
	if _, ok := out["extauthz.rego"]; !ok {
		t.Fatal("policies/extauthz.rego not found")
	}
	return out
}

const policyConfigMapHeader = `# Policy for the extauthz sidecar, mounted at /etc/extauthz/policy
# (--policy-dir): the default rulebook, its Rego tests and the demo data.
# Replace data.json (routes, API keys by hash, tenants, limits) with your own
# before serving real traffic; a version without routes or credentials is
# refused.
# GENERATED from policies/: edit those files, then run
#   go test ./deploy -run TestK8sPolicyConfigMap -update
# (the test fails while the two differ).
apiVersion: v1
kind: ConfigMap
metadata:
  name: extauthz-policy
  labels:
    app.kubernetes.io/name: orders-api
data:
`

func renderPolicyConfigMap(files map[string]string) []byte {
	var b bytes.Buffer
	b.WriteString(policyConfigMapHeader)
	for _, name := range slices.Sorted(maps.Keys(files)) {
		body := files[name]
		chomp := "|"
		if !strings.HasSuffix(body, "\n") {
			chomp = "|-"
		} else if strings.HasSuffix(body, "\n\n") {
			chomp = "|+"
		}
		fmt.Fprintf(&b, "  %s: %s\n", name, chomp)
		for _, line := range strings.SplitAfter(body, "\n") {
			switch {
			case line == "":
			case strings.TrimSpace(line) == "":
				b.WriteString("\n")
			default:
				b.WriteString("    " + line)
			}
		}
		if !strings.HasSuffix(body, "\n") {
			b.WriteString("\n")
		}
	}
	return b.Bytes()
}

// TestK8sPolicyConfigMap: the policy ConfigMap ships exactly the files of
// policies/ (the default rulebook, its tests and data.json), so the two
// cannot drift, and mounted as Kubernetes mounts it (a ..data symlink to a
// timestamped directory, the files as symlinks into it) it loads and
// builds. -update regenerates it.
func TestK8sPolicyConfigMap(t *testing.T) {
	files := policyFiles(t)
	cmPath := filepath.Join("k8s", "configmap-policy.yaml")
	if *update {
		if err := os.WriteFile(cmPath, renderPolicyConfigMap(files), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cm := loadManifests(t).configMaps["extauthz-policy"]
	if cm == nil {
		t.Fatal("no ConfigMap extauthz-policy")
	}
	for _, name := range slices.Sorted(maps.Keys(files)) {
		if got, ok := cm.Data[name]; !ok {
			t.Errorf("ConfigMap extauthz-policy lacks policies/%s", name)
		} else if got != files[name] {
			t.Errorf("ConfigMap extauthz-policy data[%s] differs from policies/%s", name, name)
		}
	}
	for name := range cm.Data {
		if _, ok := files[name]; !ok {
			t.Errorf("ConfigMap extauthz-policy data[%s] is not in policies/", name)
		}
	}
	if t.Failed() {
		t.Fatalf("regenerate: go test ./deploy -run TestK8sPolicyConfigMap -update")
	}

	// Mount it as the kubelet does and load it as the server would.
	dir := t.TempDir()
	ts := "..2026_12_04_10_00_00.000000001"
	if err := os.Mkdir(filepath.Join(dir, ts), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range cm.Data {
		if err := os.WriteFile(filepath.Join(dir, ts, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(ts, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	eng, err := source.Engine(context.Background(), dir, engine.Options{})
	if err != nil {
		t.Fatalf("the mounted ConfigMap does not load: %v", err)
	}
	defer eng.Close()
	if eng.Routes.Len() == 0 || eng.Keys.Len() == 0 {
		t.Errorf("mounted ConfigMap: %d routes, %d API keys", eng.Routes.Len(), eng.Keys.Len())
	}
}

// TestK8sService: the Service selects the Deployment's pods and exposes only
// Envoy's port, never the sidecar's gRPC or admin port.
func TestK8sService(t *testing.T) {
	m := loadManifests(t)
	if len(m.services) != 1 || len(m.deployments) != 1 {
		t.Fatalf("%d Services, %d Deployments, want 1 each", len(m.services), len(m.deployments))
	}
	svc, dep := m.services[0], m.deployments[0]
	for k, v := range svc.Spec.Selector {
		if dep.Spec.Template.Labels[k] != v {
			t.Errorf("selector %s=%s does not match the pod labels %v", k, v, dep.Spec.Template.Labels)
		}
	}
	if len(svc.Spec.Selector) == 0 {
		t.Error("empty selector")
	}
	pod := &dep.Spec.Template.Spec
	envoy := container(t, pod, "envoy")
	for _, p := range svc.Spec.Ports {
		if n := portNumber(envoy, p.TargetPort); n != 8000 {
			t.Errorf("Service port %s targets %v (%d), want Envoy's 8000", p.Name, p.TargetPort.String(), n)
		}
	}
}
