"""The fault-injecting TCP proxy in front of the broker: relays bytes, then drops, holds or delays them."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from leaky_devinfra.infra import free_port
from leaky_devinfra.proxy import FaultyProxy, send_fault
from leaky_devinfra.testing import eventually

pytestmark = pytest.mark.integration


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(1024):
        writer.write(data)
        await writer.drain()
    writer.close()


@contextlib.asynccontextmanager
async def _proxied(tmp_path: Path) -> AsyncIterator[tuple[FaultyProxy, Path]]:
    echo = await asyncio.start_server(_echo, "127.0.0.1", 0)
    target = echo.sockets[0].getsockname()[1]
    proxy = FaultyProxy(free_port(), "127.0.0.1", target)
    control = tmp_path / "proxy.sock"
    task = asyncio.create_task(proxy.serve(control))
    await eventually(control.exists)
    try:
        yield proxy, control
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        echo.close()


async def _roundtrip(port: int, payload: bytes, timeout: float = 2.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.readexactly(len(payload)), timeout)
    finally:
        writer.close()


async def test_relays_then_drops_for_the_outage_then_relays_again(tmp_path: Path) -> None:
    async with _proxied(tmp_path) as (proxy, control):
        assert await _roundtrip(proxy.listen_port, b"hello") == b"hello"
        reader, writer = await asyncio.open_connection("127.0.0.1", proxy.listen_port)
        writer.write(b"x")
        assert await reader.readexactly(1) == b"x"

        state = await asyncio.to_thread(send_fault, control, "drop", 0.6)
        assert state["fault"] == "drop"
        # The open connection is reset, and a new one is closed at once.
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            writer.write(b"y")
            await writer.drain()
            await asyncio.wait_for(reader.readexactly(1), 2)
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await _roundtrip(proxy.listen_port, b"during")
        # After the outage, traffic flows again.
        assert await eventually(lambda: _ok(proxy.listen_port), timeout=5) == b"after"
        assert proxy.state()["fault"] == "none"


async def _ok(port: int) -> bytes | None:
    try:
        return await _roundtrip(port, b"after", timeout=0.5)
    except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
        return None


async def test_hang_holds_bytes_until_the_outage_ends_and_delay_slows_them(tmp_path: Path) -> None:
    async with _proxied(tmp_path) as (proxy, control):
        await asyncio.to_thread(send_fault, control, "hang", 0.5)
        started = time.monotonic()
        assert await _roundtrip(proxy.listen_port, b"held", timeout=5) == b"held"
        assert time.monotonic() - started >= 0.4

        await asyncio.to_thread(send_fault, control, "delay", 5, 0.2)
        started = time.monotonic()
        assert await _roundtrip(proxy.listen_port, b"slow", timeout=5) == b"slow"
        assert time.monotonic() - started >= 0.35  # held once each way
        assert (await asyncio.to_thread(send_fault, control, "none"))["fault"] == "none"


async def test_control_socket_refuses_unknown_faults_and_is_private(tmp_path: Path) -> None:
    async with _proxied(tmp_path) as (_proxy, control):
        assert control.stat().st_mode & 0o077 == 0
        with pytest.raises(ValueError, match="unknown fault"):
            await asyncio.to_thread(send_fault, control, "explode", 1)
