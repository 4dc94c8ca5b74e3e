package envoyconfig

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	yamlv3 "go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoregistry"
	"sigs.k8s.io/yaml"
)

// Envoy answers some requests itself, without the sidecar's envelope: when
// it cannot get an answer from the sidecar (status_on_error), when its codec
// or path normalisation rejects a request (400), and when a request is over
// its limits (a body over with_request_body.max_request_bytes, 413; a header
// block over max_request_headers_kb, 431). Local replies are the
// local_reply_config mappers that answer each of those, per virtual host, as
// the profile its checks use would: the same status, headers and body as the
// sidecar's auth_unavailable, request_invalid and request_too_large denials.
//
// A mapper applies only to a reply Envoy made without the sidecar: the
// filters require that the ext_authz filter set no decision_id metadata
// (every CheckResponse of the sidecar carries one), so the sidecar's own
// denials and the replies to requests it allowed pass unchanged.

// Denial is one kind of reply Envoy makes itself.
type Denial struct {
	Reason string   // the deny reason whose envelope answers it
	Status []uint32 // the statuses Envoy replies with (0: the filter's status_on_error)
	Flag   string   // a response flag the reply also carries, or ""
	WithID bool     // the request has Envoy's x-request-id by then
	// RawHost: Envoy replies before it strips the port and a trailing dot
	// from the host (it has routed the others).
	RawHost bool
}

// Denials are the replies Envoy makes itself, first match first.
var Denials = []Denial{
	{Reason: "auth_unavailable", Status: []uint32{0}, Flag: "UAEX", WithID: true},
	{Reason: "request_too_large", Status: []uint32{413, 431}},
	{Reason: "request_invalid", Status: []uint32{400}, RawHost: true},
}

// Envelope is a profile's response to a Denial. Where the request id and
// the time go, it holds RequestIDMark and MarkTime (as RFC 3339) for Envoy
// to fill in.
type Envelope struct {
	Status  int
	Headers [][2]string // content-type among them
	Body    []byte
}

// RequestIDMark stands for the request id in an Envelope.
const RequestIDMark = "extauthzRequestIdMark"

// MarkTime stands for the time of the request in an Envelope.
var MarkTime = time.Date(1999, 12, 31, 23, 59, 58, 0, time.UTC)

// RenderFunc renders profile's envelope for reason, with or without a
// request id.
type RenderFunc func(profile, reason string, withID bool) (Envelope, error)

// HostProfile is the profile checks use on a set of hosts.
type HostProfile struct {
	VirtualHost string    // the virtual host's name
	Match       hostMatch // the hosts, as Envoy matches them
	Profile     string    // context_extensions.profile, or the default profile
	order       [2]int    // Envoy's precedence: kind, then longer first
}

// hostMatch is one virtual host's domains of one kind.
type hostMatch struct {
	kind    string   // "exact", "suffix", "prefix" or "any"
	domains []string // the patterns, without their "*"
}

// LocalReplies are the mappers one HTTP connection manager needs.
type LocalReplies struct {
	Path          string // field path of the manager's local_reply_config
	StatusOnError uint32
	Hosts         []HostProfile // in Envoy's matching precedence
	// Preserved: the manager may keep a client's x-request-id
	// (preserve_external_request_id, internal addresses or a request id
	// extension), so a mapper that writes the id requires a plain one.
	Preserved bool
	// Mappers are the manager's current mappers.
	Mappers []*hcmv3.ResponseMapper

	hcm     fieldPath               // the manager's typed_config
	current *hcmv3.LocalReplyConfig // its local_reply_config, if any
}

