# syntax=docker/dockerfile:1
# One Dockerfile, one small image per process: `docker build --target quota -t leaky-tokens-quota .`
# Targets: gateway, quota, saga, analytics (the API and the faust worker), notifier, console, cli (`lt`), and devtools
# (the third-party fakes from libs/devinfra, for local stacks only; never deploy it).
#
# Build stages resolve from uv.lock and install ONE package's run-time dependencies (never the dev group,
# never libs/devinfra unless it is the package) as wheels into /app/.venv. The final stages start again from
# python:3.11-slim without pip, setuptools, wheel, uv or any compiler, copy only that venv, and run as a
# non-root user. deploy/compose/docker-compose.yml picks the target per service.

# ---------------------------------------------------------------- build
FROM python:3.11-slim AS build-base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.11 \
    UV_PROJECT_ENVIRONMENT=/app/.venv \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy
RUN pip install "uv==0.13.9"
WORKDIR /src
# Keep this list in step with [tool.uv.workspace] members (tests/deploy/test_compose.py checks it).
COPY pyproject.toml uv.lock ./
COPY libs/common/pyproject.toml libs/common/pyproject.toml
COPY libs/devinfra/pyproject.toml libs/devinfra/pyproject.toml
COPY services/gateway/pyproject.toml services/gateway/pyproject.toml
COPY services/quota/pyproject.toml services/quota/pyproject.toml
COPY services/purchase-saga/pyproject.toml services/purchase-saga/pyproject.toml
COPY services/analytics/pyproject.toml services/analytics/pyproject.toml
COPY services/notifier/pyproject.toml services/notifier/pyproject.toml
COPY libs/cli/pyproject.toml libs/cli/pyproject.toml
COPY services/console/pyproject.toml services/console/pyproject.toml

# One build stage per package; BuildKit builds only the stages a target needs. Each installs that package's
# dependencies first (a layer reused until a pyproject.toml or uv.lock changes), then copies only the sources
# it needs and installs the workspace members as wheels (--no-editable), so the final image needs no source tree.
FROM build-base AS build-gateway
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --no-install-workspace --package leaky-gateway
COPY libs/common/src libs/common/src
COPY services/gateway/src services/gateway/src
RUN --mount=type=cache,target=/root/.cache/uv uv sync --frozen --no-dev --no-editable --package leaky-gateway

FROM build-base AS build-quota
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --no-install-workspace --package leaky-quota
COPY libs/common/src libs/common/src
COPY services/quota/src services/quota/src
RUN --mount=type=cache,target=/root/.cache/uv uv sync --frozen --no-dev --no-editable --package leaky-quota

FROM build-base AS build-saga
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --no-install-workspace --package leaky-saga
COPY libs/common/src libs/common/src
COPY services/purchase-saga/src services/purchase-saga/src
RUN --mount=type=cache,target=/root/.cache/uv uv sync --frozen --no-dev --no-editable --package leaky-saga

FROM build-base AS build-analytics
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --no-install-workspace --package leaky-analytics
COPY libs/common/src libs/common/src
COPY services/analytics/src services/analytics/src
RUN --mount=type=cache,target=/root/.cache/uv uv sync --frozen --no-dev --no-editable --package leaky-analytics

FROM build-base AS build-notifier
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --no-install-workspace --package leaky-notifier
COPY libs/common/src libs/common/src
COPY services/notifier/src services/notifier/src
RUN --mount=type=cache,target=/root/.cache/uv uv sync --frozen --no-dev --no-editable --package leaky-notifier

# The bare leaky-devinfra: the fakes, without the `[infra]` launchers and pytest.
FROM build-base AS build-devtools
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --no-install-workspace --package leaky-devinfra
COPY libs/common/src libs/common/src
COPY libs/devinfra/src libs/devinfra/src
RUN --mount=type=cache,target=/root/.cache/uv uv sync --frozen --no-dev --no-editable --package leaky-devinfra

# `lt`, the command line (it needs no other workspace package).
FROM build-base AS build-cli
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --no-install-workspace --package leaky-cli
COPY libs/cli/src libs/cli/src
RUN --mount=type=cache,target=/root/.cache/uv uv sync --frozen --no-dev --no-editable --package leaky-cli

# The web console (it needs no other workspace package: it speaks the gateway's public API).
FROM build-base AS build-console
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable --no-install-workspace --package leaky-console
COPY services/console/src services/console/src
RUN --mount=type=cache,target=/root/.cache/uv uv sync --frozen --no-dev --no-editable --package leaky-console

# ---------------------------------------------------------------- run
FROM python:3.11-slim AS runtime
# No package manager in the final image: pip, setuptools and wheel go; uv was never here.
RUN python -m pip uninstall --yes --quiet pip setuptools wheel \
    && rm -rf /usr/local/lib/python3.11/ensurepip /usr/local/bin/pip* /root/.cache \
    && groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /home/app --create-home app \
    && install -d -o app -g app /var/lib/leaky-tokens
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH="/app/.venv/bin:${PATH}" \
    VIRTUAL_ENV=/app/.venv \
    HOME=/home/app \
    LT_HOST=0.0.0.0
# /app stays root-owned (read-only code); the user `app` (given by number, so Kubernetes' runAsNonRoot can
# verify it) gets a writable working directory for process state (e.g. the faust worker's data dir).
USER 10001:10001
WORKDIR /var/lib/leaky-tokens

FROM runtime AS gateway
COPY --from=build-gateway /app/.venv /app/.venv
EXPOSE 8080
CMD ["python", "-m", "lt_gateway"]

FROM runtime AS quota
COPY --from=build-quota /app/.venv /app/.venv
EXPOSE 8082
CMD ["python", "-m", "lt_quota"]

FROM runtime AS saga
COPY --from=build-saga /app/.venv /app/.venv
EXPOSE 8084
CMD ["python", "-m", "lt_saga"]

# The API (`python -m lt_analytics`, 8083) and the worker (`python -m lt_analytics.worker`) share this image.
FROM runtime AS analytics
COPY --from=build-analytics /app/.venv /app/.venv
EXPOSE 8083
CMD ["python", "-m", "lt_analytics"]

FROM runtime AS notifier
COPY --from=build-notifier /app/.venv /app/.venv
EXPOSE 8085
CMD ["python", "-m", "lt_notifier"]

FROM runtime AS console
COPY --from=build-console /app/.venv /app/.venv
EXPOSE 8088
CMD ["python", "-m", "lt_console"]

# Local stacks only: the fake payment provider (and the other third-party fakes).
FROM runtime AS devtools
COPY --from=build-devtools /app/.venv /app/.venv
EXPOSE 8086
CMD ["python", "-m", "leaky_devinfra.fakes.payments"]

# `docker run --rm -e LT_GATEWAY_URL -e LT_API_KEY leaky-tokens-cli quota`
FROM runtime AS cli
COPY --from=build-cli /app/.venv /app/.venv
ENTRYPOINT ["lt"]
