"""One error model for every service, rendered in OpenAI's shape.

Hierarchy:
    ServiceError (500, api_error)
    ├── InvalidRequest (400, invalid_request_error)
    ├── Unauthorized (401, authentication_error)
    ├── QuotaExceeded (402, insufficient_quota)
    ├── Forbidden (403, permission_error)
    ├── NotFound (404, not_found_error)
    ├── Conflict (409, conflict_error)
    ├── PayloadTooLarge (413, invalid_request_error)
    ├── RateLimited (429, rate_limit_error)
    ├── UpstreamError (502, upstream_error)
    ├── ServiceUnavailable (503, service_unavailable)
    └── UpstreamTimeout (504, timeout_error)
"""

from __future__ import annotations

import functools
import logging
from typing import Any, ClassVar

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

__all__ = [
    "Conflict",
    "Forbidden",
    "InvalidRequest",
    "NotFound",
    "PayloadTooLarge",
    "QuotaExceeded",
    "RateLimited",
    "ServiceError",
    "ServiceUnavailable",
    "Unauthorized",
    "UpstreamError",
    "UpstreamTimeout",
    "error_body",
    "error_response",
    "install_error_handlers",
    "store_unavailable",
]

logger = logging.getLogger(__name__)


class ServiceError(Exception):
    """An expected failure with its HTTP status and OpenAI error fields."""

    status: ClassVar[int] = 500
    type: ClassVar[str] = "api_error"
    default_code: ClassVar[str] = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code
        self.param = param
        self.headers = headers or {}
        self.extra = extra

    def body(self) -> dict[str, Any]:
        """The OpenAI-shaped JSON body."""
        return error_body(self.message, self.type, self.code, self.param, **self.extra)


class InvalidRequest(ServiceError):
    status = 400
    type = "invalid_request_error"
    default_code = "invalid_request"


class Unauthorized(ServiceError):
    status = 401
    type = "authentication_error"
    default_code = "invalid_api_key"


class QuotaExceeded(ServiceError):
    status = 402
    type = "insufficient_quota"
    default_code = "quota_exceeded"


class Forbidden(ServiceError):
    status = 403
    type = "permission_error"
    default_code = "forbidden"


class NotFound(ServiceError):
    status = 404
    type = "not_found_error"
    default_code = "not_found"


class Conflict(ServiceError):
    status = 409
    type = "conflict_error"
    default_code = "conflict"


class PayloadTooLarge(ServiceError):
    status = 413
    type = "invalid_request_error"
    default_code = "payload_too_large"


class RateLimited(ServiceError):
    status = 429
    type = "rate_limit_error"
    default_code = "rate_limited"


class UpstreamError(ServiceError):
    status = 502
    type = "upstream_error"
    default_code = "bad_gateway"


class ServiceUnavailable(ServiceError):
    status = 503
    type = "service_unavailable"
    default_code = "service_unavailable"


class UpstreamTimeout(ServiceError):
    status = 504
    type = "timeout_error"
    default_code = "gateway_timeout"


_STATUS_TYPES = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("authentication_error", "invalid_api_key"),
    402: ("insufficient_quota", "quota_exceeded"),
    403: ("permission_error", "forbidden"),
    404: ("not_found_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    409: ("conflict_error", "conflict"),
    413: ("invalid_request_error", "payload_too_large"),
    429: ("rate_limit_error", "rate_limited"),
}


def error_body(
    message: str, type_: str, code: str | None, param: str | None = None, **extra: Any
) -> dict[str, Any]:
    """Build `{"error": {"message", "type", "param", "code", ...extra}}`."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code, **extra}}


def error_response(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    """A JSON response for an error body."""
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


@functools.cache
def store_unavailable() -> tuple[type[BaseException], ...]:
    """A store this service needs is down or restarting (its connection refused, reset or closed
    mid-transaction): the request may succeed shortly, so it is a 503 with Retry-After, not a 500. Built on first
    use: the PostgreSQL and Redis clients are imported only by services that have met an error (redis-py costs a
    process 20 MB; the gateway uses neither)."""
    import asyncpg
    import redis.exceptions

    return (
        ConnectionError,
        TimeoutError,
        asyncpg.PostgresConnectionError,
        asyncpg.InterfaceError,
        asyncpg.exceptions.CannotConnectNowError,
        asyncpg.exceptions.TooManyConnectionsError,
        # A pooled connection PostgreSQL dropped while it was still reading the error of its end ("cannot
        # switch to state 15; another operation (2) is in progress"), seen when PostgreSQL is killed under load.
        asyncpg.exceptions.InternalClientError,
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
        # Redis Cluster: the slot's primary is down or failing over (a replica takes over shortly).
        redis.exceptions.ClusterDownError,
        redis.exceptions.TryAgainError,
        redis.exceptions.SlotNotCoveredError,
    )


def install_error_handlers(app: FastAPI) -> None:
    """Render every error, expected or not, in OpenAI's shape; never leak a stack trace."""

    async def on_service_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ServiceError)
        return error_response(exc.status, exc.body(), exc.headers)

    async def on_validation(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = exc.errors()
        first = errors[0] if errors else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
        param = ".".join(loc) or None
        message = (
            f"{param}: {first.get('msg', 'invalid')}" if param else str(first.get("msg", "invalid request"))
        )
        return error_response(400, error_body(message, "invalid_request_error", "invalid_request", param))

    async def on_http(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        type_, code = _STATUS_TYPES.get(exc.status_code, ("api_error", "error"))
        return error_response(
            exc.status_code, error_body(str(exc.detail), type_, code), dict(exc.headers or {})
        )

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        if isinstance(exc, store_unavailable()):
            logger.warning("store unavailable on %s %s: %r", request.method, request.url.path, exc)
            unavailable = ServiceUnavailable("a store this service needs is unavailable; retry shortly")
            return error_response(503, unavailable.body(), {"Retry-After": "1"})
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, error_body("internal error", "api_error", "internal_error"))

    app.add_exception_handler(ServiceError, on_service_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)
