"""`/metrics` for a process with no web app (the analytics worker): a minimal HTTP/1.1 server on the event loop.

The same rules as `add_ops_routes`: the exposition only with `Authorization: Bearer <metrics token>`, 404
otherwise (so its existence is no hint); `/health` answers 200 for liveness checks. One request per
connection, headers capped, a slow client dropped after `timeout_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from leaky_common.observability import metrics_allowed

__all__ = ["MetricsServer"]

logger = logging.getLogger(__name__)

_MAX_HEAD = 16 * 1024
_NOT_FOUND = b'{"error": {"message": "not found", "type": "not_found", "param": null, "code": null}}'


def _response(status: str, body: bytes, content_type: str) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


def answer(head: bytes, token: str | None, registry: CollectorRegistry | None = None) -> bytes:
    """The response to one request's head (request line and headers)."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[0] != "GET":
        return _response("405 Method Not Allowed", b"", "text/plain")
    path = parts[1].split("?", 1)[0]
    if path == "/health":
        return _response("200 OK", b'{"status": "ok"}', "application/json")
    authorization = next(
        (line.split(":", 1)[1].strip() for line in lines[1:] if line.lower().startswith("authorization:")),
        None,
    )
    if path != "/metrics" or not metrics_allowed(authorization, token):
        return _response("404 Not Found", _NOT_FOUND, "application/json")
    body = generate_latest(registry) if registry is not None else generate_latest()
    return _response("200 OK", body, CONTENT_TYPE_LATEST)


class MetricsServer:
    """Serves `/metrics` (and `/health`) on `host:port` until stopped."""

    def __init__(self, host: str, port: int, token: str | None, *, timeout_s: float = 5.0) -> None:
        self.host = host
        self.port = port
        self._token = token
        self._timeout_s = timeout_s
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        """Listen (port 0: any free port, then `port` is the one chosen)."""
        self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=_MAX_HEAD)
        self.port = self._server.sockets[0].getsockname()[1]
        logger.info("metrics on http://%s:%d/metrics", self.host, self.port)

    async def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self._timeout_s)
            writer.write(answer(head, self._token))
            await asyncio.wait_for(writer.drain(), self._timeout_s)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
