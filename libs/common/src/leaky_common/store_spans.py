"""CLIENT spans for Redis commands and PostgreSQL queries (`leaky_common.client_spans` says what they record and
when): a `redis.asyncio.Redis` and an asyncpg connection that make them. Apart from `client_spans`, so that a
process that uses neither store does not import their clients."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from opentelemetry.trace import Span
from redis.asyncio import Redis

from leaky_common.client_spans import client_span, fail, sampled, script_name

__all__ = ["TracedConnection", "TracedRedis", "batch_span", "sql_summary"]

_SUMMARIES: dict[str, tuple[str, str | None]] = {}
_TABLE = re.compile(r"\b(?:FROM|INTO|UPDATE|JOIN|TABLE)\s+(?:ONLY\s+)?([A-Za-z_][\w.]*)", re.IGNORECASE)


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
            script = script_name(str(args[1]))
            if script is not None:
                attributes["db.stored_procedure.name"] = script
                name = f"{operation} {script}"
        span = client_span(name, attributes)
        try:
            return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        except BaseException as exc:
            fail(span, type(exc).__name__)
            raise
        finally:
            span.end()


def batch_span(redis: Any, script: str, size: int) -> Span | None:
    """In a sampled trace, a started CLIENT span for a pipeline of `size` Lua scripts run for `script` (its
    caller ends it); None otherwise. Named `BATCH EVALSHA <script>` with `db.operation.batch.size`, after
    OpenTelemetry's batch convention; the same attributes as a single command's, never a key or argument. A
    pipeline of one script is no batch (the convention's minimum is two): `EVALSHA <script>`, as if sent alone."""
    if not sampled():
        return None
    server = redis._server() if isinstance(redis, TracedRedis) else {}
    operation = "BATCH EVALSHA" if size > 1 else "EVALSHA"
    attributes: dict[str, Any] = {
        "db.system.name": "redis",
        "db.operation.name": operation,
        "db.stored_procedure.name": script,
        **server,
    }
    if size > 1:
        attributes["db.operation.batch.size"] = size
    return client_span(f"{operation} {script}", attributes)


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
        return client_span(name, attributes)

    async def _traced(self, method: Callable[..., Awaitable[Any]], query: str, *args: Any, **kw: Any) -> Any:
        span = self._span(query)
        try:
            return await method(query, *args, **kw)
        except BaseException as exc:
            fail(span, getattr(exc, "sqlstate", None) or type(exc).__name__)
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
