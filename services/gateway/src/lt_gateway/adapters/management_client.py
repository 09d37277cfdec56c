"""The HTTP client of the management proxy: one pooled session to the services that own management routes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp
from yarl import URL

from leaky_common.client_spans import http_client_spans
from leaky_common.errors import ServiceUnavailable
from leaky_common.settings import CLIENT_KEEPALIVE_S
from lt_gateway.settings import GatewaySettings

_FORWARD_RESPONSE_HEADERS = ("content-type", "location", "retry-after", "etag")
# The console's pages also set cookies, caching and security policy, and steer htmx.
_CONSOLE_RESPONSE_HEADERS = (
    "content-type", "location", "set-cookie", "cache-control", "hx-redirect", "hx-refresh", "hx-trigger",
    "content-security-policy", "x-content-type-options", "referrer-policy", "x-frame-options", "etag",
    "last-modified",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Forwarded:
    """The owner's answer: status, body and the response headers passed back to the client."""

    status: int
    body: bytes
    headers: dict[str, str]


class ManagementClient:
    """Sends a management request to its owner (quota, saga, analytics or notifier)."""

    def __init__(self, settings: GatewaySettings) -> None:
        self._upstreams = {
            "quota": settings.quota_url.rstrip("/"),
            "saga": settings.saga_url.rstrip("/"),
            "analytics": settings.analytics_url.rstrip("/"),
            "notifier": settings.notifier_url.rstrip("/"),
        }
        self._console = settings.console_url.rstrip("/")
        self._timeout = aiohttp.ClientTimeout(total=settings.internal_timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the connection pool."""
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=64, keepalive_timeout=CLIENT_KEEPALIVE_S),
            timeout=self._timeout,
            middlewares=(http_client_spans(),),
        )

    async def close(self) -> None:
        """Close the pool."""
        if self._session is not None:
            await self._session.close()

    async def send(
        self,
        owner: str,
        method: str,
        path: str,
        params: Sequence[tuple[str, str]],
        body: bytes,
        headers: dict[str, str],
    ) -> Forwarded:
        """One request to `owner` (`path` already percent-encoded and checked); 503 if it cannot be reached."""
        assert self._session is not None
        url = URL(self._upstreams[owner] + path, encoded=True)
        try:
            async with self._session.request(
                method, url, params=list(params), data=body, headers=headers
            ) as resp:
                answer = await resp.read()
                out = {h: resp.headers[h] for h in _FORWARD_RESPONSE_HEADERS if h in resp.headers}
                return Forwarded(resp.status, answer, out)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ServiceUnavailable(f"{owner} service unavailable", code=f"{owner}_unavailable") from exc

    async def send_console(
        self, method: str, path: str, query: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, bytes, list[tuple[str, str]]]:
        """One request to the web console (`path` and `query` already checked); 503 if it cannot be reached."""
        assert self._session is not None
        url = URL(self._console + path + (f"?{query}" if query else ""), encoded=True)
        try:
            async with self._session.request(
                method, url, data=body, headers=headers, allow_redirects=False
            ) as resp:
                answer = await resp.read()
                out = [(k, v) for k, v in resp.headers.items() if k.lower() in _CONSOLE_RESPONSE_HEADERS]
                return resp.status, answer, out
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ServiceUnavailable("console service unavailable", code="console_unavailable") from exc
