# extauthz — run `make help` for the targets.
GO ?= go
PKGS := ./...

.PHONY: help run test vet fmt-check rego-test bench fuzz build

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

run: ## run the sidecar on the embedded default policy and demo data
	$(GO) run ./cmd/extauthz

test: fmt-check vet ## the whole test suite: gofmt, go vet, go test -race (Rego tests, golden files, harness, e2e included)
	$(GO) test -race -count=1 $(PKGS)

vet:
	$(GO) vet $(PKGS)

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

rego-test: ## only the Rego _test.rego suite
	$(GO) test -count=1 -run TestRego ./policies/

build: ## static binary in bin/
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/extauthz ./cmd/extauthz

bench: ## Check-path benchmarks with allocations
	$(GO) test -run '^$$' -bench . -benchmem ./internal/...

FUZZ_TIME ?= 20s
fuzz: ## run every fuzz target for FUZZ_TIME each
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "$$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZ_TIME) $$pkg || exit 1; \
	  done; done
