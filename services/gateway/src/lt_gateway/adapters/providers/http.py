"""The upstream HTTP client: one pooled keep-alive session, timeouts, retries with backoff, error mapping.

Upstream failures become gateway errors: timeouts 504, connection failures and upstream 429/503 (after
retries) 503, other upstream 5xx and upstream auth failures 502; an upstream 400/404/422 is the client's
request at fault and is returned as a 400 with the provider's message.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import aiohttp
import orjson

from leaky_common.client_spans import http_client_spans
from leaky_common.errors import (
    InvalidRequest,
    ServiceError,
    ServiceUnavailable,
    UpstreamError,
    UpstreamTimeout,
)
from lt_gateway.domain.models import ModelSpec

logger = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
# Gateway statuses after which another deployment (a fallback) may be tried.
FALLBACK_STATUS = frozenset({502, 503, 504})
_MAX_RETRY_AFTER_S = 10.0


def upstream_message(body: bytes) -> str:
    """The error message inside a provider's error body (OpenAI, Anthropic and Gemini all use error.message)."""
    try:
        data = orjson.loads(body)
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:500]
        if isinstance(err, str):
            return err[:500]
    except orjson.JSONDecodeError:
        pass
    return body[:200].decode(errors="replace")


def map_status(status: int, body: bytes, provider: str) -> ServiceError:
    """The gateway error for a final (non-retried) upstream error status."""
    msg = f"{provider}: {upstream_message(body)}"
    if status in (400, 404, 413, 422):
        return InvalidRequest(msg, code="upstream_rejected_request")
    if status in (401, 403):
        return UpstreamError(f"{provider} refused the gateway's credentials", code="upstream_auth_failed")
    if status in (429, 529):
        return ServiceUnavailable(msg, code="upstream_rate_limited")
    if status == 503:
        return ServiceUnavailable(msg, code="upstream_unavailable")
    if status == 504:
        return UpstreamTimeout(msg, code="upstream_timeout")
    return UpstreamError(msg, code="upstream_error")


def _connection_error(spec: ModelSpec, exc: BaseException) -> ServiceError:
    """The gateway error once retries of a timeout or connection failure ran out."""
    if isinstance(exc, TimeoutError):
        return UpstreamTimeout(f"{spec.provider} did not answer in time", code="upstream_timeout")
    return ServiceUnavailable(
        f"{spec.provider} unreachable: {type(exc).__name__}", code="upstream_unavailable"
    )


class UpstreamHTTP:
    """Shared by every provider adapter; created once per app (connections are reused across requests)."""

    def __init__(self, timeout_s: float, backoff_s: float = 0.25, connect_timeout_s: float = 10.0) -> None:
        self._timeout_s = timeout_s
        self._backoff_s = backoff_s
        self._connect_timeout_s = connect_timeout_s
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the pool."""
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=256, limit_per_host=128, keepalive_timeout=60),
            json_serialize=lambda o: orjson.dumps(o).decode(),
            # URLs without their query string: Gemini's API key travels as `?key=`.
            middlewares=(http_client_spans(),),
        )

    async def close(self) -> None:
        """Close the pool."""
        if self._session is not None:
            await self._session.close()

    def _timeout(self, spec: ModelSpec, stream: bool) -> aiohttp.ClientTimeout:
        seconds = spec.timeout_s or self._timeout_s
        if stream:
            # A stream may last long; what must not happen is a long silence between chunks.
            return aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout_s, sock_read=seconds)
        return aiohttp.ClientTimeout(total=seconds, sock_connect=self._connect_timeout_s)

    async def _backoff(self, attempt: int, retry_after: str | None) -> None:
        delay = self._backoff_s * (2**attempt) * (0.5 + random.random() / 2)
        if retry_after:
            with suppress(ValueError):
                delay = max(delay, min(float(retry_after), _MAX_RETRY_AFTER_S))
        await asyncio.sleep(delay)

    async def _post(
        self, spec: ModelSpec, url: str, data: bytes, headers: dict[str, str], timeout: aiohttp.ClientTimeout
    ) -> aiohttp.ClientResponse:
        """POST until a 2xx answer, retrying 429/5xx/connection failures; a final failure raises."""
        assert self._session is not None, "UpstreamHTTP.start() was not called"
        attempt = 0
        while True:
            try:
                resp = await self._session.post(url, data=data, headers=headers, timeout=timeout)
            except (TimeoutError, aiohttp.ClientError) as exc:
                if attempt >= spec.max_retries:
                    raise _connection_error(spec, exc) from exc
                await self._backoff(attempt, None)
                attempt += 1
                continue
            if resp.status < 300:
                return resp
            try:
                body = await resp.read()
            except (aiohttp.ClientError, TimeoutError):
                body = b""
            finally:
                resp.release()
            if resp.status not in RETRYABLE_STATUS or attempt >= spec.max_retries:
                raise map_status(resp.status, body, spec.provider)
            logger.warning("upstream %s answered %d; retrying", spec.provider, resp.status)
            await self._backoff(attempt, resp.headers.get("retry-after"))
            attempt += 1

    @asynccontextmanager
    async def request(
        self,
        spec: ModelSpec,
        url: str,
        headers: dict[str, str],
        payload: dict[str, Any],
        *,
        stream: bool = False,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """POST `payload`, retrying 429/5xx/connection failures; yields the first 2xx response."""
        headers = {"content-type": "application/json", **headers}
        resp = await self._post(spec, url, orjson.dumps(payload), headers, self._timeout(spec, stream))
        try:
            yield resp
        except TimeoutError as exc:
            raise UpstreamTimeout(f"{spec.provider} stopped answering", code="upstream_timeout") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"{spec.provider} connection failed: {type(exc).__name__}") from exc
        finally:
            # A body not read to the end (a cut stream) closes its connection: the upstream stops generating.
            if resp.content.at_eof():
                resp.release()
            else:
                resp.close()

    async def post_json(
        self, spec: ModelSpec, url: str, headers: dict[str, str], payload: dict[str, Any]
    ) -> dict[str, Any]:
        """POST and parse a JSON object answer."""
        async with self.request(spec, url, headers, payload) as resp:
            raw = await resp.read()
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(f"{spec.provider} answered with invalid JSON") from exc
        if not isinstance(data, dict):
            raise UpstreamError(f"{spec.provider} answered with an unexpected body")
        return data


async def sse_events(resp: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, bytes]]:
    """Server-sent events from a response as (event name, data) pairs; multi-line data joined by newlines."""
    event = "message"
    data: list[bytes] = []
    async for raw_line in resp.content:
        line = raw_line.rstrip(b"\r\n")
        if not line:
            if data:
                yield event, b"\n".join(data)
            event, data = "message", []
            continue
        if line.startswith(b":"):
            continue
        field, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if field == b"data":
            data.append(value)
        elif field == b"event":
            event = value.decode()
    if data:
        yield event, b"\n".join(data)
