# Leaky Tokens — developer entry points. Needs only Python >= 3.11 and make; uv is installed if missing.
SHELL := /bin/bash
PYTHON ?= python3
UV := $(or $(shell command -v uv 2>/dev/null),$(wildcard $(HOME)/.local/bin/uv),$(CURDIR)/.tools/bin/uv)
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON := $(shell $(PYTHON) -c 'import sys; print(sys.executable)')
RUN := $(UV) run --frozen --no-sync
PYTEST_ARGS ?=

.PHONY: help sync up down status observe unfreeze-admin test check lint format typecheck contracts unit integration e2e bench chaos docs clean

# Every target documents itself with a `## text` comment on its rule line; `make help` lists them.
help: ## list every target
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-z0-9_-]*:.*## / {printf "make %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# uv into a private venv; where Python has no venv module (Debian without python3-venv), pip --user.
$(CURDIR)/.tools/bin/uv:
	@if $(PYTHON) -m venv $(CURDIR)/.tools 2>/dev/null; then \
		$(CURDIR)/.tools/bin/pip install --quiet uv; \
	else \
		$(PYTHON) -m pip install --quiet --user uv || $(PYTHON) -m pip install --quiet --user --break-system-packages uv; \
		mkdir -p $(CURDIR)/.tools/bin && ln -sf $(HOME)/.local/bin/uv $(CURDIR)/.tools/bin/uv; \
	fi

.venv/.synced: uv.lock pyproject.toml $(wildcard libs/*/pyproject.toml) $(wildcard services/*/pyproject.toml) | $(UV)
	$(UV) sync --frozen
	@touch $@

sync: .venv/.synced ## install the workspace into .venv (uv sync --frozen)

up: sync ## start the whole stack locally (no Docker); writes .run/stack.env
	$(RUN) python deploy/local/stack.py up

down: ## stop everything 'make up' started
	@if [ -x .venv/bin/python ]; then .venv/bin/python deploy/local/stack.py down; else echo "nothing to stop"; fi

observe: sync ## start a Prometheus (the `prometheus` binary on PATH) scraping the `make up` stack, with the alert rules
	$(RUN) python deploy/local/stack.py observe

unfreeze-admin: sync ## break-glass: lift every freeze on the bootstrap admin of the stack in .run
	$(RUN) python deploy/local/stack.py unfreeze-admin

status: sync ## show what the local stack runs
	$(RUN) python deploy/local/stack.py status

lint: sync ## ruff format --check and ruff check
	$(RUN) ruff format --check .
	$(RUN) ruff check .

format: sync ## ruff format and ruff check --fix
	$(RUN) ruff format .
	$(RUN) ruff check --fix .

typecheck: sync ## mypy (strict) on every package and the tests
	$(RUN) mypy libs/*/src services/*/src libs/*/tests services/*/tests tests scripts

contracts: sync ## import-linter contracts (lint-imports)
	$(RUN) lint-imports

unit: sync ## unit tests (no I/O)
	$(RUN) pytest -m "not integration and not e2e" $(PYTEST_ARGS)

integration: sync ## integration tests (real PostgreSQL, Redis and broker on free ports)
	$(RUN) pytest -m integration $(PYTEST_ARGS)

e2e: sync ## end-to-end tests against a whole stack
	$(RUN) pytest -m e2e $(PYTEST_ARGS)

check: lint typecheck contracts unit ## lint, types, contracts and the fast unit tests

# Tests run on TEST_WORKERS pytest-xdist workers, each with its own broker, PostgreSQL and Redis; a module's tests,
# and all tests of one stack fixture, stay on one worker (leaky_devinfra.pytest_plugin). TEST_WORKERS=0: in-process.
TEST_WORKERS ?= 2

test: lint typecheck contracts ## lint, types, import contracts and every test (unit, integration, e2e)
	$(RUN) pytest -n $(TEST_WORKERS) --dist loadgroup --durations=25 $(PYTEST_ARGS)

bench: sync ## hot-path benchmark: direct vs the governed gateway vs Portkey and LiteLLM (BENCH_ARGS)
	$(RUN) python bench/hotpath.py $(BENCH_ARGS)

chaos: sync ## chaos run: every component killed and restarted under load, then the money invariants (CHAOS_ARGS)
	$(RUN) python bench/chaos.py $(CHAOS_ARGS)

docs: sync ## regenerate docs/configuration.md and the gateway's merged OpenAPI part from the code
	$(RUN) python scripts/gen_config_reference.py --write
	$(RUN) python scripts/gen_public_openapi.py --write

clean: down ## stop the stack and delete .run, .tools, .venv and tool caches
	rm -rf .run .tools .venv .mypy_cache .ruff_cache
