// Package e2e is the end-to-end test support shared by go test and the
// local demo: it translates the shipped Envoy config (envoy/envoy.yaml) into
// the envoysim harness configuration (HarnessConfig), starts the real
// extauthz gRPC server in-process on a loopback port (StartSidecar) and
// provides the echo upstream (Echo) that allowed requests reach.
//
// The tests in this package drive real HTTP requests through
// client -> harness (Envoy semantics) -> extauthz -> echo upstream, and keep
// golden files of what a client sees for every profile and deny reason in
// testdata/golden (regenerate with go test ./internal/e2e -update).
package e2e
