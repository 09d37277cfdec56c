"""FastAPI glue for every internal API: who is calling, and an OpenAPI document that tells the truth.

The gateway authenticates each public request and calls the owner with a signed assertion in `X-LT-Assertion`
(see `leaky_common.auth`). These dependencies read it as an OpenAPI security scheme, so each service's document
names its auth, and verify it with `app.state.verifier` (built from the settings' public keys).

`install_openapi` replaces FastAPI's phantom 422 (validation errors are rendered as OpenAI-shaped 400s by
`leaky_common.errors`) with the error responses a route really sends, all in the one `ErrorBody` shape.

`service_app` is the skeleton every service's app factory starts from: settings on `app.state`, the error
handlers, that OpenAPI document, request metrics, an optional hot route, and `/health`, `/ready`, `/metrics`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, Security
from fastapi.security import APIKeyHeader
from fastapi.telemetry import TelemetryConfig
from pydantic import BaseModel
from starlette.middleware import Middleware
from starlette.responses import Response

from leaky_common.auth import AssertionVerifier, Principal, refuse_if_blocked
from leaky_common.errors import install_error_handlers
from leaky_common.guard import RequestGuard
from leaky_common.observability import MetricsMiddleware, add_ops_routes
from leaky_common.serve import HotRoute, trim_heap, trim_when_quiet
from leaky_common.settings import ServiceSettings

__all__ = [
    "AdminPrincipal",
    "CurrentPrincipal",
    "ErrorBody",
    "ErrorDetail",
    "HotEndpoint",
    "InternalCaller",
    "Lifespan",
    "ReadinessCheck",
    "admin_principal",
    "current_principal",
    "error_responses",
    "install_openapi",
    "require_internal",
    "service_app",
]

_assertion_header = APIKeyHeader(
    name="X-LT-Assertion",
    scheme_name="InternalAssertion",
    description=(
        "A signed, short-lived assertion from the gateway (EdDSA JWT, audience this service): the caller's "
        "principal on user routes, none on internal routes. See docs/security.md."
    ),
    auto_error=False,
)
AssertionHeader = Annotated[str | None, Security(_assertion_header)]


def _verifier(request: Request) -> AssertionVerifier:
    verifier: AssertionVerifier = request.app.state.verifier
    return verifier


async def current_principal(request: Request, assertion: AssertionHeader = None) -> Principal:
    """The caller, from the gateway's signed assertion (401 without a valid one); a blocked caller changes
    nothing."""
    found = _verifier(request).principal(assertion)
    refuse_if_blocked(found, request.method)
    return found


async def admin_principal(request: Request, assertion: AssertionHeader = None) -> Principal:
    """The caller, who must be an admin (401 without a valid assertion, 403 for a non-admin); a blocked caller
    or a restricted key changes nothing."""
    found = _verifier(request).principal(assertion, admin=True)
    refuse_if_blocked(found, request.method, admin=True)
    return found


async def require_internal(request: Request, assertion: AssertionHeader = None) -> None:
    """Only the gateway (or another internal service) may call: 401 without a valid caller assertion."""
    _verifier(request).caller(assertion)


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]
AdminPrincipal = Annotated[Principal, Depends(admin_principal)]
InternalCaller = Depends(require_internal)


class ErrorDetail(BaseModel):
    """OpenAI's error fields; some errors add more (e.g. the cap that ran out on a 402)."""

    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    """Every 4xx and 5xx body: `{"error": {"message", "type", "param", "code"}}`."""

    error: ErrorDetail


