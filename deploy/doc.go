// Package deploy holds the container and Kubernetes deployment files for
// extauthz (Dockerfile, docker-compose.yml, k8s/). It has no code; its tests
// check the manifests:
//
//   - dockerfile_test.go (always): Dockerfile shape and the skip path of
//     scripts/e2e-docker.sh;
//   - compose_test.go and k8s_test.go (build tag deploytest): the compose file
//     through compose-go's loader and the manifests as k8s.io/api types. They
//     need compose-go and k8s.io/api (plus their dependencies) in go.mod:
//     go test -tags deploytest ./deploy
package deploy
