// Package e2e is the end-to-end test support shared by go test and the
// local demo: it starts the real extauthz gRPC server in-process on a
// loopback port (StartSidecar) and provides the echo upstream (Echo) that
// allowed requests reach.
//
// The tests in this package drive real HTTP requests through
// client -> real Envoy (envoy/envoy.yaml, addresses moved to loopback) ->
// extauthz -> echo upstream, and keep golden files of what a client sees
// for every profile and deny reason in testdata/golden (regenerate with
// go test ./internal/e2e -update). Without an Envoy binary they skip
// (fail under EXTAUTHZ_REQUIRE_ENVOY=1); see internal/envoytest.
package e2e
