# payplane: every developer and CI entry point. `make help` lists them.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
APT_PACKAGES := postgresql-15 postgresql-client-15 redis-server maven openjdk-17-jdk-headless gcc libc6-dev iproute2
PY_SOURCES := runtime operator tests
# SPIRE Server API stubs for the operator, generated at build time (never committed); see operator/tools/gen_spire_api.py
SPIRE_API_SDK := v1.15.2

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

.PHONY: run
run: setup ## the main job: infrastructure, operator, process kubelet, the example rail Ready, payments flowing (Ctrl-C stops)
	$(BIN)/payplane up

.PHONY: test
test: setup check infra-up ## the whole test suite: lint, types, layers, unit, integration, e2e
	$(BIN)/pytest tests

.PHONY: setup
setup: system-deps $(VENV)/.synced proto proto-runtime ## install system packages (Debian), the locked Python environment, generated stubs

.PHONY: system-deps
system-deps: ## Debian packages the local infrastructure needs (installed only when missing)
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi
	@command -v go >/dev/null || { echo "Go >= 1.26.6 is required to build SPIRE and Kubernetes (not found on PATH)"; exit 1; }

$(VENV)/.synced: pyproject.toml uv.lock
	@command -v uv >/dev/null || python3 -m pip install -q "uv==$(UV_VERSION)"
	uv sync --frozen --python python3.11
	@touch $@

.PHONY: proto
proto: $(VENV)/.synced ## generate the operator's SPIRE Server API stubs from spire-api-sdk (cached; instant when current)
	$(BIN)/python operator/tools/gen_spire_api.py --version $(SPIRE_API_SDK) --out operator/src

.PHONY: proto-runtime
proto-runtime: $(VENV)/.synced ## generate payplane's own gRPC code from runtime/proto (instant when current)
	$(BIN)/python runtime/tools/gen_proto.py --proto runtime/proto --out runtime/src

.PHONY: openapi
openapi: $(VENV)/.synced proto-runtime ## write the gateway's OpenAPI 3.1 document (generated from code) to docs/openapi.json
	$(BIN)/python -m payplane.gateway.schema > docs/openapi.json

.PHONY: check
check: $(VENV)/.synced proto proto-runtime ## ruff (lint + format), mypy --strict, import-linter layer contracts
	$(BIN)/ruff check $(PY_SOURCES)
	$(BIN)/ruff format --check $(PY_SOURCES)
	$(BIN)/mypy
	$(BIN)/lint-imports

.PHONY: fmt
fmt: $(VENV)/.synced ## format and auto-fix
	$(BIN)/ruff format $(PY_SOURCES)
	$(BIN)/ruff check --fix $(PY_SOURCES)

.PHONY: infra-up
infra-up: setup ## build (cached) and start PostgreSQL, Redis, Kafka, Kubernetes API, SPIRE on loopback
	$(BIN)/payplane infra up

.PHONY: infra-down
infra-down: ## stop what infra-up started
	$(BIN)/payplane infra down

.PHONY: test-unit
test-unit: $(VENV)/.synced proto proto-runtime ## unit tier only (no infrastructure)
	$(BIN)/pytest tests/unit

.PHONY: test-integration
test-integration: infra-up ## integration tier (real infrastructure)
	$(BIN)/pytest tests/integration

.PHONY: bench
bench: bench-ledger bench-operator bench-payments ## every benchmark (figures and how to read them: docs/benchmarks.md)

.PHONY: bench-ledger
bench-ledger: infra-up ## ledger writer throughput: batch 1/100/1000/2000, uniform and hot account, relay, per-transfer baseline
	$(BIN)/python -m tests.bench.ledger_bench --transfers 50000 --patterns uniform hot --history 1000000 \
	  --batches 1 100 1000 2000 --modes writer relay set-based per-transfer

.PHONY: bench-payments
bench-payments: infra-up ## end to end through gateway, worker and ledger: payments/s accepted and settled, latencies at max and half rate
	$(BIN)/python -m tests.bench.payments_bench --duration-s 20 --concurrency 128 --writers 1 --workers 1 --gateways 1

.PHONY: bench-operator
bench-operator: infra-up ## operator: time from kubectl apply to Ready (rail + 2 shards), memory with 100 rails
	$(BIN)/python -m tests.bench.operator_bench --ready-runs 10 --memory-rails 100
