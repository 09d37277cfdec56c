"""The internal link (leaky_common.link): calls and answers over real sockets on free ports."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator

import orjson
import pytest
from prometheus_client import REGISTRY

from leaky_common.errors import Unauthorized
from leaky_common.link import MAX_FRAME, Answer, LinkClient, LinkOp, LinkServer, parse_link_url

ECHO, SLOW, BROKEN, DOWN, REFUSE = 1, 2, 3, 4, 5


class Ops:
    """Handlers that say what they were given; SLOW waits until released."""

    def __init__(self) -> None:
        self.release_slow = asyncio.Event()
        self.slow_started = asyncio.Event()
        self.seen: list[tuple[str, bytes]] = []

    async def echo(self, assertion: str, body: bytes) -> Answer:
        self.seen.append((assertion, body))
        return Answer(200, "", orjson.dumps({"assertion": assertion, "body": body.decode()}))

    async def slow(self, assertion: str, body: bytes) -> Answer:
        self.slow_started.set()
        await self.release_slow.wait()
        return Answer(200, "", b"slow:" + body)

    async def broken(self, assertion: str, body: bytes) -> Answer:
        raise RuntimeError("a bug")

    async def down(self, assertion: str, body: bytes) -> Answer:
        raise ConnectionRefusedError("redis is down")

    async def refuse(self, assertion: str, body: bytes) -> Answer:
        exc = Unauthorized("no", code="invalid_internal_assertion")
        return Answer(exc.status, "7", orjson.dumps(exc.body()))

    def list(self) -> list[LinkOp]:
        return [
            LinkOp(ECHO, "/echo", self.echo),
            LinkOp(SLOW, "/slow", self.slow),
            LinkOp(BROKEN, "/broken", self.broken),
            LinkOp(DOWN, "/down", self.down),
            LinkOp(REFUSE, "/refuse", self.refuse),
        ]


@pytest.fixture
async def served() -> AsyncIterator[tuple[Ops, LinkServer, int]]:
    ops = Ops()
    server = LinkServer("test", ops.list())
    port = await server.start("127.0.0.1", 0)
    yield ops, server, port
    ops.release_slow.set()
    await server.stop(timeout_s=1)


def metric(route: str, status: str) -> float:
    value = REGISTRY.get_sample_value(
        "lt_http_requests_total", {"service": "test", "method": "POST", "route": route, "status": status}
    )
    return value or 0.0


async def test_a_call_carries_the_assertion_and_body_and_gets_its_answer(
    served: tuple[Ops, LinkServer, int],
) -> None:
    _, _, port = served
    client = LinkClient("127.0.0.1", port)
    before = metric("/echo", "200")
    try:
        answer = await client.call(ECHO, "signed-token", "", b'{"x": 1}', timeout_s=5)
    finally:
        await client.close()
    assert answer.status == 200 and answer.retry_after == ""
    assert orjson.loads(answer.body) == {"assertion": "signed-token", "body": '{"x": 1}'}
    assert metric("/echo", "200") == before + 1  # counted under the route it stands for


async def test_many_calls_in_flight_on_one_connection_get_their_own_answers(
    served: tuple[Ops, LinkServer, int],
) -> None:
    ops, server, port = served
    client = LinkClient("127.0.0.1", port, connections=1)
    try:
        slow = asyncio.ensure_future(client.call(SLOW, "a", "", b"first", timeout_s=5))
        await asyncio.sleep(0)
        answers = await asyncio.gather(*(client.call(ECHO, "a", "", str(i).encode(), 5) for i in range(200)))
        assert [orjson.loads(a.body)["body"] for a in answers] == [str(i) for i in range(200)]
        assert not slow.done()  # answered out of order: the slow call does not hold the others back
        ops.release_slow.set()
        assert (await slow).body == b"slow:first"
        assert len(server.connections) == 1
    finally:
        await client.close()


async def test_refusals_keep_their_status_and_retry_after_and_failures_become_5xx(
    served: tuple[Ops, LinkServer, int],
) -> None:
    _, _, port = served
    client = LinkClient("127.0.0.1", port)
    try:
        refused = await client.call(REFUSE, "a", "", b"", 5)
        assert (refused.status, refused.retry_after) == (401, "7")
        assert orjson.loads(refused.body)["error"]["code"] == "invalid_internal_assertion"
        broken = await client.call(BROKEN, "a", "", b"", 5)
        assert broken.status == 500 and b"a bug" not in broken.body  # no internals leak
        assert orjson.loads(broken.body)["error"]["code"] == "internal_error"
        down = await client.call(DOWN, "a", "", b"", 5)
        assert (down.status, down.retry_after) == (503, "1")
        assert metric("/broken", "500") >= 1 and metric("/down", "503") >= 1
        assert (await client.call(ECHO, "a", "", b"still", 5)).status == 200  # the connection survives
    finally:
        await client.close()


def _raw_call(port: int, frame: bytes) -> bytes:
    """Send one raw frame and read until the server closes (or 2 s)."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(frame)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            return b"timed out"
        return b"".join(chunks)