// LocalRepliesOf lists, for each HTTP connection manager with an ext_authz
// filter and an inline route configuration, the hosts and their profiles
// (defaultProfile where a virtual host names none).
func LocalRepliesOf(yamlBytes []byte, defaultProfile string) ([]LocalReplies, error) {
	b, err := Parse(yamlBytes)
	if err != nil {
		return nil, err
	}
	var out []LocalReplies
	for _, r := range httpConnectionManagers(b) {
		authz := extAuthzFilters(r)
		rc := r.hcm.GetRouteConfig()
		if len(authz) == 0 || rc == nil {
			continue
		}
		for _, a := range authz {
			if a.cfg.GetGrpcService() == nil {
				return nil, fmt.Errorf("%s: ext_authz without grpc_service: the sidecar speaks gRPC", a.path)
			}
			if v := a.cfg.GetEnableDynamicMetadataIngestion(); v != nil && !v.GetValue() {
				return nil, fmt.Errorf("%s.enable_dynamic_metadata_ingestion: false: local replies tell the sidecar's denials from Envoy's own by the metadata the sidecar sends", a.path)
			}
		}
		lr := LocalReplies{
			Path:          r.path.field("local_reply_config").String(),
			StatusOnError: 403, // Envoy's default
			// Envoy keeps a client's x-request-id when told to, for
			// internal addresses, with another id extension, and when it
			// does not take the client address from the connection.
			Preserved: r.hcm.GetPreserveExternalRequestId() || len(r.hcm.GetInternalAddressConfig().GetCidrRanges()) > 0 ||
				r.hcm.GetRequestIdExtension() != nil || !r.hcm.GetUseRemoteAddress().GetValue(),
			Mappers: r.hcm.GetLocalReplyConfig().GetMappers(),
			hcm:     r.path,
			current: r.hcm.GetLocalReplyConfig(),
		}
		if c := authz[0].cfg.GetStatusOnError().GetCode(); c != 0 {
			lr.StatusOnError = uint32(c)
		}
		names := authzNames(authz)
		base := contextOf(rc.GetTypedPerFilterConfig(), nil, names)
		for _, vh := range rc.GetVirtualHosts() {
			prof := contextOf(vh.GetTypedPerFilterConfig(), base, names)["profile"]
			if prof == "" {
				prof = defaultProfile
			}
			lr.Hosts = append(lr.Hosts, hostProfiles(vh.GetName(), vh.GetDomains(), prof)...)
		}
		if !slices.ContainsFunc(lr.Hosts, func(h HostProfile) bool { return h.Match.kind == "any" }) {
			// Envoy rejects a malformed request before it has a host: the
			// default profile answers those.
			lr.Hosts = append(lr.Hosts, HostProfile{Match: hostMatch{kind: "any"}, Profile: defaultProfile, order: [2]int{3, 0}})
		}
		slices.SortStableFunc(lr.Hosts, func(a, b HostProfile) int {
			if a.order[0] != b.order[0] {
				return a.order[0] - b.order[0]
			}
			return b.order[1] - a.order[1]
		})
		out = append(out, lr)
	}
	return out, nil
}

// hostProfiles splits a virtual host's domains by Envoy's precedence: exact
// names, then suffix wildcards ("*.example.com"), then prefix ones
// ("api.*"), longer before shorter, then "*".
func hostProfiles(name string, domains []string, prof string) []HostProfile {
	var out []HostProfile
	exact := hostMatch{kind: "exact"}
	for _, d := range domains {
		d = strings.ToLower(d)
		switch {
		case d == "*":
			out = append(out, HostProfile{VirtualHost: name, Match: hostMatch{kind: "any"}, Profile: prof, order: [2]int{3, 0}})
		case strings.HasPrefix(d, "*"):
			out = append(out, HostProfile{VirtualHost: name, Match: hostMatch{kind: "suffix", domains: []string{d[1:]}}, Profile: prof, order: [2]int{1, len(d)}})
		case strings.HasSuffix(d, "*"):
			out = append(out, HostProfile{VirtualHost: name, Match: hostMatch{kind: "prefix", domains: []string{d[:len(d)-1]}}, Profile: prof, order: [2]int{2, len(d)}})
		default:
			exact.domains = append(exact.domains, d)
		}
	}
	if len(exact.domains) > 0 {
		out = append(out, HostProfile{VirtualHost: name, Match: exact, Profile: prof})
	}
	return out
}

