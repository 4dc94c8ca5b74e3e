# extauthz — run `make help` for the targets.
GO ?= go
PKGS := ./...

.PHONY: help run demo test lint vet fmt-check rego-test golden bench bench-scale load load-compare load-smoke e2e-docker fuzz build

help: ## list targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

run: ## run the sidecar on the embedded default policy and demo data
	$(GO) run ./cmd/extauthz

demo: ## sidecar + Envoy-semantics front on 127.0.0.1:8000 + echo upstream, with curl examples
	$(GO) run ./cmd/extauthz demo

test: fmt-check vet ## the whole test suite: gofmt, go vet, go test -race (Rego tests, golden files, harness, e2e included)
	$(GO) test -race -count=1 $(PKGS)

vet:
	$(GO) vet $(PKGS)

STATICCHECK_VERSION ?= v0.8.2
GOVULNCHECK_VERSION ?= v1.9.0
lint: fmt-check vet ## gofmt, go vet, staticcheck, govulncheck (offline database, scripts/vulndb.sh) and go mod tidy
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) $(PKGS)
	$(GO) run golang.org/x/vuln/cmd/govulncheck@$(GOVULNCHECK_VERSION) -db "$$(bash scripts/vulndb.sh)" $(PKGS)
	$(GO) mod tidy -diff

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

rego-test: ## only the Rego _test.rego suite
	$(GO) test -count=1 -run TestRego ./policies/

build: ## static binary in bin/
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/extauthz ./cmd/extauthz

golden: ## regenerate testdata/golden (what a client sees, per profile and reason)
	$(GO) test ./internal/e2e -run Golden -update

bench: ## Check-path benchmarks with allocations (compare runs with benchstat)
	$(GO) test -run '^$$' -bench . -benchmem -count=6 ./internal/check/ ./internal/authn/... ./internal/route/ ./internal/ratelimit/ ./internal/decisionlog/

bench-scale: ## the Check path in process at 10 -> 1M keys, 1 -> 10k tenants, 10 -> 1k routes
	$(GO) test -run '^$$' -bench 'CheckKeys|CheckTenants|CheckRoutes' -benchmem -timeout 30m ./internal/loadtest/

load: ## extauthz vs the no-op floor over loopback (BENCHMARKS.md)
	$(GO) run ./cmd/extauthz-load --mix blend --concurrency 16,64 --requests 20000 --rounds 3

load-compare: ## allow vs each deny against the same processes, interleaved (is a deny slower?)
	$(GO) run ./cmd/extauthz-load --compare apikey_allow,jwt_allow,deny_missing,deny_unknown_key,deny_tenant,deny_scope --rounds 3

load-smoke: ## a few hundred checks per server, zero errors required, no timing
	$(GO) run ./cmd/extauthz-load --smoke

e2e-docker: ## real Envoy in docker compose (skips without a Docker engine)
	bash scripts/e2e-docker.sh

FUZZ_TIME ?= 20s
fuzz: ## run every fuzz target for FUZZ_TIME each
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "$$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZ_TIME) $$pkg || exit 1; \
	  done; done
