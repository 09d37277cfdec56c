"""The gateway's client for quota: one call per governed request, over quota's internal link or pooled keep-alive HTTP."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from dataclasses import dataclass

import aiohttp
import orjson
from opentelemetry import propagate, trace

from leaky_common import client_spans
from leaky_common.auth import AssertionSigner, Principal, looks_like_access_token
from leaky_common.client_spans import http_client_spans
from leaky_common.contracts import (
    MAX_RELEASES_PER_ADMISSION,
    QUOTA_LINK_ADMIT,
    QUOTA_LINK_RELEASE,
    AccessTokenRequest,
    AdmitRequest,
    AdmitResponse,
    AuthenticateRequest,
    ProbeResponse,
    ReleaseRequest,
)
from leaky_common.errors import ServiceUnavailable
from leaky_common.link import LinkClient
from leaky_common.settings import CLIENT_KEEPALIVE_S

_FORWARDED_DENIAL_HEADERS = ("retry-after",)
# A timer may fire this much before its time (uvloop's run on whole milliseconds): a release due within it is due.
_TIMER_SLACK_S = 0.001
QUOTA_AUDIENCE = "quota"
_LINK_ROUTES = {QUOTA_LINK_ADMIT: "/internal/admit", QUOTA_LINK_RELEASE: "/internal/release"}

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Denial:
    """A refusal from quota, passed to the client as is (OpenAI-shaped body)."""

    status: int
    body: bytes
    headers: dict[str, str]

    def code(self) -> str | None:
        """The `error.code` of the body, if it has one."""
        try:
            return str(orjson.loads(self.body)["error"]["code"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return None


class QuotaClient:
    """Calls quota's internal API; fails closed (503) when quota cannot be reached.

    Its keep-alive pool is replaced every `max_connection_age_s` (the old one closes once its calls are done):
    with several quota instances on one address (SO_REUSEPORT), each new connection lands on any of them, so
    an instance that (re)started after the pool filled up gets its share within that time.

    Releases that need not be waited for (`release_later`) ride on the next admission, which quota applies
    first; each one still here `release_linger_s` after it was made goes out on its own. One call to quota per
    request instead of two, whenever requests follow each other within the linger.

    With a `link` (quota's internal link, leaky_common.link), admissions and releases go over it instead of
    HTTP: the same bodies, answers and failures (503 `quota_unavailable` when quota cannot be reached)."""

    def __init__(
        self,
        base_url: str,
        signer: AssertionSigner,
        timeout_s: float,
        max_connection_age_s: float = 0,
        *,
        release_linger_s: float = 0.01,
        release_timeout_s: float = 0.5,
        link: LinkClient | None = None,
    ) -> None:
        self._link = link
        self._base = base_url.rstrip("/")
        self._signer = signer
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._max_age = max_connection_age_s
        self._born = 0.0
        self._pool: aiohttp.ClientSession | None = None
        self._retiring: dict[asyncio.Task[None], aiohttp.ClientSession] = {}
        self._release_linger_s = release_linger_s
        self._release_timeout_s = release_timeout_s
        # Releases waiting for an admission to ride on, oldest first, each with the context it was made in (its
        # request's trace, for a release that goes out on its own) and when it goes out on its own (loop time).
        self._later: list[tuple[ReleaseRequest, contextvars.Context, float]] = []
        # Armed for the oldest waiting release's time while any waits; cancelled once none does.
        self._later_timer: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Future[bool]] = set()  # releases that went out on their own

    def _new_session(self) -> aiohttp.ClientSession:
        self._born = time.monotonic()
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=256, keepalive_timeout=CLIENT_KEEPALIVE_S, ttl_dns_cache=300
            ),
            timeout=self._timeout,
            json_serialize=lambda o: orjson.dumps(o).decode(),
            middlewares=(http_client_spans(),),
        )

    @property
    def _session(self) -> aiohttp.ClientSession | None:
        """The current pool, replaced by a fresh one once it is older than the maximum age."""
        current = self._pool
        if current is not None and self._max_age > 0 and time.monotonic() - self._born > self._max_age:
            self._pool = self._new_session()
            task = asyncio.get_running_loop().create_task(self._retire(current))
            self._retiring[task] = current
            task.add_done_callback(lambda t: self._retiring.pop(t, None))
        return self._pool

    async def _retire(self, session: aiohttp.ClientSession) -> None:
        """Close a replaced pool once the calls still using it are over (they are bounded by the timeout)."""
        await asyncio.sleep((self._timeout.total or 30.0) + 1.0)
        await session.close()

    async def start(self) -> None:
        """Open the connection pool."""
        self._pool = self._new_session()

    async def close(self) -> None:
        """Send the releases still waiting, then close the pool (and any replaced one still closing)."""
        if self._later_timer is not None:
            self._later_timer.cancel()
            self._later_timer = None
        if self._pool is not None:
            self._send_alone(len(self._later))
        if self._sending:
            await asyncio.gather(*self._sending)
        for task, session in list(self._retiring.items()):
            task.cancel()
            await session.close()
        if self._pool is not None:
            await self._pool.close()
        if self._link is not None:
            await self._link.close()

    async def _post(self, path: str, payload: bytes) -> tuple[int, bytes, dict[str, str]]:
        assert self._session is not None, "QuotaClient.start() was not called"
        try:
            # The caller assertion is cached by the signer (re-signed once per half-lifetime, not per request).
            headers = {**self._signer.headers(QUOTA_AUDIENCE), "content-type": "application/json"}
            propagate.inject(headers)  # traceparent when tracing is on; nothing otherwise
            async with self._session.post(self._base + path, data=payload, headers=headers) as resp:
                body = await resp.read()
                headers = {h: resp.headers[h] for h in _FORWARDED_DENIAL_HEADERS if h in resp.headers}
                return resp.status, body, headers
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ServiceUnavailable("quota service unavailable", code="quota_unavailable") from exc

    async def _call(self, op: int, payload: bytes, timeout_s: float) -> tuple[int, bytes, dict[str, str]]:
        """One call over the link, answered as `_post` answers. In a sampled trace it gets a CLIENT span (as an
        HTTP call does: `leaky_common.client_spans`), whose context quota's span continues."""
        assert self._link is not None
        span = None
        if client_spans.sampled():
            host, port = self._link.address
            route = _LINK_ROUTES.get(op, "")
            span = client_spans.client_span(
                f"link {route}",
                {
                    "http.request.method": "POST",  # the HTTP route the call stands for
                    "url.full": f"tcp://{host}:{port}{route}",
                    "network.transport": "tcp",
                    "server.address": host,
                    "server.port": port,
                },
            )
        carrier: dict[str, str] = {}
        # traceparent when tracing is on (the client span's in a sampled trace); nothing otherwise
        propagate.inject(carrier, context=trace.set_span_in_context(span) if span is not None else None)
        try:
            answer = await self._link.call(
                op, self._signer.caller(QUOTA_AUDIENCE), carrier.get("traceparent", ""), payload, timeout_s
            )
        except (OSError, TimeoutError) as exc:  # ConnectionError is an OSError
            if span is not None:
                client_spans.fail(span, type(exc).__name__)
                span.end()
            raise ServiceUnavailable("quota service unavailable", code="quota_unavailable") from exc
        if span is not None:
            span.set_attribute("http.response.status_code", answer.status)
            if answer.status >= 400:
                client_spans.fail(span, str(answer.status))
            span.end()
        return answer.status, answer.body, {"retry-after": answer.retry_after} if answer.retry_after else {}

    async def reachable(self, timeout_s: float = 2.0) -> bool:
        """Whether quota answers its `/health` (for the gateway's readiness: it cannot serve without quota)."""
        assert self._session is not None, "QuotaClient.start() was not called"
        try:
            async with self._session.get(
                self._base + "/health", timeout=aiohttp.ClientTimeout(total=timeout_s)
            ) as resp:
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def probe(self) -> ProbeResponse:
        """Quota's zero-cost admission check, with the gateway's caller assertion (503 naming what failed)."""
        status, body, _ = await self._post("/internal/probe", b"")
        if status != 200:
            reason = Denial(status, body, {}).code() or f"HTTP {status}"
            raise ServiceUnavailable(f"quota probe failed: {reason}", code="quota_unavailable")
        return ProbeResponse.model_validate_json(body)

    async def admit(self, request: AdmitRequest) -> AdmitResponse | Denial:
        """Authenticate, rate-limit and reserve in one call, with the releases waiting here (applied first). If
        the call fails they are not sent again: their usage events settle those reservations."""
        if self._later and not request.releases:
            riding = self._later[:MAX_RELEASES_PER_ADMISSION]  # the rest on the next, or on their own
            del self._later[: len(riding)]
            if not self._later and self._later_timer is not None:
                self._later_timer.cancel()  # none waits now (the rest keep the timer of the oldest)
                self._later_timer = None
            request = request.model_copy(update={"releases": [r for r, _, _ in riding]})
        payload = request.model_dump_json().encode()
        if self._link is not None:
            status, body, headers = await self._call(QUOTA_LINK_ADMIT, payload, self._timeout.total or 10.0)
        else:
            status, body, headers = await self._post("/internal/admit", payload)
        if status == 200:
            return AdmitResponse.model_validate_json(body)
        if status >= 500:
            raise ServiceUnavailable("quota service error", code="quota_unavailable")
        return Denial(status, body, headers)

    async def authenticate(self, credential: str) -> Principal | Denial:
        """Resolve an API key, or a sign-in access token (JWT), to its principal."""
        if looks_like_access_token(credential):
            path = "/internal/authenticate-token"
            payload = AccessTokenRequest(access_token=credential).model_dump_json().encode()
        else:
            path = "/internal/authenticate"
            payload = AuthenticateRequest(api_key=credential).model_dump_json().encode()
        status, body, headers = await self._post(path, payload)
        if status == 200:
            return Principal.model_validate_json(body)
        if status >= 500:
            raise ServiceUnavailable("quota service error", code="quota_unavailable")
        return Denial(status, body, headers)

    async def sign_in(self, path: str, payload: bytes) -> tuple[int, bytes, dict[str, str]]:
        """One of quota's `/internal/auth/*` calls, its answer passed on as is (with any Retry-After)."""
        return await self._post(path, payload)

    def release_later(self, reservation_id: str, total_tokens: int, cost_usd_micros: int) -> None:
        """A release nobody waits for: it rides on the next admission, or goes out on its own once it has waited
        `release_linger_s` for one."""
        payload = ReleaseRequest(
            reservation_id=reservation_id, total_tokens=total_tokens, cost_usd_micros=cost_usd_micros
        )
        loop = asyncio.get_running_loop()
        self._later.append((payload, contextvars.copy_context(), loop.time() + self._release_linger_s))
        if self._release_linger_s <= 0:
            self._send_alone(len(self._later))
        elif self._later_timer is None:
            self._later_timer = loop.call_at(self._later[0][2], self._send_due)

    def _send_due(self) -> None:
        """The timer: the releases whose linger is over go out on their own; it is armed again for the oldest of
        the rest. (A timer armed for one release used to send every release waiting when it fired, some of them
        made just before, which would have ridden on the next admission.)"""
        self._later_timer = None
        loop = asyncio.get_running_loop()
        now = loop.time() + _TIMER_SLACK_S
        due = 0
        while due < len(self._later) and self._later[due][2] <= now:
            due += 1
        self._send_alone(due)
        if self._later:
            self._later_timer = loop.call_at(self._later[0][2], self._send_due)

    def _send_alone(self, count: int) -> None:
        """Send the `count` oldest waiting releases, each on its own and in its request's context (none
        raises)."""
        waiting = self._later[:count]
        del self._later[:count]
        for r, context, _ in waiting:
            sent = self.release(r.reservation_id, r.total_tokens, r.cost_usd_micros, self._release_timeout_s)
            task = context.run(asyncio.ensure_future, sent)
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def release(
        self, reservation_id: str, total_tokens: int, cost_usd_micros: int, timeout_s: float
    ) -> bool:
        """Shrink a reservation to what the answer used, before the client has all of it. Never raises: on any
        failure the answer still goes out and the usage event settles the reservation later."""
        assert self._session is not None, "QuotaClient.start() was not called"
        payload = ReleaseRequest(
            reservation_id=reservation_id, total_tokens=total_tokens, cost_usd_micros=cost_usd_micros
        )
        if self._link is not None:
            try:
                status, _, _ = await self._call(
                    QUOTA_LINK_RELEASE, payload.model_dump_json().encode(), timeout_s
                )
            except ServiceUnavailable as exc:
                logger.warning("release failed (%r); the usage event settles it", exc.__cause__)
                return False
            if status == 200:
                return True
            logger.warning("quota answered %d to a release; the usage event settles it", status)
            return False
        headers = {**self._signer.headers(QUOTA_AUDIENCE), "content-type": "application/json"}
        propagate.inject(headers)  # the request's trace continues at quota's release
        try:
            async with self._session.post(
                self._base + "/internal/release",
                data=payload.model_dump_json().encode(),
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as resp:
                await resp.read()
                if resp.status == 200:
                    return True
                logger.warning("quota answered %d to a release; the usage event settles it", resp.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            logger.warning("release failed (%r); the usage event settles it", exc)
        return False
