# Leaky Tokens — developer entry points. Needs only Python >= 3.11 and make; uv is installed if missing.
SHELL := /bin/bash
PYTHON ?= python3
UV := $(or $(shell command -v uv 2>/dev/null),$(wildcard $(HOME)/.local/bin/uv),$(CURDIR)/.tools/bin/uv)
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON := $(shell $(PYTHON) -c 'import sys; print(sys.executable)')
RUN := $(UV) run --frozen --no-sync
PYTEST_ARGS ?=

.PHONY: help sync up down status test check lint format typecheck contracts unit integration e2e bench clean

help:
	@echo "make up        start the whole stack locally (no Docker); writes .run/stack.env"
	@echo "make down      stop everything 'make up' started"
	@echo "make test      lint, types, import contracts and every test (unit, integration, e2e)"
	@echo "make check     lint, types, contracts and the fast unit tests"
	@echo "make bench     hot-path benchmark"

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

sync: .venv/.synced

up: sync
	$(RUN) python deploy/local/stack.py up

down:
	@if [ -x .venv/bin/python ]; then .venv/bin/python deploy/local/stack.py down; else echo "nothing to stop"; fi

status: sync
	$(RUN) python deploy/local/stack.py status

lint: sync
	$(RUN) ruff format --check .
	$(RUN) ruff check .

format: sync
	$(RUN) ruff format .
	$(RUN) ruff check --fix .

typecheck: sync
	$(RUN) mypy libs/*/src services/*/src libs/*/tests services/*/tests tests

contracts: sync
	$(RUN) lint-imports

unit: sync
	$(RUN) pytest -m "not integration and not e2e" $(PYTEST_ARGS)

integration: sync
	$(RUN) pytest -m integration $(PYTEST_ARGS)

e2e: sync
	$(RUN) pytest -m e2e $(PYTEST_ARGS)

check: lint typecheck contracts unit

test: lint typecheck contracts
	$(RUN) pytest $(PYTEST_ARGS)

bench: sync
	$(RUN) python bench/hotpath.py

clean: down
	rm -rf .run .tools .venv .mypy_cache .ruff_cache
