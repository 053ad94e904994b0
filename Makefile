# Tribune: one command runs the platform locally (no Docker), one runs the tests.
# Local runners live in deploy/local (package tribune_devstack); see its README.md.

SHELL := /bin/bash
.DEFAULT_GOAL := help

# uv: the one on PATH, else a pinned copy the Makefile installs itself from PyPI into
# .tools/uv (needs only python3), so a bare machine with python3, a JDK and Maven suffices.
UV_VERSION := 0.13.9
UV_HOME    := $(CURDIR)/.tools/uv
UV         ?= $(or $(shell command -v uv 2>/dev/null),$(UV_HOME)/bin/uv)
DEVSTACK   := $(UV) run --frozen python -m tribune_devstack

.PHONY: help check-uv sync fetch-kafka fetch-promtool infra-up infra-down up down status logs lint test chaos asyncapi openapi kafka-acls bench

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

check-uv: ## install uv (pinned, from PyPI) into .tools/uv if there is none
	@command -v $(UV) >/dev/null 2>&1 || { \
	  echo "uv not found: installing uv==$(UV_VERSION) into $(UV_HOME) (from PyPI)"; \
	  command -v python3 >/dev/null 2>&1 || { echo "python3 not found: install Python 3.11+" >&2; exit 1; }; \
	  python3 -m venv "$(UV_HOME)" && "$(UV_HOME)/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)" \
	    || { echo "could not install uv==$(UV_VERSION) into $(UV_HOME)" >&2; exit 1; }; }

# --- environment -----------------------------------------------------------------------------

sync: | check-uv ## install the locked dependencies into .venv
	$(UV) sync --frozen

fetch-kafka: | check-uv ## fetch the Kafka broker jars with mvn (cached after the first time)
	$(DEVSTACK) fetch

# promtool runs the alert rules' unit tests (deploy/prometheus/alerts_test.yml). It is
# built from the Go module proxy when Go is installed (about 7 min on 2 CPUs, once; cached);
# without Go those tests say so and skip, except in CI (.ci/run), where they must run.
PROMTOOL_VERSION := v0.316.0
PROMTOOL_DIR     := $(HOME)/.cache/tribune/promtool-$(PROMTOOL_VERSION)
fetch-promtool: ## build promtool (alert rule tests) with Go if Go is installed (cached)
	@if [ -x "$(PROMTOOL_DIR)/promtool" ]; then :; \
	elif command -v go >/dev/null 2>&1; then \
	  echo "building promtool $(PROMTOOL_VERSION) into $(PROMTOOL_DIR) (once)"; \
	  GOBIN="$(PROMTOOL_DIR)" GOFLAGS=-modcacherw go install github.com/prometheus/prometheus/cmd/promtool@$(PROMTOOL_VERSION); \
	else echo "go not found: the alert rule unit tests (promtool) will be skipped"; fi

# --- local stack -----------------------------------------------------------------------------

infra-up: | check-uv ## start (or reuse) Kafka, the store and the SMTP sink
	$(DEVSTACK) infra-up

infra-down: | check-uv ## stop Kafka, the store and the SMTP sink
	$(DEVSTACK) infra-down

up: sync ## run the whole platform: infra + every service API and worker
	$(DEVSTACK) up

down: | check-uv ## stop the services, then the infra
	$(DEVSTACK) down

status: | check-uv ## processes, pids, ports, readiness
	$(DEVSTACK) status

logs: | check-uv ## follow every log, prefixed by process name
	$(DEVSTACK) logs

# --- quality and tests -----------------------------------------------------------------------

lint: | check-uv ## ruff, then mypy (what it checks: [tool.mypy] in pyproject.toml)
	$(UV) run --frozen ruff check .
	$(UV) run --frozen mypy

test: sync fetch-kafka fetch-promtool ## run the test suite
	TRIBUNE_PROMTOOL="$(PROMTOOL_DIR)/promtool" $(UV) run --frozen pytest

# Resilience: broker restarts, workers killed, the store paused, on a platform of its own;
# prints the recovery times. Not in `make test` (README, Operations > Resilience).
chaos: sync fetch-kafka ## run the resilience tests (tests/chaos) and print recovery times
	TRIBUNE_CHAOS=1 $(UV) run --frozen pytest -rA tests/chaos

asyncapi: | check-uv ## regenerate docs/asyncapi.json from the event contracts
	$(UV) run --frozen python -m tribune_shared.events.asyncapi > docs/asyncapi.json

openapi: | check-uv ## regenerate the services' OpenAPI parts the gateway publishes (gateway/openapi_services.json)
	$(UV) run --frozen python -m tribune_devstack.openapi --write

kafka-acls: | check-uv ## regenerate the Kafka ACLs of each service from the topic registry
	$(UV) run --frozen python -m tribune_shared.events.acls > deploy/compose/kafka/acls.sh
	$(UV) run --frozen python -m tribune_shared.events.acls --format strimzi > deploy/kubernetes/strimzi/kafka-users.yaml
	$(UV) run --frozen python -m tribune_shared.events.acls --format md > docs/kafka-acls.md

bench: sync fetch-kafka ## run every benchmark in bench/ (each starts what it needs, prints its figures)
	@set -e; for script in bench/*.py; do \
	  echo "== $$script"; $(UV) run --frozen python $$script; \
	done