_DESCRIPTIONS = {
    400: "Invalid request (bad JSON, a field out of range, a rule broken)",
    401: "Missing or invalid credentials",
    402: "Not enough quota",
    403: "Not allowed for this caller",
    404: "Not found (or not visible to this caller)",
    409: "Conflicts with the current state",
    413: "Body too large",
    429: "Rate limited",
    503: "A dependency is unavailable",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route or router: each status documented with the `ErrorBody` shape."""
    return {s: {"model": ErrorBody, "description": _DESCRIPTIONS.get(s, "Error")} for s in statuses}


def _error_ref(status: int) -> dict[str, Any]:
    return {
        "description": _DESCRIPTIONS.get(status, "Error"),
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    }


def _tidy_operation(operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    if responses.pop("422", None) is not None:
        responses.setdefault("400", _error_ref(400))
    if operation.get("security"):
        responses.setdefault("401", _error_ref(401))


def _tidy(schema: dict[str, Any]) -> dict[str, Any]:
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            if isinstance(operation, dict) and "responses" in operation:
                _tidy_operation(operation)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    error_body = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, definition in {**error_body.pop("$defs", {}), "ErrorBody": error_body}.items():
        components.setdefault(name, definition)
    return schema


def install_openapi(app: FastAPI) -> None:
    """Serve an OpenAPI document without phantom 422s, with 400/401 in the `ErrorBody` shape where sent."""

    build = app.openapi  # FastAPI's own document, with every app setting; it caches on app.openapi_schema

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _tidy(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


# Probes and scrapes are not traced; one request span per request (FastAPI's per-dependency and per-endpoint
# operation spans would double the cost of every traced request for little insight).
UNTRACED_PATHS = frozenset({"/health", "/ready", "/metrics"})
# FastAPI's OpenTelemetry metrics and logs stay off (Prometheus has the metrics, the JSON logs go to stdout): with
# them on, every request asked the global meter and logger providers whether they were configured.
TELEMETRY: TelemetryConfig = {
    "exclude": lambda scope: scope.get("path") in UNTRACED_PATHS,
    "operation_spans": False,
    "metrics": False,
    "logs": False,
}

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]
ReadinessCheck = Callable[[FastAPI], Awaitable[dict[str, bool]]]
HotEndpoint = Callable[[Request], Awaitable[Response]]


def _trimmed(lifespan: Lifespan, interval_s: float) -> Lifespan:
    """`lifespan`, with the heap trimmed once its start-up is over (`trim_heap`), and after each burst of work
    while it runs (`trim_when_quiet`, every `interval_s`; 0: only after start-up)."""

    @asynccontextmanager
    async def run(app: FastAPI) -> AsyncIterator[None]:
        async with lifespan(app):
            trim_heap()
            trimmer = asyncio.create_task(trim_when_quiet(interval_s)) if interval_s > 0 else None
            try:
                yield
            finally:
                if trimmer is not None:
                    trimmer.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await trimmer

    return run


def service_app(
    settings: ServiceSettings,
    *,
    title: str,
    lifespan: Lifespan,
    ready: ReadinessCheck,
    description: str = "",
    hot_route: tuple[str, HotEndpoint] | list[tuple[str, HotEndpoint]] | None = None,
    service: str | None = None,
    middleware: Sequence[Middleware] = (),
) -> FastAPI:
    """A service's FastAPI app with the shared skeleton; the caller adds its routers.

    `ready(app)` reports each dependency for `/ready`; `hot_route` is `(path, endpoint)` (or a list of them)
    for POST endpoints served without FastAPI's routing layers (their documented routes stay in a router).
    Request metrics wrap the hot routes too. `middleware` wraps everything but the guard.
    """
    app = FastAPI(
        title=title,
        version="0.1.0",
        description=description,
        lifespan=_trimmed(lifespan, settings.heap_trim_interval_s),
        telemetry=TELEMETRY,
    )
    app.state.settings = settings
    app.state.verifier = AssertionVerifier(settings.internal_public_keys, settings.audience)
    install_error_handlers(app)
    install_openapi(app)
    for path, endpoint in [hot_route] if isinstance(hot_route, tuple) else hot_route or []:
        app.add_middleware(HotRoute, method="POST", path=path, endpoint=endpoint)
    name = service or settings.service_name
    app.add_middleware(MetricsMiddleware, service=name)
    for extra in reversed(middleware):  # the first listed ends up outermost (inside the guard)
        app.add_middleware(extra.cls, *extra.args, **extra.kwargs)
    # Outermost: security headers on every answer, the body limit while reading, the JSON nesting limit.
    app.add_middleware(
        RequestGuard,
        max_body_bytes=settings.max_body_bytes,
        max_json_depth=settings.max_json_depth if settings.guard_checks_json else None,
    )

    async def readiness() -> dict[str, bool]:
        return await ready(app)

    token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
    add_ops_routes(app, name, readiness, token)
    return app
