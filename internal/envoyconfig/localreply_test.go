package envoyconfig_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/extauthz/extauthz/internal/envoyconfig"
)

// A minimal bootstrap: one HCM with ext_authz (status_on_error 503) and
// virtual hosts of every domain kind, listed against Envoy's precedence.
const lrBootstrap = `static_resources:
  listeners:
  - name: l
    address: {socket_address: {address: 127.0.0.1, port_value: 8000}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: x
          use_remote_address: true
          route_config:
            virtual_hosts:
            - name: catchall
              domains: ["*"]
              routes: [{match: {prefix: /}, direct_response: {status: 200}}]
            - name: prefix
              domains: ["api.*"]
              typed_per_filter_config:
                envoy.filters.http.ext_authz:
                  "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                  check_settings: {context_extensions: {profile: google}}
              routes: [{match: {prefix: /}, direct_response: {status: 200}}]
            - name: short
              domains: ["*.com"]
              routes: [{match: {prefix: /}, direct_response: {status: 200}}]
            - name: long
              domains: ["*.example.com", "Exact.Example.Org", "other.example.org"]
              typed_per_filter_config:
                envoy.filters.http.ext_authz:
                  "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute
                  check_settings: {context_extensions: {profile: problem}}
              routes: [{match: {prefix: /}, direct_response: {status: 200}}]
          http_filters:
          - name: envoy.filters.http.ext_authz
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz
              grpc_service: {envoy_grpc: {cluster_name: extauthz}}
              status_on_error: {code: ServiceUnavailable}
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: extauthz
`

// fakeRender is an envelope naming what it was asked for, with the marks.
func fakeRender(profile, reason string, withID bool) (envoyconfig.Envelope, error) {
	id := ""
	if withID {
		id = envoyconfig.RequestIDMark
	}
	body := fmt.Sprintf(`{"p":%q,"r":%q,"id":%q,"t":%q,"pct":"100%%"}`, profile, reason, id, envoyconfig.MarkTime.Format("2006-01-02T15:04:05Z07:00"))
	return envoyconfig.Envelope{Status: 599, Headers: [][2]string{{"content-type", "application/x+json"}, {"x-request-id", id}}, Body: []byte(body)}, nil
}

