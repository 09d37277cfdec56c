# syntax=docker/dockerfile:1
# One image for every Leaky Tokens process; docker-compose picks the command per service
# (see docs/architecture.md and deploy/compose/docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy

RUN pip install "uv==0.13.9"

WORKDIR /app

# 1) Dependencies only, from the lockfile: this layer is reused until a pyproject.toml or uv.lock changes.
#    Keep this list in step with [tool.uv.workspace] members (tests/deploy/test_compose.py checks it).
COPY pyproject.toml uv.lock ./
COPY libs/common/pyproject.toml libs/common/pyproject.toml
COPY services/gateway/pyproject.toml services/gateway/pyproject.toml
COPY services/quota/pyproject.toml services/quota/pyproject.toml
COPY services/purchase-saga/pyproject.toml services/purchase-saga/pyproject.toml
COPY services/analytics/pyproject.toml services/analytics/pyproject.toml
COPY services/notifier/pyproject.toml services/notifier/pyproject.toml
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-workspace

# 2) Sources, then install the workspace members themselves.
COPY libs/common/src libs/common/src
COPY services/gateway/src services/gateway/src
COPY services/quota/src services/quota/src
COPY services/purchase-saga/src services/purchase-saga/src
COPY services/analytics/src services/analytics/src
COPY services/notifier/src services/notifier/src
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev \
    && python -m compileall -q libs/common/src services/*/src

# Non-root runtime user. /app stays root-owned (read-only code); the user gets a writable
# working directory for process state (e.g. the faust worker's data dir).
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /home/app --create-home app \
    && install -d -o app -g app /var/lib/leaky-tokens

ENV PATH="/app/.venv/bin:${PATH}" \
    VIRTUAL_ENV=/app/.venv \
    HOME=/home/app \
    LT_HOST=0.0.0.0

USER app
WORKDIR /var/lib/leaky-tokens

EXPOSE 8080 8082 8083 8084 8085 8086

# No default service: compose (or `docker run IMAGE python -m lt_gateway`) chooses the process.
CMD ["python", "-m", "lt_gateway"]
