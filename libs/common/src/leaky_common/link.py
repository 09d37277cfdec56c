"""The internal link: a hot internal call (quota's admission and release) over a few persistent TCP connections,
many calls in flight on each, without HTTP.

Over HTTP each call costs both ends a request parse, an ASGI cycle, the middleware layers, a response and a
client request object; most of that is generic work the hot path does not need. A frame here carries what an
internal HTTP call would (the operation, the caller's signed assertion, an optional `traceparent`, the JSON
body; back: the status, a `Retry-After` and the JSON body), and frames written in one turn of the event loop
go out in one write, so at concurrency each system call carries several calls. The server verifies the caller
assertion of every frame exactly as the HTTP route does, and records the same `lt_http_*` metrics under the
route it stands for, so dashboards and alerts see one series whatever the transport.

Frames (big-endian):

- call:   `u32 body_len, u32 call_id, u8 op, u16 assertion_len, u16 traceparent_len`, then the three strings;
- answer: `u32 body_len, u32 call_id, u16 status, u16 retry_after_len`, then `Retry-After` and the body.

A frame over `MAX_FRAME` bytes, an unknown op's frame or a malformed one ends the connection: only the
gateway speaks this, and a peer that does not speak it well is not to be trusted with more calls.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import cast
from urllib.parse import urlsplit

import orjson
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from leaky_common.errors import ServiceUnavailable, error_body, store_unavailable
from leaky_common.observability import HTTP_LATENCY, HTTP_REQUESTS

__all__ = ["MAX_FRAME", "Answer", "LinkClient", "LinkOp", "LinkServer", "parse_link_url"]

logger = logging.getLogger(__name__)

MAX_FRAME = 1 << 20  # bytes of a frame's strings and body together
_CALL = struct.Struct("!IIBHH")
_ANSWER = struct.Struct("!IIHH")
_MAX_IN_FLIGHT = 4096  # calls one connection may have open on the server before it stops reading from it


@dataclass(frozen=True, slots=True)
class Answer:
    """What the server answered a call: the HTTP status it stands for, `Retry-After` ("" if none), the body."""

    status: int
    retry_after: str
    body: bytes


@dataclass(frozen=True, slots=True)
class LinkOp:
    """An operation the link serves: its number on the wire, the route it stands for (metrics, span name) and
    its handler `(assertion, body) -> Answer`."""

    code: int
    route: str
    handler: Callable[[str, bytes], Awaitable[Answer]]


def parse_link_url(url: str) -> tuple[str, int]:
    """`tcp://host:port` -> (host, port); ValueError for anything else."""
    parts = urlsplit(url)
    if parts.scheme != "tcp" or not parts.hostname or parts.port is None or parts.path not in ("", "/"):
        raise ValueError(f"a link URL is tcp://host:port, not {url!r}")
    return parts.hostname, parts.port


# --- server ------------------------------------------------------------------------------------------------


class _Framed(asyncio.Protocol):
    """A connection's side: frames sent in one turn of the event loop go out in one write."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._out: list[bytes] = []
        self._flush_scheduled = False

    def send(self, frame: bytes) -> None:
        self._out.append(frame)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out, self._out = self._out, []
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(out))


