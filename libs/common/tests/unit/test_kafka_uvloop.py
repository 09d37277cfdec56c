"""aiokafka's connection under uvloop, after the peer closed it: the write must fail as a broken Kafka
connection (which aiokafka's tasks survive), never as the bare RuntimeError that killed quota's metadata task
and left its command consumer hung after a broker outage (leaky_common.kafka_uvloop)."""

from __future__ import annotations

import asyncio

import uvloop
from aiokafka.conn import AIOKafkaConnection
from aiokafka.errors import KafkaConnectionError
from aiokafka.protocol.metadata import MetadataRequest

from leaky_common import kafka  # noqa: F401  (installs the guard)


async def _connection_whose_transport_closed() -> AIOKafkaConnection:
    async def hang_up(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await reader.read() == b""  # the peer hung up
    writer.close()
    await writer.wait_closed()
    server.close()
    conn = AIOKafkaConnection("127.0.0.1", port)
    conn._reader, conn._writer = reader, writer
    conn._versions = {MetadataRequest.API_KEY: (0, 0)}
    conn._read_task = asyncio.ensure_future(asyncio.sleep(3600))  # as connect() leaves it: reading replies
    return conn


def _send_on_uvloop() -> tuple[BaseException | None, bool]:
    async def scenario() -> tuple[BaseException | None, bool]:
        conn = await _connection_whose_transport_closed()
        try:
            await conn.send(MetadataRequest([]))
        except BaseException as exc:
            return exc, conn.connected()
        return None, conn.connected()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(scenario())


def test_a_write_on_a_closed_transport_is_a_broken_connection_on_uvloop() -> None:
    error, still_connected = _send_on_uvloop()
    assert isinstance(error, KafkaConnectionError), repr(error)
    assert "broken" in str(error)
    assert isinstance(error.__cause__, RuntimeError)  # uvloop's own error, kept as the cause
    assert not still_connected  # closed, so the client opens a new one on the next request


def test_the_guard_is_installed_once() -> None:
    from leaky_common import kafka_uvloop

    send = AIOKafkaConnection.send
    kafka_uvloop.install()
    assert AIOKafkaConnection.send is send
