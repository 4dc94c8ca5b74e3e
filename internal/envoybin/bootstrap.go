package envoybin

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	"sigs.k8s.io/yaml"
)

// Bootstrap is an Envoy bootstrap as generic JSON values, to be edited
// before Run. Envoy reads the JSON form as well as YAML.
type Bootstrap map[string]any

// LoadBootstrap reads a YAML (or JSON) bootstrap file.
func LoadBootstrap(path string) (Bootstrap, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseBootstrap(data)
}

// ParseBootstrap parses YAML (or JSON) bootstrap text.
func ParseBootstrap(data []byte) (Bootstrap, error) {
	j, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, err
	}
	var b Bootstrap
	if err := json.Unmarshal(j, &b); err != nil {
		return nil, err
	}
	if _, ok := b["static_resources"].(map[string]any); !ok {
		return nil, fmt.Errorf("not an Envoy bootstrap: no static_resources")
	}
	return b, nil
}

// Clone deep-copies b.
func (b Bootstrap) Clone() Bootstrap {
	j, _ := json.Marshal(b)
	var c Bootstrap
	_ = json.Unmarshal(j, &c)
	return c
}

// Loopback is the only rewrite a shipped config gets before it runs
// outside its container or pod: the admin interface goes to 127.0.0.1 on a
// kernel-chosen port, every listener to listen (e.g. "127.0.0.1:0"; Run
// reads the bound ports back from the admin API), and each cluster's
// endpoints to clusters[name] ("host:port"). Every cluster must be given.
func (b Bootstrap) Loopback(listen string, clusters map[string]string) error {
	lhost, lport, err := splitHostPort(listen)
	if err != nil {
		return fmt.Errorf("listener: %w", err)
	}
	b["admin"] = map[string]any{"address": socketAddress("127.0.0.1", 0)}
	for _, l := range b.Listeners() {
		l["address"] = socketAddress(lhost, lport)
	}
	seen := map[string]bool{}
	for _, c := range list(b.staticResources()["clusters"]) {
		name, _ := c["name"].(string)
		addr, ok := clusters[name]
		if !ok {
			return fmt.Errorf("cluster %q: no address given", name)
		}
		seen[name] = true
		host, port, err := splitHostPort(addr)
		if err != nil {
			return fmt.Errorf("cluster %q: %w", name, err)
		}
		la, _ := c["load_assignment"].(map[string]any)
		if la == nil {
			return fmt.Errorf("cluster %q: no load_assignment", name)
		}
		la["endpoints"] = []any{map[string]any{"lb_endpoints": []any{map[string]any{
			"endpoint": map[string]any{"address": socketAddress(host, port)},
		}}}}
	}
	for name := range clusters {
		if !seen[name] {
			return fmt.Errorf("no cluster %q in the bootstrap", name)
		}
	}
	return nil
}

func socketAddress(host string, port int) map[string]any {
	return map[string]any{"socket_address": map[string]any{"address": host, "port_value": port}}
}

func splitHostPort(addr string) (string, int, error) {
	i := strings.LastIndexByte(addr, ':')
	if i < 0 {
		return "", 0, fmt.Errorf("address %q has no port", addr)
	}
	port, err := strconv.Atoi(addr[i+1:])
	if err != nil {
		return "", 0, fmt.Errorf("address %q: %w", addr, err)
	}
	return strings.Trim(addr[:i], "[]"), port, nil
}

func (b Bootstrap) staticResources() map[string]any {
	sr, _ := b["static_resources"].(map[string]any)
	return sr
}

func list(v any) []map[string]any {
	var out []map[string]any
	for _, e := range asSlice(v) {
		if m, ok := e.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

func asSlice(v any) []any { s, _ := v.([]any); return s }

// Listeners returns the listeners (to edit in place).
func (b Bootstrap) Listeners() []map[string]any { return list(b.staticResources()["listeners"]) }

// AddListener appends a listener.
func (b Bootstrap) AddListener(l map[string]any) {
	sr := b.staticResources()
	sr["listeners"] = append(asSlice(sr["listeners"]), l)
}

// HCM returns the typed_config of the listener's (first) HTTP connection
// manager, to edit in place.
func HCM(listener map[string]any) map[string]any {
	for _, fc := range list(listener["filter_chains"]) {
		for _, f := range list(fc["filters"]) {
			if tc, ok := f["typed_config"].(map[string]any); ok && strings.HasSuffix(fmt.Sprint(tc["@type"]), ".HttpConnectionManager") {
				return tc
			}
		}
	}
	return nil
}

// HTTPFilter returns the typed_config of the HCM's HTTP filter whose @type
// ends with typeSuffix (".ExtAuthz"), to edit in place.
func HTTPFilter(hcm map[string]any, typeSuffix string) map[string]any {
	for _, f := range list(hcm["http_filters"]) {
		if tc, ok := f["typed_config"].(map[string]any); ok && strings.HasSuffix(fmt.Sprint(tc["@type"]), typeSuffix) {
			return tc
		}
	}
	return nil
}

// RemoveHTTPFilter drops the HCM's HTTP filters whose @type ends with typeSuffix.
func RemoveHTTPFilter(hcm map[string]any, typeSuffix string) {
	var keep []any
	for _, f := range list(hcm["http_filters"]) {
		if tc, ok := f["typed_config"].(map[string]any); ok && strings.HasSuffix(fmt.Sprint(tc["@type"]), typeSuffix) {
			continue
		}
		keep = append(keep, f)
	}
	hcm["http_filters"] = keep
}
