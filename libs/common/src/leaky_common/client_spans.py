"""CLIENT spans for Redis commands, PostgreSQL queries and outbound HTTP, after OpenTelemetry's conventions
(the Redis and PostgreSQL clients are in `leaky_common.store_spans`, so that a service without them, the
gateway, does not import them: redis-py alone costs a process 20 MB).

Hand-written rather than the `opentelemetry-instrumentation-*` packages, for two reasons: they would record
what this system must never export (the Redis instrumentation puts the command's arguments in
`db.statement`, the asyncpg one the query text, the aiohttp one the whole URL with its query string), and
the hot path pays for every hook. Here an unsampled request pays one check per call (`sampled()`); a
sampled one gets a span with only:

- Redis: `db.system.name` `redis`, `db.operation.name` (the command: `EVALSHA`, `HGETALL`, ...),
  `db.stored_procedure.name` (a Lua script's name, `admit`), `server.address`, `server.port`. Never a key,
  an argument or a script's arguments.
- PostgreSQL: `db.system.name` `postgresql`, `db.operation.name` (`SELECT`, `INSERT`, ...),
  `db.collection.name` (the first table named), `db.namespace` (the database), `server.address`,
  `server.port`. Never the query text nor its parameters.
- HTTP: `http.request.method`, `url.full` without user info, query string or fragment (and without the
  path where the path is a secret: webhooks), `server.address`, `server.port`, `http.response.status_code`.
  The outgoing `traceparent` is the client span's, so the server's span is its child.

Failures get `error.type` (the exception's class or the HTTP status) and status ERROR, never a message.
Spans are made only inside a sampled trace: an unsampled request keeps its server span's decision
(`LT_TRACE_KEEP_ERRORS` still exports a failed server span) and pays no span here. They cost more than the
issue's 5% of hot-path CPU when every trace has them (docs/observability.md), so only a share of the sampled
traces gets them (`LT_TRACE_CLIENT_SPAN_RATIO`); `LT_TRACE_CLIENT_SPANS=false` turns them off altogether.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import ClientRequest, ClientResponse
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

__all__ = ["client_span", "configure", "fail", "http_client_spans", "name_script", "sampled", "script_name"]

_tracer = trace.get_tracer("leaky_common.client_spans")
_enabled = True
_TRACE_ID_LOW = (1 << 64) - 1
# A trace gets client spans when its id's low 64 bits fall under this (OpenTelemetry's TraceIdRatioBased rule).
_bound = 1 << 64
# EVALSHA's sha1 -> the script's name (`admit`), registered by whoever loads the scripts.
_SCRIPTS: dict[str, str] = {}

HttpHandler = Callable[[ClientRequest], Awaitable[ClientResponse]]


def configure(enabled: bool, ratio: float = 1.0) -> None:
    """`LT_TRACE_CLIENT_SPANS` and `LT_TRACE_CLIENT_SPAN_RATIO` (set by `setup_tracing`).

    The ratio is decided from the trace id, as the SDK's `TraceIdRatioBased` does, so every service agrees: a
    trace has all its client spans or none. Since the head sampler uses the same bits, a trace starting here
    gets client spans with probability min(`LT_TRACE_SAMPLE_RATIO`, `LT_TRACE_CLIENT_SPAN_RATIO`).
    """
    global _enabled, _bound
    _enabled = enabled and ratio > 0
    _bound = round(ratio * (1 << 64))


def sampled() -> bool:
    """Whether the current trace is sampled and gets client spans: the one check an unsampled call pays."""
    if not _enabled:
        return False
    ctx = trace.get_current_span().get_span_context()
    return ctx.trace_flags.sampled and (ctx.trace_id & _TRACE_ID_LOW) < _bound


def name_script(sha: str, name: str) -> None:
    """Name a Lua script by its SHA-1, so its EVALSHA spans say which script ran."""
    _SCRIPTS[sha] = name


def script_name(sha: str) -> str | None:
    """The name `name_script` gave the Lua script of this SHA-1, if any."""
    return _SCRIPTS.get(sha)


def client_span(name: str, attributes: dict[str, Any]) -> Span:
    """A CLIENT span, started (its caller ends it)."""
    return _tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes)


def fail(span: Span, error_type: str) -> None:
    """Mark a client span failed: `error.type` and status ERROR, never a message."""
    span.set_attribute("error.type", error_type)
    span.set_status(Status(StatusCode.ERROR))


# --- HTTP (aiohttp client middleware) --------------------------------------------------------------------


def http_client_spans(
    *, with_path: bool = True
) -> Callable[[ClientRequest, HttpHandler], Awaitable[ClientResponse]]:
    """An aiohttp client middleware (`ClientSession(middlewares=(...,))`) making a CLIENT span per request.

    `with_path=False` where the path is a secret (a Slack or Teams webhook, a Telegram bot token): `url.full`
    is then the origin followed by `/REDACTED`.
    """

    async def middleware(req: ClientRequest, handler: HttpHandler) -> ClientResponse:
        if not sampled():
            return await handler(req)
        url = req.url
        origin = url.origin()
        full = (
            str(url.with_user(None).with_query(None).with_fragment(None))
            if with_path
            else f"{origin}/REDACTED"
        )
        attributes: dict[str, Any] = {"http.request.method": req.method, "url.full": full}
        if url.host:
            attributes["server.address"] = url.host
            if url.port is not None:
                attributes["server.port"] = url.port
        span = _tracer.start_span(req.method, kind=SpanKind.CLIENT, attributes=attributes)
        # The server's span becomes this span's child (overriding a traceparent the caller injected).
        propagate.inject(req.headers, context=trace.set_span_in_context(span))
        try:
            resp = await handler(req)
        except BaseException as exc:
            fail(span, type(exc).__name__)
            span.end()
            raise
        span.set_attribute("http.response.status_code", resp.status)
        if resp.status >= 400:
            fail(span, str(resp.status))
        span.end()
        return resp

    return middleware
