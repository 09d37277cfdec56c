"""FastAPI glue for every internal API: who is calling, and an OpenAPI document that tells the truth.

The gateway authenticates each public request and forwards the principal in `X-LT-Principal` with the shared
`X-LT-Internal-Token` (see `leaky_common.auth`). These dependencies read both as OpenAPI security schemes, so
each service's document names its auth, and check them against `app.state.settings.internal_token`.

`install_openapi` replaces FastAPI's phantom 422 (validation errors are rendered as OpenAI-shaped 400s by
`leaky_common.errors`) with the error responses a route really sends, all in the one `ErrorBody` shape.

`service_app` is the skeleton every service's app factory starts from: settings on `app.state`, the error
handlers, that OpenAPI document, request metrics, an optional hot route, and `/health`, `/ready`, `/metrics`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, Security
from fastapi.security import APIKeyHeader
from pydantic import BaseModel
from starlette.responses import Response

from leaky_common.auth import Principal, principal_from_headers, refuse_if_blocked, token_matches
from leaky_common.errors import Unauthorized, install_error_handlers
from leaky_common.observability import MetricsMiddleware, add_ops_routes
from leaky_common.serve import HotRoute
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

_principal_header = APIKeyHeader(
    name="X-LT-Principal",
    scheme_name="Principal",
    description="The caller as the gateway authenticated it (JSON); trusted only with the internal token.",
    auto_error=False,
)
_internal_token_header = APIKeyHeader(
    name="X-LT-Internal-Token",
    scheme_name="InternalToken",
    description="The shared secret of the gateway and the internal services.",
    auto_error=False,
)
PrincipalHeader = Annotated[str | None, Security(_principal_header)]
InternalTokenHeader = Annotated[str | None, Security(_internal_token_header)]


def _internal_token(request: Request) -> str:
    token: str = request.app.state.settings.internal_token
    return token


async def current_principal(
    request: Request, principal: PrincipalHeader = None, token: InternalTokenHeader = None
) -> Principal:
    """The caller, from the gateway's internal headers (401 without them); a blocked caller changes nothing."""
    found = principal_from_headers(principal, token, _internal_token(request))
    refuse_if_blocked(found, request.method)
    return found


async def admin_principal(
    request: Request, principal: PrincipalHeader = None, token: InternalTokenHeader = None
) -> Principal:
    """The caller, who must be an admin (401 without credentials, 403 for a non-admin); a blocked caller or a
    restricted key changes nothing."""
    found = principal_from_headers(principal, token, _internal_token(request), admin=True)
    refuse_if_blocked(found, request.method, admin=True)
    return found


async def require_internal(request: Request, token: InternalTokenHeader = None) -> None:
    """Only the gateway (or another internal service) may call: 401 without the internal token."""
    if not token_matches(token, _internal_token(request)):
        raise Unauthorized("missing or invalid internal token", code="invalid_internal_token")


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


Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[None]]
ReadinessCheck = Callable[[FastAPI], Awaitable[dict[str, bool]]]
HotEndpoint = Callable[[Request], Awaitable[Response]]


def service_app(
    settings: ServiceSettings,
    *,
    title: str,
    lifespan: Lifespan,
    ready: ReadinessCheck,
    description: str = "",
    hot_route: tuple[str, HotEndpoint] | list[tuple[str, HotEndpoint]] | None = None,
    service: str | None = None,
) -> FastAPI:
    """A service's FastAPI app with the shared skeleton; the caller adds its routers.

    `ready(app)` reports each dependency for `/ready`; `hot_route` is `(path, endpoint)` (or a list of them)
    for POST endpoints served without FastAPI's routing layers (their documented routes stay in a router).
    Request metrics wrap the hot routes too.
    """
    app = FastAPI(title=title, version="0.1.0", description=description, lifespan=lifespan)
    app.state.settings = settings  # the principal dependencies read the internal token from here
    install_error_handlers(app)
    install_openapi(app)
    for path, endpoint in [hot_route] if isinstance(hot_route, tuple) else hot_route or []:
        app.add_middleware(HotRoute, method="POST", path=path, endpoint=endpoint)
    name = service or settings.service_name
    app.add_middleware(MetricsMiddleware, service=name)

    async def readiness() -> dict[str, bool]:
        return await ready(app)

    add_ops_routes(app, name, readiness)
    return app
