"""A TCP proxy that can drop, hold or delay the traffic it relays, for outages of a server that must not be
restarted (the tansu broker keeps nothing across restarts, so its outage is made here instead).

    python -m leaky_devinfra.proxy --listen-port 9092 --target 127.0.0.1:19092 --control /run/proxy.sock

Faults, each for N seconds, then traffic flows again:

- `drop`: every open connection is reset, new ones are accepted and closed at once (a crashed server);
- `hang`: connections stay open but no byte moves either way (a partition: clients wait for timeouts);
- `delay`: every chunk is held `delay_s` seconds before it is forwarded (a slow network).

The control socket is a Unix socket (mode 0600) taking one JSON line per connection, e.g.
`{"fault": "drop", "seconds": 10}`, `{"fault": "delay", "seconds": 10, "delay_s": 0.5}` or `{"fault": "none"}`,
and answering the state as one JSON line; `send_fault()` is the client.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["FAULTS", "FaultyProxy", "main", "send_fault"]

FAULTS = ("none", "drop", "hang", "delay")
_CHUNK = 65_536


@dataclass
class FaultyProxy:
    """Relays TCP connections from `listen_port` to `target`, misbehaving while a fault is on."""

    listen_port: int
    target_host: str
    target_port: int
    fault: str = "none"
    until: float = 0.0
    delay_s: float = 0.0
    dropped: int = 0
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)
    _flowing: asyncio.Event = field(default_factory=asyncio.Event)

    def active(self) -> str:
        """The fault in force now ("none" once its time is up)."""
        if self.fault != "none" and time.monotonic() >= self.until:
            self.fault = "none"
            self._flowing.set()
        return self.fault

    def set_fault(self, fault: str, seconds: float, delay_s: float = 0.0) -> None:
        """Start `fault` for `seconds` (or clear it with "none")."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}")
        self.fault, self.until, self.delay_s = fault, time.monotonic() + seconds, delay_s
        if fault == "none":
            self._flowing.set()
            return
        self._flowing.clear()
        asyncio.get_running_loop().call_later(seconds, self.active)
        if fault == "drop":
            for writer in list(self._writers):
                self._reset(writer)

    def state(self) -> dict[str, Any]:
        """What the proxy is doing, for the control socket."""
        fault = self.active()
        left = max(0.0, self.until - time.monotonic()) if fault != "none" else 0.0
        return {"fault": fault, "seconds_left": round(left, 3), "connections": len(self._writers),
                "dropped": self.dropped}  # fmt: skip

    def _reset(self, writer: asyncio.StreamWriter) -> None:
        self.dropped += 1
        self._writers.discard(writer)
        with contextlib.suppress(Exception):
            sock = writer.get_extra_info("socket")
            if sock is not None:  # RST rather than FIN: the peer sees a broken connection, as on a crash
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            writer.transport.abort()

    async def _gate(self) -> None:
        """Wait while traffic is held; sleep the delay while it is slowed."""
        fault = self.active()
        if fault == "hang":
            await self._flowing.wait()
        elif fault == "delay":
            await asyncio.sleep(self.delay_s)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError, asyncio.IncompleteReadError):
            while data := await reader.read(_CHUNK):
                await self._gate()
                if writer not in self._writers:
                    return
                writer.write(data)
                await writer.drain()
        self._writers.discard(writer)
        with contextlib.suppress(Exception):
            writer.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.active() == "drop":
            self._reset(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            self._reset(writer)
            return
        self._writers.update((writer, up_writer))
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))

    async def _control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            command = json.loads(await reader.readline() or b"{}")
            if "fault" in command:
                self.set_fault(
                    str(command["fault"]), float(command.get("seconds", 0)), float(command.get("delay_s", 0))
                )
            answer = self.state()
        except (ValueError, TypeError) as exc:
            answer = {"error": str(exc)}
        writer.write(json.dumps(answer).encode() + b"\n")
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    async def serve(self, control: Path) -> None:
        """Relay until cancelled (SIGTERM)."""
        self._flowing.set()
        server = await asyncio.start_server(self._client, "127.0.0.1", self.listen_port, reuse_address=True)
        control.unlink(missing_ok=True)
        old = os.umask(0o177)
        try:
            ctl = await asyncio.start_unix_server(self._control, str(control))
        finally:
            os.umask(old)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        async with server, ctl:
            await stop.wait()
        control.unlink(missing_ok=True)


def send_fault(control: Path, fault: str, seconds: float = 0.0, delay_s: float = 0.0) -> dict[str, Any]:
    """Tell the proxy behind `control` to start `fault` for `seconds`; returns its state."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(control))
        s.sendall(json.dumps({"fault": fault, "seconds": seconds, "delay_s": delay_s}).encode() + b"\n")
        answer: dict[str, Any] = json.loads(s.makefile("rb").readline())
    if "error" in answer:
        raise ValueError(answer["error"])
    return answer


def main() -> None:
    """Run one proxy until SIGTERM."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--listen-port", type=int, required=True)
    parser.add_argument("--target", required=True, help="HOST:PORT to relay to")
    parser.add_argument("--control", type=Path, required=True, help="Unix socket taking fault commands")
    args = parser.parse_args()
    host, _, port = str(args.target).rpartition(":")
    proxy = FaultyProxy(args.listen_port, host or "127.0.0.1", int(port))
    asyncio.run(proxy.serve(args.control))


if __name__ == "__main__":
    main()