// YAML is the local_reply_config block (its key included) for l, rendered
// by render and indented by indent spaces.
func (l LocalReplies) YAML(render RenderFunc, indent int) (string, error) {
	var sb strings.Builder
	pad := strings.Repeat(" ", indent)
	w := func(depth int, s string) { sb.WriteString(pad + strings.Repeat("  ", depth) + s + "\n") }
	w(0, "local_reply_config:")
	w(1, "# Generated by `extauthz local-replies`: the replies Envoy makes itself")
	w(1, "# (sidecar unreachable or late, request rejected or too large) in the")
	w(1, "# envelope of each virtual host's profile. Regenerate after editing")
	w(1, "# virtual hosts or profiles; `extauthz validate --envoy` checks them.")
	w(1, "mappers:")
	var errs []error
	for _, h := range l.Hosts {
		for _, d := range Denials {
			for _, withID := range idVariants(d, l.Preserved) {
				env, err := render(h.Profile, d.Reason, withID)
				if err != nil {
					errs = append(errs, fmt.Errorf("virtual host %q: profile %q: %s: %w", h.VirtualHost, h.Profile, d.Reason, err))
					continue
				}
				l.mapper(w, h, d, withID, l.Preserved && withID, env)
			}
		}
	}
	// The manager's own mappers follow, and its other settings stay.
	for _, m := range l.current.GetMappers() {
		if !generated(m) {
			if err := writeProto(w, 1, "- ", m); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if bf := l.current.GetBodyFormat(); bf != nil {
		if err := writeProto(w, 1, "body_format: ", bf); err != nil {
			errs = append(errs, err)
		}
	}
	return sb.String(), errors.Join(errs...)
}

// runtimeKeyPrefix marks the status filters of generated mappers.
const runtimeKeyPrefix = "extauthz.local_reply."

// generated reports a mapper local-replies wrote (its status filters carry
// runtimeKeyPrefix).
func generated(m *hcmv3.ResponseMapper) bool {
	var ours func(f *accesslogv3.AccessLogFilter) bool
	ours = func(f *accesslogv3.AccessLogFilter) bool {
		if strings.HasPrefix(f.GetStatusCodeFilter().GetComparison().GetValue().GetRuntimeKey(), runtimeKeyPrefix) {
			return true
		}
		return slices.ContainsFunc(f.GetAndFilter().GetFilters(), ours) || slices.ContainsFunc(f.GetOrFilter().GetFilters(), ours)
	}
	return ours(m.GetFilter())
}

// writeProto writes m as YAML under lead ("- " or "key: ") at depth.
func writeProto(w func(int, string), depth int, lead string, m proto.Message) error {
	j, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		return err
	}
	y, err := yaml.JSONToYAML(j)
	if err != nil {
		return err
	}
	lines := strings.Split(strings.TrimRight(string(y), "\n"), "\n")
	if strings.HasPrefix(lead, "- ") {
		w(depth, lead+lines[0])
		for _, l := range lines[1:] {
			w(depth, "  "+l)
		}
		return nil
	}
	w(depth, strings.TrimSpace(lead))
	for _, l := range lines {
		w(depth+1, l)
	}
	return nil
}

// idVariants: a denial whose request has an id is answered with it and,
// where the manager may keep a client's id, also without it (for an id
// that is not a plain token).
func idVariants(d Denial, preserved bool) []bool {
	switch {
	case !d.WithID:
		return []bool{false}
	case preserved:
		return []bool{true, false}
	}
	return []bool{true}
}

// plainID matches the request ids the sidecar itself takes (printable
// ASCII but space, '"', '\' and ','), which need no escaping in JSON.
const plainID = `[!#-+\--\[\]-~]+`

func (l LocalReplies) mapper(w func(int, string), h HostProfile, d Denial, withID, needPlainID bool, env Envelope) {
	w(1, fmt.Sprintf("# %s on %s: %s", d.Reason, h.describe(), h.Profile))
	w(1, "- filter:")
	w(3, "and_filter:")
	w(4, "filters:")
	statuses := make([]string, len(d.Status))
	for i, s := range d.Status {
		if s == 0 {
			s = l.StatusOnError
		}
		statuses[i] = fmt.Sprintf("{status_code_filter: {comparison: {op: EQ, value: {default_value: %d, runtime_key: %sstatus_%d}}}}", s, runtimeKeyPrefix, s)
	}
	if len(statuses) == 1 {
		w(4, "- "+statuses[0])
	} else {
		w(4, "- or_filter: {filters: ["+strings.Join(statuses, ", ")+"]}")
	}
	if d.Flag != "" {
		w(4, "- {response_flag_filter: {flags: ["+d.Flag+"]}}")
	}
	w(4, "- {metadata_filter: {matcher: {filter: envoy.filters.http.ext_authz, path: [{key: decision_id}], value: {bool_match: true}}}}")
	if hm := h.Match.filter(d.RawHost); hm != "" {
		for _, l := range strings.Split(hm, "\n") {
			w(4, l)
		}
	}
	if needPlainID {
		w(4, "- {header_filter: {header: {name: x-request-id, string_match: {safe_regex: {regex: "+quote(plainID)+"}}}}}")
	}
	w(2, "status_code: "+strconv.Itoa(env.Status))
	contentType := "application/json"
	var add []string
	for _, hv := range env.Headers {
		if hv[0] == "content-type" {
			contentType = hv[1]
			continue
		}
		add = append(add, fmt.Sprintf("{header: {key: %s, value: %s}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}", quote(hv[0]), quote(envoyFormat(hv[1]))))
	}
	if len(add) > 0 {
		w(2, "headers_to_add:")
		for _, a := range add {
			w(2, "- "+a)
		}
	}
	w(2, "body_format_override:")
	w(3, "content_type: "+quote(contentType))
	w(3, "text_format_source: {inline_string: "+quote(envoyFormat(string(env.Body)))+"}")
}

func (h HostProfile) describe() string {
	switch h.Match.kind {
	case "any":
		return "any other host (or none yet)"
	case "suffix":
		return "*" + h.Match.domains[0]
	case "prefix":
		return h.Match.domains[0] + "*"
	}
	return strings.Join(h.Match.domains, ", ")
}

// filter is the access-log filter matching the hosts ("" for any host),
// as Envoy has them when it replies: with the port and a trailing dot
// stripped (strip_any_host_port, strip_trailing_host_dot) once it routes,
// but as sent (raw) when it rejects a request before (an escaped slash).
func (m hostMatch) filter(raw bool) string {
	one := func(kind, d string) string {
		return fmt.Sprintf("{header_filter: {header: {name: \":authority\", string_match: {%s: %s, ignore_case: true}}}}", kind, quote(d))
	}
	var fs []string
	switch m.kind {
	case "any":
		return ""
	case "prefix": // "api." also starts "api.x:8000"
		return "- " + one("prefix", m.domains[0])
	case "suffix":
		d := m.domains[0]
		fs = []string{one("suffix", d)}
		if raw {
			fs = append(fs, one("suffix", d+"."), one("contains", d+":"), one("contains", d+".:"))
		}
	default:
		for _, d := range m.domains {
			fs = append(fs, one("exact", d))
			if raw {
				fs = append(fs, one("exact", d+"."), one("prefix", d+":"), one("prefix", d+".:"))
			}
		}
	}
	if len(fs) == 1 {
		return "- " + fs[0]
	}
	return "- or_filter:\n    filters:\n    - " + strings.Join(fs, "\n    - ")
}

// envoyFormat turns rendered text into an Envoy format string: '%' doubled,
// the marks replaced by the request's id and time.
func envoyFormat(s string) string {
	s = strings.ReplaceAll(s, "%", "%%")
	s = strings.ReplaceAll(s, RequestIDMark, "%REQ(X-REQUEST-ID)%")
	return strings.ReplaceAll(s, MarkTime.Format(time.RFC3339), "%START_TIME(%Y-%m-%dT%H:%M:%SZ)%")
}

// quote is s as a single-quoted YAML scalar.
func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// ParseMappers reads the mappers of a local_reply_config block.
func ParseMappers(block string) ([]*hcmv3.ResponseMapper, error) {
	j, err := yaml.YAMLToJSON([]byte(block))
	if err != nil {
		return nil, err
	}
	var top struct {
		LocalReplyConfig json.RawMessage `json:"local_reply_config"`
	}
	if err := json.Unmarshal(j, &top); err != nil {
		return nil, err
	}
	c := &hcmv3.LocalReplyConfig{}
	if err := (protojson.UnmarshalOptions{Resolver: protoregistry.GlobalTypes}).Unmarshal(top.LocalReplyConfig, c); err != nil {
		return nil, err
	}
	return c.GetMappers(), nil
}

// Write is src with l's local_reply_config, rendered by render: in place of
// the manager's own (whose mappers other than generated ones, and
// body_format, are kept, after the generated ones), else after its
// http_filters. The manager is found by its path in src, which must be the
// file l was read from; comments and layout elsewhere are kept.
func (l LocalReplies) Write(src []byte, render RenderFunc) ([]byte, error) {
	var doc yamlv3.Node
	if err := yamlv3.Unmarshal(src, &doc); err != nil {
		return nil, err
	}
	n := deref(&doc)
	for _, seg := range l.hcm {
		if n, _ = child(n, seg); n == nil {
			return nil, fmt.Errorf("%s: not found as YAML (a JSON file? print the block and paste it)", l.hcm)
		}
		n = deref(n)
	}
	if n.Kind != yamlv3.MappingNode || n.Style&yamlv3.FlowStyle != 0 {
		return nil, fmt.Errorf("%s: not a block mapping; print the block and paste it", l.hcm)
	}
	lines := strings.SplitAfter(string(src), "\n")
	if last := lines[len(lines)-1]; last != "" && !strings.HasSuffix(last, "\n") {
		lines[len(lines)-1] += "\n"
	}
	var key *yamlv3.Node
	var from, to int
	if _, k := child(n, "local_reply_config"); k != nil {
		key, from = k, k.Line-1
		to = blockEnd(lines, from)
	} else if _, k := child(n, "http_filters"); k != nil {
		key, from = k, blockEnd(lines, k.Line-1)
		to = from
	} else {
		return nil, fmt.Errorf("%s: no http_filters to place local_reply_config after", l.hcm)
	}
	block, err := l.YAML(render, key.Column-1)
	if err != nil {
		return nil, err
	}
	return []byte(strings.Join(lines[:from], "") + block + strings.Join(lines[to:], "")), nil
}

// blockEnd is the line after the YAML block of the key on line i: after
// its last line that is indented deeper, or as deep and a list item.
func blockEnd(lines []string, i int) int {
	indent := indentOf(lines[i])
	end := i + 1
	for j := i + 1; j < len(lines); j++ {
		t := strings.TrimSpace(lines[j])
		if t == "" || strings.HasPrefix(t, "#") {
			continue // the block's only if a line of it follows
		}
		in := indentOf(lines[j])
		if in < indent || in == indent && !strings.HasPrefix(t, "- ") {
			break
		}
		end = j + 1
	}
	return end
}

func indentOf(l string) int { return len(l) - len(strings.TrimLeft(l, " ")) }

// Agrees reports whether the manager's mappers begin with want (a mapper of
// its own may follow them, never come first: the first that matches
// applies).
func (l LocalReplies) Agrees(want []*hcmv3.ResponseMapper) bool {
	if len(l.Mappers) < len(want) {
		return false
	}
	for i, m := range want {
		if !proto.Equal(m, l.Mappers[i]) {
			return false
		}
	}
	return true
}
