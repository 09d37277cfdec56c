"""Per-address limits in front of everything: management routes get `management_rate_per_min`, and an address
whose requests keep failing authentication (401) is refused with 429 until its budget refills. Ops routes
(`/health`, `/ready`, `/metrics`) are never limited. The address is the peer's, or the one the web console
relays with a valid proof (`domain.client_address`); it is left in `request.state.client_address`."""

from __future__ import annotations

import time

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from leaky_common.errors import RateLimited
from lt_gateway.domain.client_address import ADDRESS_HEADER, PROOF_HEADER, AddressProof
from lt_gateway.domain.ratelimit import AddressBuckets

_OPS = frozenset({"/health", "/ready", "/metrics"})
_GOVERNED = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models")


def is_management(path: str) -> bool:
    """Whether `path` is a management route (forwarded to an owner), not a governed endpoint."""
    if path.startswith("/api/v1/"):
        return True
    return path.startswith("/v1/") and not any(path == g or path.startswith(g + "/") for g in _GOVERNED)


class ClientLimits:
    """Pure ASGI middleware applying the two per-address budgets."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        management_rate_per_min: int,
        unauthenticated_rate_per_min: int,
        proof: AddressProof | None = None,
    ) -> None:
        self.app = app
        self.proof = proof
        self.management = AddressBuckets(management_rate_per_min)
        self.failures = AddressBuckets(unauthenticated_rate_per_min)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _OPS:
            await self.app(scope, receive, send)
            return
        address = self._address(scope)
        scope.setdefault("state", {})["client_address"] = address
        now = time.monotonic()
        wait = self.failures.retry_after(address, now)
        if wait is None and is_management(scope["path"]):
            wait = self.management.take(address, now)
        if wait is not None:
            await _too_many(send, wait)
            return

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 401:
                self.failures.charge(address, time.monotonic())
            await send(message)

        await self.app(scope, receive, counting_send)

    def _address(self, scope: Scope) -> str:
        client = scope.get("client")
        peer: str = client[0] if client else "unknown"
        if self.proof is None:
            return peer
        relayed = proof = None
        for name, value in scope.get("headers") or ():
            if name == ADDRESS_HEADER.encode():
                relayed = value.decode("latin-1")
            elif name == PROOF_HEADER.encode():
                proof = value.decode("latin-1")
        if relayed is None:
            return peer
        return self.proof.verified(relayed, proof, time.time()) or peer


async def _too_many(send: Send, wait: int) -> None:
    error = RateLimited(f"too many requests from this address; retry in {wait} s", code="client_rate_limited")
    body = orjson.dumps(error.body())
    await send(
        {
            "type": "http.response.start",
            "status": 429,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", str(wait).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
