"""The chaos run's clients: a steady mixed load through the public gateway, every outcome written down.

Kinds: `chat` (plain), `stream` (read to the end), `cut` (a stream the client closes after its first content
chunk) and `purchase` (POST /v1/purchases). Every chat names itself to the metered fake provider with
`[rid:<id>]` in its message and to the gateway with `X-Request-ID: <id>`, so the provider's bill, the quota
ledger and the analytics request log can be joined per request.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

__all__ = ["Load", "Op"]

MODEL = "chaos-gpt"
KINDS = ("chat", "stream", "cut", "purchase")
WEIGHTS = (40, 30, 15, 15)


@dataclass
class Op:
    """One client request and what the client saw: an HTTP status, or `conn` (connection refused or broken
    before an answer) or `timeout`. `broken` marks a 200 stream that broke before its end."""

    kind: str
    rid: str
    start: float
    end: float = 0.0
    status: str = ""
    broken: bool = False
    answered: float = 0.0  # wall clock at the end

    @property
    def ok(self) -> bool:
        return self.status.startswith("2") and not self.broken


@dataclass
class Load:
    """N workers sending requests back to back (with a small pause) until `stop()`."""

    gateway: str
    keys: list[str]
    workers: int = 4
    pause_s: float = 0.02
    timeout_s: float = 20.0
    seed: int = 7
    ops: list[Op] = field(default_factory=list)
    purchase_ids: list[str] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        """Start the workers."""
        for index in range(self.workers):
            self._tasks.append(asyncio.create_task(self._worker(index)))

    async def stop(self) -> None:
        """Stop sending and wait for the requests in flight."""
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _worker(self, index: int) -> None:
        rng = random.Random(self.seed * 1000 + index)
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        connector = aiohttp.TCPConnector(limit=4, force_close=False)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            while not self._stop.is_set():
                kind = rng.choices(KINDS, WEIGHTS)[0]
                key = self.keys[index % len(self.keys)]
                op = Op(kind, f"chaos-{uuid.uuid4().hex[:20]}", time.monotonic())
                try:
                    await self._send(session, key, op)
                except TimeoutError:
                    op.status = "timeout"
                except (aiohttp.ClientError, ConnectionError) as exc:
                    if op.status:  # the answer began, then the connection broke
                        op.broken = True
                    else:
                        op.status = "conn"
                        _ = exc
                op.end, op.answered = time.monotonic(), time.time()
                self.ops.append(op)
                await asyncio.sleep(self.pause_s)

    async def _send(self, session: aiohttp.ClientSession, key: str, op: Op) -> None:
        headers = {"Authorization": f"Bearer {key}", "X-Request-ID": op.rid}
        if op.kind == "purchase":
            headers["Idempotency-Key"] = op.rid
            async with session.post(
                f"{self.gateway}/v1/purchases", json={"tokens": 1000}, headers=headers
            ) as r:
                op.status = str(r.status)
                answer = await r.read()
                if r.status in (200, 202):
                    self.purchase_ids.append(str(orjson.loads(answer)["id"]))
            return
        stream = op.kind in ("stream", "cut")
        body: dict[str, Any] = {
            "model": MODEL,
            "messages": [{"role": "user", "content": f"chaos {op.kind} please [rid:{op.rid}]"}],
            "max_tokens": 40,
        }
        if stream:
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        async with session.post(f"{self.gateway}/v1/chat/completions", json=body, headers=headers) as r:
            op.status = str(r.status)
            if not stream or r.status != 200:
                await r.read()
                return
            await self._read_stream(r, op)

    @staticmethod
    async def _read_stream(r: aiohttp.ClientResponse, op: Op) -> None:
        done = False
        async for line in r.content:
            if op.kind == "cut" and b'"content":" tok"' in line:
                r.close()  # the client goes away mid-stream
                return
            if line.startswith(b"data: [DONE]"):
                done = True
        op.broken = not done