class _ServerConnection(_Framed):
    def __init__(self, server: LinkServer) -> None:
        super().__init__()
        self._server = server
        self._buffer = bytearray()
        self._tasks: set[asyncio.Task[None]] = set()
        self._paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # (uvloop's is not a subclass)
        self._server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        offset = 0
        size = len(buffer)
        while size - offset >= _CALL.size:
            body_len, call_id, op, a_len, t_len = _CALL.unpack_from(buffer, offset)
            total = body_len + a_len + t_len
            operation = self._server.ops.get(op)
            if total > MAX_FRAME or operation is None:
                logger.warning("link: closing a connection that sent an unknown or oversized frame")
                self.close()
                return
            end = offset + _CALL.size + total
            if size < end:
                break
            start = offset + _CALL.size
            try:
                assertion = buffer[start : start + a_len].decode("ascii")
                traceparent = buffer[start + a_len : start + a_len + t_len].decode("ascii")
            except UnicodeDecodeError:
                logger.warning("link: closing a connection that sent a malformed frame")
                self.close()
                return
            body = bytes(buffer[start + a_len + t_len : end])
            task = asyncio.get_running_loop().create_task(
                self._serve(call_id, operation, assertion, traceparent, body)
            )
            self._tasks.add(task)
            task.add_done_callback(self._done)
            offset = end
        del buffer[:offset]
        if len(self._tasks) >= _MAX_IN_FLIGHT and self.transport is not None and not self._paused:
            self._paused = True
            self.transport.pause_reading()

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._paused and len(self._tasks) < _MAX_IN_FLIGHT // 2 and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    async def _serve(self, call_id: int, op: LinkOp, assertion: str, traceparent: str, body: bytes) -> None:
        started = time.perf_counter()
        if traceparent:  # the caller's trace continues here (it sends one only when tracing is on)
            context = propagate.extract({"traceparent": traceparent})
            with self._server.tracer.start_as_current_span(
                f"POST {op.route}", context=context, kind=SpanKind.SERVER, attributes={"http.route": op.route}
            ) as span:
                answer = await self._answer(op, assertion, body)
                span.set_attribute("http.response.status_code", answer.status)
                if answer.status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
        else:
            answer = await self._answer(op, assertion, body)
        HTTP_REQUESTS.labels(self._server.service, "POST", op.route, str(answer.status)).inc()
        HTTP_LATENCY.labels(self._server.service, op.route).observe(time.perf_counter() - started)
        retry_after = answer.retry_after.encode("ascii")
        self.send(
            _ANSWER.pack(len(answer.body), call_id, answer.status, len(retry_after))
            + retry_after
            + answer.body
        )

    async def _answer(self, op: LinkOp, assertion: str, body: bytes) -> Answer:
        """The handler's answer; an error rendered as the HTTP app's handlers render it (never its message)."""
        try:
            return await op.handler(assertion, body)
        except Exception as exc:
            if isinstance(exc, store_unavailable()):
                logger.warning("store unavailable on %s: %r", op.route, exc)
                unavailable = ServiceUnavailable("a store this service needs is unavailable; retry shortly")
                return Answer(503, "1", orjson.dumps(unavailable.body()))
            logger.exception("unhandled error on %s", op.route)
            return Answer(500, "", orjson.dumps(error_body("internal error", "api_error", "internal_error")))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    async def drain(self, timeout_s: float) -> None:
        """Wait (at most `timeout_s`) for the calls in flight, send their answers, then close."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)
        self._flush()
        self.close()


class LinkServer:
    """Serves `ops` on `host:port` (SO_REUSEPORT with `reuse_port`: several instances on one address)."""

    def __init__(self, service: str, ops: list[LinkOp]) -> None:
        self.service = service
        self.ops = {op.code: op for op in ops}
        self.tracer = trace.get_tracer("leaky_common.link")
        self.connections: set[_ServerConnection] = set()
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> int:
        """Listen; returns the port (the one chosen when `port` is 0)."""
        store_unavailable()  # the store clients' exceptions imported now, not in a call at the first failure
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _ServerConnection(self), host, port, reuse_port=reuse_port or None
        )
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Stop listening, answer the calls in flight (at most `timeout_s`), close every connection."""
        if self._server is not None:
            self._server.close()
        await asyncio.gather(*(c.drain(timeout_s) for c in list(self.connections)))
        if self._server is not None:
            await self._server.wait_closed()


# --- client ------------------------------------------------------------------------------------------------


class LinkClosed(ConnectionError):
    """The connection closed before the call was answered."""


