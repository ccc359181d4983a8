# Tollgate. `make help` lists the targets.
SHELL := /bin/bash
GO    ?= go
BIN   := $(CURDIR)/.bin
BUF   := $(BIN)/buf
PLUGINS := $(BIN)/protoc-gen-go $(BIN)/protoc-gen-connect-go
# Go test flags; e.g. make test TESTFLAGS='-run Admin -v'
TESTFLAGS ?=

.PHONY: help
help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

.PHONY: deps
deps: ## install missing system packages (PostgreSQL, ClickHouse)
	@./scripts/deps.sh

# The code generators are pinned in tools/go.mod and built into .bin.
$(BUF) $(PLUGINS) &: tools/go.mod tools/go.sum
	cd tools && GOWORK=off GOBIN=$(BIN) $(GO) install tool

.PHONY: tools
tools: $(BUF) $(PLUGINS) ## build buf and the protoc plugins into .bin

.PHONY: gen
gen: tools ## regenerate gen/ from proto/
	rm -rf gen
	PATH=$(BIN):$$PATH $(BUF) generate

.PHONY: check-generate
check-generate: tools ## fail when gen/ is not what proto/ generates
	@tmp=$$(mktemp -d) && trap 'rm -rf $$tmp' EXIT && \
	PATH=$(BIN):$$PATH $(BUF) generate -o $$tmp && \
	if ! diff -r gen $$tmp/gen >/dev/null; then \
		echo "gen/ is stale: run 'make gen' and commit the result" >&2; diff -r gen $$tmp/gen | head -20 >&2; exit 1; \
	fi

.PHONY: lint
lint: tools ## buf lint, gofmt and go vet
	$(BUF) lint
	@unformatted=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './.data/*')); \
	if [ -n "$$unformatted" ]; then echo "not gofmt-formatted:" >&2; echo "$$unformatted" >&2; exit 1; fi
	$(GO) vet ./...

.PHONY: build
build: ## build bin/tollgate
	$(GO) build -o bin/tollgate ./services/tollgate

.PHONY: test
test: deps check-generate lint ## every test, with real NATS, PostgreSQL and ClickHouse
	$(GO) test -count=1 -timeout 12m $(TESTFLAGS) ./...

.PHONY: bench
bench: ## the Go benchmarks (see BENCHMARKS.md for the load scripts)
	$(GO) test -run '^$$' -bench . -benchmem ./...

.PHONY: dev
dev: deps build ## run the whole system: NATS embedded, PostgreSQL and ClickHouse under ./.data
	./bin/tollgate dev --data-dir .data