// Hosts are listed in Envoy's precedence (exact names, suffix wildcards
// longest first, prefix wildcards, "*"), each with its virtual host's
// profile or the default one.
func TestLocalRepliesFollowEnvoysHostPrecedence(t *testing.T) {
	lrs, err := envoyconfig.LocalRepliesOf([]byte(lrBootstrap), "default")
	if err != nil || len(lrs) != 1 {
		t.Fatalf("%v %d", err, len(lrs))
	}
	lr := lrs[0]
	if lr.StatusOnError != 503 || lr.Preserved || !strings.HasSuffix(lr.Path, ".typed_config.local_reply_config") {
		t.Errorf("%+v", lr)
	}
	var got []string
	for _, h := range lr.Hosts {
		got = append(got, h.VirtualHost+"="+h.Profile)
	}
	// The exact names of "long" first, its suffix wildcard (longer than
	// "*.com") later.
	want := "long=problem long=problem short=default prefix=google catchall=default"
	if strings.Join(got, " ") != want {
		t.Errorf("hosts %q, want %q", strings.Join(got, " "), want)
	}
	block, err := lr.YAML(fakeRender, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{
		`{exact: 'exact.example.org', ignore_case: true}`, `{suffix: '.example.com', ignore_case: true}`, `{prefix: 'api.', ignore_case: true}`,
		`default_value: 503`, `{response_flag_filter: {flags: [UAEX]}}`,
		// '%' is Envoy's: doubled; the marks become the request's id and time.
		`"pct":"100%%"`, `"id":"%REQ(X-REQUEST-ID)%"`, `"t":"%START_TIME(%Y-%m-%dT%H:%M:%SZ)%"`,
		`content_type: 'application/x+json'`, `value: '%REQ(X-REQUEST-ID)%'`,
	} {
		if !strings.Contains(block, w) {
			t.Errorf("block lacks %s", w)
		}
	}
	ms, err := envoyconfig.ParseMappers(block)
	if err != nil {
		t.Fatal(err)
	}
	// 5 host entries, 3 denials each; the request id trusted (Envoy
	// generates it), so no variant without it.
	if len(ms) != 15 {
		t.Errorf("%d mappers, want 15", len(ms))
	}
	if lr.Agrees(ms) {
		t.Error("a config without mappers agrees")
	}
}

// A config that may keep a client's x-request-id gets, for a denial that
// shows the id, a mapper that requires a plain id and one without the id.
func TestLocalRepliesGuardAClientsRequestID(t *testing.T) {
	for _, edit := range [][2]string{
		{"stat_prefix: x\n", "stat_prefix: x\n          preserve_external_request_id: true\n"},
		// Without the connection's address Envoy keeps a client's id.
		{"use_remote_address: true", "use_remote_address: false"},
	} {
		lrs, err := envoyconfig.LocalRepliesOf([]byte(strings.Replace(lrBootstrap, edit[0], edit[1], 1)), "default")
		if err != nil {
			t.Fatal(err)
		}
		block, err := lrs[0].YAML(fakeRender, 0)
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(block, "{header_filter: {header: {name: x-request-id"); n != 5 {
			t.Errorf("%s: %d plain-id filters, want one per host", edit[1], n)
		}
		if ms, _ := envoyconfig.ParseMappers(block); len(ms) != 20 {
			t.Errorf("%s: %d mappers, want 20", edit[1], len(ms))
		}
	}
}

// Write places the block after http_filters, then replaces it in place:
// writing twice changes nothing, and the result agrees.
func TestWriteLocalRepliesIsIdempotent(t *testing.T) {
	write := func(src []byte) []byte {
		t.Helper()
		lrs, err := envoyconfig.LocalRepliesOf(src, "default")
		if err != nil {
			t.Fatal(err)
		}
		out, err := lrs[0].Write(src, fakeRender)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	once := write([]byte(lrBootstrap))
	if !strings.HasSuffix(string(once), "  clusters:\n  - name: extauthz\n") || !strings.Contains(string(once), "v3.Router\n          local_reply_config:\n") {
		t.Errorf("placed wrongly:\n%s", once)
	}
	if twice := write(once); string(twice) != string(once) {
		t.Error("second write changed the file")
	}
	after, err := envoyconfig.LocalRepliesOf(once, "default")
	if err != nil {
		t.Fatal(err)
	}
	block, _ := after[0].YAML(fakeRender, 0)
	ms, _ := envoyconfig.ParseMappers(block)
	if !after[0].Agrees(ms) {
		t.Error("the written config does not agree")
	}
}

// Write edits the manager it was read from, keeps the manager's own
// mappers (after the generated ones) and body_format, finds a key with a
// comment, and copes with a file without a final newline.
func TestWriteLocalRepliesKeepsTheUsersOwn(t *testing.T) {
	own := `          local_reply_config:   # our own
            body_format: {text_format: "%LOCAL_REPLY_BODY%\n"}
            mappers:
            - filter: {status_code_filter: {comparison: {op: EQ, value: {default_value: 404, runtime_key: mine}}}}
              body: {inline_string: gone}
`
	src := strings.Replace(lrBootstrap, "          route_config:\n", own+"          route_config:\n", 1)
	// A second listener without ext_authz, with its own local replies.
	other := `  - name: other
    address: {socket_address: {address: 127.0.0.1, port_value: 8001}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: other
          local_reply_config:
            mappers:
            - filter: {status_code_filter: {comparison: {op: EQ, value: {default_value: 503, runtime_key: theirs}}}}
              body: {inline_string: untouched}
          route_config: {virtual_hosts: [{name: o, domains: ["*"], routes: [{match: {prefix: /}, direct_response: {status: 200}}]}]}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
`
	src = strings.Replace(src, "  clusters:\n", other+"  clusters:\n", 1)
	src = strings.TrimSuffix(src, "\n")
	lrs, err := envoyconfig.LocalRepliesOf([]byte(src), "default")
	if err != nil || len(lrs) != 1 {
		t.Fatalf("%v %d", err, len(lrs))
	}
	out, err := lrs[0].Write([]byte(src), fakeRender)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "untouched") || strings.Count(string(out), "local_reply_config:") != 2 {
		t.Errorf("the other listener's local replies changed:\n%s", out)
	}
	after, err := envoyconfig.LocalRepliesOf(out, "default")
	if err != nil {
		t.Fatal(err)
	}
	ms := after[0].Mappers
	if len(ms) != 16 || ms[15].GetBody().GetInlineString() != "gone" || ms[15].GetFilter().GetStatusCodeFilter().GetComparison().GetValue().GetRuntimeKey() != "mine" {
		t.Errorf("%d mappers; the user's own not kept last: %v", len(ms), ms[len(ms)-1])
	}
	if !strings.Contains(string(out), "%LOCAL_REPLY_BODY%") {
		t.Error("body_format dropped")
	}
	again, err := after[0].Write(out, fakeRender)
	if err != nil || string(again) != string(out) {
		t.Errorf("second write changed the file (%v)", err)
	}
}

// Local replies need the sidecar's metadata to tell its denials from
// Envoy's own replies.
func TestLocalRepliesNeedMetadataIngestion(t *testing.T) {
	src := strings.Replace(lrBootstrap, "status_on_error: {code: ServiceUnavailable}", "status_on_error: {code: ServiceUnavailable}\n              enable_dynamic_metadata_ingestion: false", 1)
	if _, err := envoyconfig.LocalRepliesOf([]byte(src), "default"); err == nil || !strings.Contains(err.Error(), "enable_dynamic_metadata_ingestion: false") {
		t.Errorf("err = %v", err)
	}
}
