"""Management routes: authenticate once, then forward to the owning service with the principal."""

from __future__ import annotations

import aiohttp
import orjson
from opentelemetry import propagate
from starlette.requests import Request
from starlette.responses import Response

from leaky_common.auth import INTERNAL_TOKEN_HEADER, PRINCIPAL_HEADER
from leaky_common.errors import NotFound, ServiceError, ServiceUnavailable, error_body
from lt_gateway.chat import api_key_from, request_id_from
from lt_gateway.quota_client import Denial, QuotaClient
from lt_gateway.settings import GatewaySettings

# First match wins; see docs/architecture.md.
ROUTE_PREFIXES: tuple[tuple[str, str], ...] = (
    ("/v1/admin/notifications", "notifier"),
    ("/v1/admin/purchases", "saga"),
    ("/v1/admin/", "quota"),
    ("/v1/users/", "quota"),
    ("/v1/approvals", "quota"),
    ("/api/v1/tokens/purchase", "saga"),
    ("/api/v1/tokens/", "quota"),
    ("/v1/purchases", "saga"),
    ("/v1/analytics/", "analytics"),
    ("/api/v1/analytics/", "analytics"),
)
_FORWARD_REQUEST_HEADERS = ("content-type", "idempotency-key", "accept", "x-session-id", "x-privacy-mode")
_FORWARD_RESPONSE_HEADERS = ("content-type", "location", "retry-after", "etag")


def owner_of(path: str) -> str | None:
    """Which service owns `path`, or None."""
    for prefix, owner in ROUTE_PREFIXES:
        base = prefix.rstrip("/")
        if path == base or path.startswith(base + "/"):
            return owner
    return None


class ManagementProxy:
    """Forwards management requests to their owners."""

    def __init__(self, settings: GatewaySettings, quota: QuotaClient) -> None:
        self._quota = quota
        self._internal_token = settings.internal_token
        self._upstreams = {
            "quota": settings.quota_url.rstrip("/"),
            "saga": settings.saga_url.rstrip("/"),
            "analytics": settings.analytics_url.rstrip("/"),
            "notifier": settings.notifier_url.rstrip("/"),
        }
        self._timeout = aiohttp.ClientTimeout(total=settings.internal_timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the connection pool."""
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64), timeout=self._timeout)

    async def close(self) -> None:
        """Close the pool."""
        if self._session is not None:
            await self._session.close()

    async def handle(self, request: Request) -> Response:
        """Authenticate and forward one request."""
        request_id = request_id_from(request)
        path = request.url.path
        try:
            owner = owner_of(path)
            if owner is None:
                raise NotFound(f"no route for {request.method} {path}", code="unknown_url")
            principal = await self._quota.authenticate(api_key_from(request))
            if isinstance(principal, Denial):
                return Response(
                    principal.body,
                    status_code=principal.status,
                    media_type="application/json",
                    headers={"x-request-id": request_id},
                )
            headers = {h: request.headers[h] for h in _FORWARD_REQUEST_HEADERS if h in request.headers}
            headers[PRINCIPAL_HEADER] = principal.header_value()
            headers[INTERNAL_TOKEN_HEADER] = self._internal_token
            headers["x-request-id"] = request_id
            propagate.inject(headers)
            url = self._upstreams[owner] + path
            assert self._session is not None
            try:
                async with self._session.request(
                    request.method,
                    url,
                    params=list(request.query_params.multi_items()),
                    data=await request.body(),
                    headers=headers,
                ) as resp:
                    body = await resp.read()
                    out = {h: resp.headers[h] for h in _FORWARD_RESPONSE_HEADERS if h in resp.headers}
                    out["x-request-id"] = request_id
                    return Response(body, status_code=resp.status, headers=out)
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise ServiceUnavailable(f"{owner} service unavailable", code=f"{owner}_unavailable") from exc
        except ServiceError as exc:
            return Response(
                orjson.dumps(exc.body()),
                status_code=exc.status,
                media_type="application/json",
                headers={"x-request-id": request_id, **exc.headers},
            )


__all__ = ["ROUTE_PREFIXES", "ManagementProxy", "error_body", "owner_of"]
