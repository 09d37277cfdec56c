"""The outermost layer of every app: security headers on every response, the body limit enforced while the
body is read (413 before more than the limit has arrived), and a JSON nesting limit (400) before any parser
sees the body; NUL characters in the path, the query or a JSON body are a 400. Pure ASGI, so the hot routes pay only a header merge and a counter."""

from __future__ import annotations

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from leaky_common.errors import InvalidRequest, PayloadTooLarge, ServiceError

__all__ = ["SECURITY_HEADERS", "RequestGuard", "json_depth_exceeds", "nesting_exceeds"]

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
    (b"referrer-policy", b"no-referrer"),
)
_NO_STORE = (b"cache-control", b"no-store")


def nesting_exceeds(value: object, limit: int) -> bool:
    """Whether parsed JSON `value` nests arrays and objects deeper than `limit` (iterative, no recursion)."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > limit:
                    return True
                stack.append((child, depth + 1))
    return False


def json_depth_exceeds(body: bytes, limit: int) -> bool:
    """Whether JSON `body` nests deeper than `limit`; invalid JSON is left to the app's parser (its 400)."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        # orjson refuses nesting beyond 1024 too: too deep for us either way unless the JSON is just broken.
        return body.count(b"[") + body.count(b"{") > 1024
    return nesting_exceeds(value, limit)


def _error(exc: ServiceError) -> tuple[int, bytes]:
    return exc.status, orjson.dumps(exc.body())


class _BodyTooLarge(PayloadTooLarge):
    pass


class RequestGuard:
    """Security headers, body limit while reading, JSON depth limit (`max_json_depth=None`: not checked)."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_json_depth: int | None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_json_depth = max_json_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", []))
                names = {name.lower() for name, _ in headers}
                headers += [h for h in SECURITY_HEADERS if h[0] not in names]
                if b"cache-control" not in names:
                    headers.append(_NO_STORE)
                message = {**message, "headers": headers}
            await send(message)

        try:
            guarded = await self._guarded_receive(scope, receive)
            await self.app(scope, guarded, send_with_headers)
        except ServiceError as exc:  # the limits, raised before the app answered
            if started:
                raise
            await self._reject(exc, send_with_headers)

    async def _guarded_receive(self, scope: Scope, receive: Receive) -> Receive:
        # NUL has no place in a path, a query or a JSON string we keep (PostgreSQL text cannot hold it).
        if b"%00" in scope.get("raw_path", b"") or b"%00" in scope.get("query_string", b""):
            raise InvalidRequest("NUL characters are not accepted", code="invalid_characters")
        length = _content_length(scope)
        if length is not None and length > self.max_body_bytes:
            raise _BodyTooLarge(f"request body exceeds {self.max_body_bytes} bytes")
        limit = self.max_body_bytes
        seen = 0

        async def counting() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _BodyTooLarge(f"request body exceeds {limit} bytes")
            return message

        if self.max_json_depth is None or scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS"):
            return counting
        return await self._checked_json(scope, counting)

    async def _checked_json(self, scope: Scope, receive: Receive) -> Receive:
        """Buffer a JSON body (already bounded) and refuse it if it nests too deep; replay it to the app."""
        content_type = dict(scope.get("headers", [])).get(b"content-type", b"")
        if b"json" not in content_type:
            return receive
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return _replay(b"".join(chunks), message)
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        assert self.max_json_depth is not None
        if json_depth_exceeds(body, self.max_json_depth):
            raise InvalidRequest(f"JSON nests deeper than {self.max_json_depth} levels", code="json_too_deep")
        if b"\\u0000" in body:
            raise InvalidRequest("NUL characters are not accepted", code="invalid_characters")
        return _replay(body, None, receive)

    @staticmethod
    async def _reject(exc: ServiceError, send: Send) -> None:
        status, body = _error(exc)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                raise InvalidRequest("invalid Content-Length") from None
    return None


def _replay(body: bytes, terminal: Message | None, then: Receive | None = None) -> Receive:
    """A receive callable that yields `body` once, then `terminal` (a disconnect) or defers to `then`."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        if terminal is not None:
            return terminal
        assert then is not None
        return await then()

    return receive
