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
	src := strings.Replace(lrBootstrap, "stat_prefix: x\n", "stat_prefix: x\n          preserve_external_request_id: true\n", 1)
	lrs, err := envoyconfig.LocalRepliesOf([]byte(src), "default")
	if err != nil {
		t.Fatal(err)
	}
	block, err := lrs[0].YAML(fakeRender, 0)
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(block, "{header_filter: {header: {name: x-request-id"); n != 5 {
		t.Errorf("%d plain-id filters, want one per host", n)
	}
	if ms, _ := envoyconfig.ParseMappers(block); len(ms) != 20 {
		t.Errorf("%d mappers, want 20", len(ms))
	}
}

// WithLocalReplies places the block after http_filters, then replaces it
// in place: writing twice changes nothing, and the result agrees.
func TestWithLocalRepliesIsIdempotent(t *testing.T) {
	lrs, _ := envoyconfig.LocalRepliesOf([]byte(lrBootstrap), "default")
	gen := func(indent int) (string, error) { return lrs[0].YAML(fakeRender, indent) }
	once, err := envoyconfig.WithLocalReplies([]byte(lrBootstrap), gen)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(string(once), "  clusters:\n  - name: extauthz\n") || !strings.Contains(string(once), "v3.Router\n          local_reply_config:\n") {
		t.Errorf("placed wrongly:\n%s", once)
	}
	twice, err := envoyconfig.WithLocalReplies(once, gen)
	if err != nil || string(twice) != string(once) {
		t.Errorf("second write changed the file (%v)", err)
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