@pytest.mark.parametrize(
    "frame",
    [
        struct.pack("!IIBHH", 2, 1, 99, 0, 0) + b"{}",  # an unknown operation
        struct.pack("!IIBHH", MAX_FRAME, 1, ECHO, 1, 0),  # larger than a frame may be
        struct.pack("!IIBHH", 0, 1, ECHO, 2, 0) + b"\xff\xfe",  # an assertion that is not ASCII
    ],
    ids=["unknown-op", "oversized", "not-ascii"],
)
async def test_a_peer_that_does_not_speak_the_protocol_is_cut_off(
    served: tuple[Ops, LinkServer, int], frame: bytes
) -> None:
    ops, _, port = served
    assert await asyncio.to_thread(_raw_call, port, frame) == b""  # closed, nothing answered
    assert ops.seen == []


async def test_calls_fail_when_the_server_is_gone_and_succeed_once_it_is_back() -> None:
    ops = Ops()
    server = LinkServer("test", ops.list())
    port = await server.start("127.0.0.1", 0)
    client = LinkClient("127.0.0.1", port, connections=1)
    try:
        assert (await client.call(ECHO, "a", "", b"1", 5)).status == 200
        slow = asyncio.ensure_future(client.call(SLOW, "a", "", b"", 5))
        await asyncio.wait_for(ops.slow_started.wait(), 5)
        await server.stop(timeout_s=0.05)  # the slow call is still open: its connection closes under it
        with pytest.raises(ConnectionError):
            await slow
        with pytest.raises(OSError):  # nothing listens: the connect is refused
            await client.call(ECHO, "a", "", b"2", 5)
        server = LinkServer("test", ops.list())
        await server.start("127.0.0.1", port)
        assert (await client.call(ECHO, "a", "", b"3", 5)).status == 200  # a new connection
    finally:
        ops.release_slow.set()
        await client.close()
        await server.stop(timeout_s=1)


async def test_a_call_not_answered_in_time_times_out_and_a_late_answer_is_dropped(
    served: tuple[Ops, LinkServer, int],
) -> None:
    ops, _, port = served
    client = LinkClient("127.0.0.1", port, connections=1)
    try:
        with pytest.raises(TimeoutError):
            await client.call(SLOW, "a", "", b"late", timeout_s=0.1)
        ops.release_slow.set()  # its answer arrives for a call nobody waits for any more
        assert (await client.call(ECHO, "a", "", b"next", 5)).status == 200
    finally:
        await client.close()


async def test_a_stopping_server_answers_the_calls_in_flight_first(
    served: tuple[Ops, LinkServer, int],
) -> None:
    ops, server, port = served
    client = LinkClient("127.0.0.1", port, connections=1)
    try:
        slow = asyncio.ensure_future(client.call(SLOW, "a", "", b"x", 5))
        await asyncio.wait_for(ops.slow_started.wait(), 5)
        stopping = asyncio.ensure_future(server.stop(timeout_s=5))
        await asyncio.sleep(0)  # it stops listening and waits for the call in flight
        assert not stopping.done()
        ops.release_slow.set()
        assert (await slow).body == b"slow:x"
        await stopping
    finally:
        await client.close()


async def test_old_connections_are_replaced_after_their_maximum_age(
    served: tuple[Ops, LinkServer, int],
) -> None:
    _, server, port = served
    client = LinkClient("127.0.0.1", port, connections=1, max_age_s=0.2)
    try:
        await client.call(ECHO, "a", "", b"", 5)
        first = set(server.connections)
        await asyncio.sleep(0.3)
        await client.call(ECHO, "a", "", b"", 5)  # on a fresh connection; the old one closes, idle

        async def only_the_new_one() -> bool:
            return len(server.connections) == 1 and not (server.connections & first)

        deadline = asyncio.get_running_loop().time() + 5
        while not await only_the_new_one():
            assert asyncio.get_running_loop().time() < deadline, "the old connection never closed"
            await asyncio.sleep(0.02)
    finally:
        await client.close()


async def test_an_aged_connection_closes_when_its_last_call_is_answered(
    served: tuple[Ops, LinkServer, int],
) -> None:
    ops, server, port = served
    client = LinkClient("127.0.0.1", port, connections=1, max_age_s=0.2)
    try:
        slow = asyncio.ensure_future(client.call(SLOW, "a", "", b"x", 5))
        await asyncio.wait_for(ops.slow_started.wait(), 5)
        first = set(server.connections)
        await asyncio.sleep(0.3)  # the connection ages past its maximum with the slow call in flight
        await client.call(ECHO, "a", "", b"", 5)  # on a fresh connection: the old one is retired, not closed
        assert first <= server.connections and len(server.connections) == 2
        ops.release_slow.set()
        assert (await slow).body == b"slow:x"  # answered on the retired connection, which then closes

        deadline = asyncio.get_running_loop().time() + 5
        while server.connections & first:
            assert asyncio.get_running_loop().time() < deadline, "the retired connection never closed"
            await asyncio.sleep(0.01)
        assert len(server.connections) == 1
    finally:
        await client.close()


def test_link_urls_name_a_tcp_host_and_port() -> None:
    assert parse_link_url("tcp://quota:8092") == ("quota", 8092)
    for bad in ("http://quota:8092", "tcp://quota", "tcp://:8092", "tcp://quota:8092/x", "quota:8092"):
        with pytest.raises(ValueError):
            parse_link_url(bad)