class _ClientConnection(_Framed):
    def __init__(self) -> None:
        super().__init__()
        self.born = time.monotonic()
        self.pending: dict[int, asyncio.Future[Answer]] = {}
        self.closed = False
        self._buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        pending, self.pending = self.pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(LinkClosed("the link to the service closed"))

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        offset = 0
        size = len(buffer)
        while size - offset >= _ANSWER.size:
            body_len, call_id, status, r_len = _ANSWER.unpack_from(buffer, offset)
            if body_len + r_len > MAX_FRAME:
                self.abort()
                return
            end = offset + _ANSWER.size + r_len + body_len
            if size < end:
                break
            start = offset + _ANSWER.size
            future = self.pending.pop(call_id, None)
            if future is not None and not future.done():  # (a call that timed out is gone)
                retry_after = buffer[start : start + r_len].decode("ascii", "replace")
                future.set_result(Answer(status, retry_after, bytes(buffer[start + r_len : end])))
            offset = end
        del buffer[:offset]

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class LinkClient:
    """Calls over `connections` persistent connections to `host:port`, round robin, many calls in flight on each.

    A connection older than `max_age_s` (0: never) takes no new calls and closes once its calls are answered;
    a fresh one takes its place, so with several server instances on one address (SO_REUSEPORT) one that
    (re)started gets its share within that time. A call fails with ConnectionError when its connection cannot
    be made or closes first, and with TimeoutError after `timeout_s`."""

    def __init__(self, host: str, port: int, *, connections: int = 2, max_age_s: float = 0) -> None:
        self._host = host
        self._port = port
        self._size = max(1, connections)
        self._max_age_s = max_age_s
        self._slots: list[_ClientConnection | None] = [None] * self._size
        self._connecting: list[asyncio.Future[_ClientConnection] | None] = [None] * self._size
        self._next = itertools.cycle(range(self._size))
        self._ids = itertools.count(1)
        self._retiring: set[_ClientConnection] = set()

    @property
    def address(self) -> tuple[str, int]:
        """The server's (host, port)."""
        return self._host, self._port

    async def _connection(self, slot: int) -> _ClientConnection:
        conn = self._slots[slot]
        if conn is not None and not conn.closed:
            if not self._max_age_s or time.monotonic() - conn.born < self._max_age_s:
                return conn
            self._retire(conn)
        self._slots[slot] = None
        connecting = self._connecting[slot]
        if connecting is None:  # one connect per slot at a time; the calls meanwhile wait for it
            connecting = asyncio.ensure_future(self._connect())
            self._connecting[slot] = connecting
            connecting.add_done_callback(lambda f: self._connected(slot, f))
        return await asyncio.shield(connecting)

    async def _connect(self) -> _ClientConnection:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(_ClientConnection, self._host, self._port)
        return conn

    def _connected(self, slot: int, future: asyncio.Future[_ClientConnection]) -> None:
        self._connecting[slot] = None
        if not future.cancelled() and future.exception() is None:
            self._slots[slot] = future.result()

    def _retire(self, conn: _ClientConnection) -> None:
        """No new calls on `conn`; it closes once its calls are answered (or fail): now, or when the last ends."""
        self._retiring.add(conn)
        self._close_if_idle(conn)

    def _close_if_idle(self, conn: _ClientConnection) -> None:
        if conn.closed or not conn.pending:
            self._retiring.discard(conn)
            if conn.transport is not None:
                conn.transport.close()

    async def call(self, op: int, assertion: str, traceparent: str, body: bytes, timeout_s: float) -> Answer:
        """One call; its answer, or ConnectionError / TimeoutError."""
        a = assertion.encode("ascii")
        t = traceparent.encode("ascii")
        if len(a) + len(t) + len(body) > MAX_FRAME:
            raise ValueError("the call is larger than a link frame")
        async with asyncio.timeout(timeout_s):
            conn = await self._connection(next(self._next))
            call_id = next(self._ids) & 0xFFFFFFFF
            future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
            conn.pending[call_id] = future
            try:
                conn.send(_CALL.pack(len(body), call_id, op, len(a), len(t)) + a + t + body)
                return await future
            finally:
                conn.pending.pop(call_id, None)
                if conn in self._retiring:
                    self._close_if_idle(conn)

    async def close(self) -> None:
        """Close every connection (calls still open fail with ConnectionError)."""
        for connecting in self._connecting:
            if connecting is not None:
                connecting.cancel()
        for conn in [*self._slots, *self._retiring]:
            if conn is not None and conn.transport is not None:
                conn.transport.close()
        self._slots = [None] * self._size
        self._retiring.clear()
        await asyncio.sleep(0)  # let the transports run their connection_lost
