"""CLIENT spans for Redis commands, PostgreSQL queries and outbound HTTP, after OpenTelemetry's conventions.

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

import re
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from aiohttp import ClientRequest, ClientResponse
from opentelemetry import propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from redis.asyncio import Redis

__all__ = [
    "TracedConnection",
    "TracedRedis",
    "configure",
    "http_client_spans",
    "name_script",
    "sampled",
    "sql_summary",
]

_tracer = trace.get_tracer("leaky_common.client_spans")
_enabled = True
_TRACE_ID_LOW = (1 << 64) - 1
# A trace gets client spans when its id's low 64 bits fall under this (OpenTelemetry's TraceIdRatioBased rule).
_bound = 1 << 64
# EVALSHA's sha1 -> the script's name (`admit`), registered by whoever loads the scripts.
_SCRIPTS: dict[str, str] = {}
_SUMMARIES: dict[str, tuple[str, str | None]] = {}
_TABLE = re.compile(r"\b(?:FROM|INTO|UPDATE|JOIN|TABLE)\s+(?:ONLY\s+)?([A-Za-z_][\w.]*)", re.IGNORECASE)

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


def _fail(span: Span, error_type: str) -> None:
    span.set_attribute("error.type", error_type)
    span.set_status(Status(StatusCode.ERROR))


# --- Redis ---------------------------------------------------------------------------------------------


class TracedRedis(Redis):  # type: ignore[type-arg]
    """A `redis.asyncio.Redis` whose commands get a CLIENT span in sampled traces (pipelines do not)."""

    _lt_server: dict[str, Any] | None = None

    def _server(self) -> dict[str, Any]:
        if self._lt_server is None:
            kwargs = self.connection_pool.connection_kwargs
            server: dict[str, Any] = {}
            if kwargs.get("host"):
                server = {"server.address": str(kwargs["host"]), "server.port": int(kwargs.get("port", 6379))}
            self._lt_server = server
        return self._lt_server

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        """The command, in a span when the trace is sampled."""
        if not sampled():
            return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        operation = str(args[0]).upper() if args else "UNKNOWN"
        attributes: dict[str, Any] = {
            "db.system.name": "redis",
            "db.operation.name": operation,
            **self._server(),
        }
        name = operation
        if operation == "EVALSHA" and len(args) > 1:
            script = _SCRIPTS.get(str(args[1]))
            if script is not None:
                attributes["db.stored_procedure.name"] = script
                name = f"{operation} {script}"
        span = _tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes)
        try:
            return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        except BaseException as exc:
            _fail(span, type(exc).__name__)
            raise
        finally:
            span.end()


# --- PostgreSQL ------------------------------------------------------------------------------------------


def sql_summary(query: str) -> tuple[str, str | None]:
    """The operation (first keyword) and the first table a query names; cached per query text."""
    found = _SUMMARIES.get(query)
    if found is None:
        words = query.split(None, 1)
        operation = words[0].upper() if words else "UNKNOWN"
        table = _TABLE.search(query)
        found = (operation, table.group(1) if table else None)
        if len(_SUMMARIES) >= 2048:  # queries are constants; this only bounds a surprise
            _SUMMARIES.clear()
        _SUMMARIES[query] = found
    return found


class TracedConnection(asyncpg.Connection):  # type: ignore[misc]
    """An asyncpg connection whose queries get a CLIENT span in sampled traces (`create_pool` uses it)."""

    _lt_server: dict[str, Any] | None = None

    def _span(self, query: str) -> Span:
        if self._lt_server is None:
            addr, params = getattr(self, "_addr", None), getattr(self, "_params", None)
            server: dict[str, Any] = {}
            if isinstance(addr, tuple) and len(addr) >= 2:
                server = {"server.address": str(addr[0]), "server.port": int(addr[1])}
            if params is not None and getattr(params, "database", None):
                server["db.namespace"] = str(params.database)
            self._lt_server = server
        operation, table = sql_summary(query)
        attributes: dict[str, Any] = {"db.system.name": "postgresql", "db.operation.name": operation}
        if table:
            attributes["db.collection.name"] = table
        attributes.update(self._lt_server)
        name = f"{operation} {table}" if table else operation
        return _tracer.start_span(name, kind=SpanKind.CLIENT, attributes=attributes)

    async def _traced(self, method: Callable[..., Awaitable[Any]], query: str, *args: Any, **kw: Any) -> Any:
        span = self._span(query)
        try:
            return await method(query, *args, **kw)
        except BaseException as exc:
            _fail(span, getattr(exc, "sqlstate", None) or type(exc).__name__)
            raise
        finally:
            span.end()

    async def execute(self, query: str, *args: Any, **kw: Any) -> Any:
        """`Connection.execute`, in a span when sampled."""
        if not sampled():
            return await super().execute(query, *args, **kw)
        return await self._traced(super().execute, query, *args, **kw)

    async def executemany(self, command: str, args: Any, **kw: Any) -> Any:
        """`Connection.executemany`, in a span when sampled."""
        if not sampled():
            return await super().executemany(command, args, **kw)
        return await self._traced(super().executemany, command, args, **kw)

    async def fetch(self, query: str, *args: Any, **kw: Any) -> Any:
        """`Connection.fetch`, in a span when sampled."""
        if not sampled():
            return await super().fetch(query, *args, **kw)
        return await self._traced(super().fetch, query, *args, **kw)

    async def fetchval(self, query: str, *args: Any, **kw: Any) -> Any:
        """`Connection.fetchval`, in a span when sampled."""
        if not sampled():
            return await super().fetchval(query, *args, **kw)
        return await self._traced(super().fetchval, query, *args, **kw)

    async def fetchrow(self, query: str, *args: Any, **kw: Any) -> Any:
        """`Connection.fetchrow`, in a span when sampled."""
        if not sampled():
            return await super().fetchrow(query, *args, **kw)
        return await self._traced(super().fetchrow, query, *args, **kw)


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
            _fail(span, type(exc).__name__)
            span.end()
            raise
        span.set_attribute("http.response.status_code", resp.status)
        if resp.status >= 400:
            _fail(span, str(resp.status))
        span.end()
        return resp

    return middleware
