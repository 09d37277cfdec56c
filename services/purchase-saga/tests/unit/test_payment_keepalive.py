"""The payment client closes an idle connection to the provider before the provider would: a call is never sent
on a connection the provider is closing at that moment (it would fail and come back UNCERTAIN)."""

from __future__ import annotations

import asyncio
import time

from leaky_devinfra.testing import eventually
from lt_saga.adapters.payments import PROVIDER_KEEPALIVE_S, PaymentClient
from lt_saga.domain.payment import PaymentOutcome

_ANSWER = b'{"id": "pi_1", "status": "requires_capture"}'


class _Provider(asyncio.Protocol):
    """A keep-alive HTTP/1.1 server that answers every request with one PaymentIntent and notes when and by
    which side each connection closed (it never closes one itself here)."""

    closed: list[float] = []  # one test's connections
    opened = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        type(self).opened += 1

    def data_received(self, data: bytes) -> None:
        if b"\r\n\r\n" in data:
            head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n"
            self.transport.write(head % len(_ANSWER) + _ANSWER)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        type(self).closed.append(time.monotonic())


def test_the_default_is_below_the_five_seconds_common_servers_keep_an_idle_connection() -> None:
    assert 0 < PROVIDER_KEEPALIVE_S < 5


async def test_an_idle_connection_is_closed_by_the_client_after_its_keepalive() -> None:
    _Provider.closed, _Provider.opened = [], 0
    server = await asyncio.get_running_loop().create_server(_Provider, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = PaymentClient(f"http://127.0.0.1:{port}", "sk_test", 5.0, keepalive_s=0.3)
    await client.start()
    try:
        result = await client.capture("pi_1", "idem-1")
        assert result.outcome is PaymentOutcome.OK and result.intent_id == "pi_1"
        idle_since = time.monotonic()
        await eventually(lambda: len(_Provider.closed) == 1, timeout=5)
        assert _Provider.closed[0] - idle_since >= 0.2  # kept for reuse meanwhile, then closed by the client
        again = await client.capture("pi_1", "idem-2")  # a new connection, not the closed one
        assert again.outcome is PaymentOutcome.OK and _Provider.opened == 2
    finally:
        await client.close()
        server.close()
        await server.wait_closed()
