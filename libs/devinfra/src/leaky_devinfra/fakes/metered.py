"""A fake OpenAI-compatible upstream that meters itself: the usage it reports is computed from the request
body (not from any gateway estimate), differs per request, and every request it answered is written down,
so a test can compare what the gateway charged with what the provider billed, request by request.

    python -m leaky_devinfra.fakes.metered --port 9000 --log usage.jsonl [--chunk-delay-ms 20]

Requests name themselves with `[rid:<id>]` anywhere in the last message (the chaos harness's request id).
Usage: prompt = 4 per message + ceil(characters / 3); completion = 4 + crc32(rid) % 28, never above
`max_tokens`; one content chunk per completion token when streamed (`chunk-delay-ms` apart). One JSON line per
request in the log, appended and flushed when the answer is complete or the caller went away mid-stream
(`complete: false`, completion = tokens sent so far): what a real provider would bill. `GET /usage` returns
the same records.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from uuid import uuid4

import orjson
from aiohttp import web

__all__ = ["MeteredProvider", "main", "usage_of"]

_RID = re.compile(r"\[rid:([A-Za-z0-9_.-]{1,64})\]")


def _text(messages: list[Any]) -> str:
    parts: list[str] = []
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts += [str(p.get("text", "")) for p in content if isinstance(p, dict)]
    return "".join(parts)


def usage_of(body: dict[str, Any]) -> tuple[str, int, int]:
    """The request id, prompt tokens and completion tokens the provider bills for `body`."""
    messages = body.get("messages") or []
    text = _text(messages)
    found = _RID.findall(_text(messages[-1:]))
    rid = found[-1] if found else "-"
    prompt = 4 * len(messages) + -(-len(text) // 3)
    completion = 4 + zlib.crc32(rid.encode()) % 28
    cap = body.get("max_completion_tokens") or body.get("max_tokens")
    if isinstance(cap, int) and cap > 0:
        completion = min(completion, cap)
    return rid, prompt, completion


@dataclass
class MeteredProvider:
    """The fake upstream; `records` holds what was billed, and `log` (if given) gets one line per record."""

    log: IO[bytes] | None = None
    chunk_delay_s: float = 0.02
    records: list[dict[str, Any]] = field(default_factory=list)

    def app(self) -> web.Application:
        """The aiohttp application."""
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/usage", self._usage)
        app.router.add_get("/health", self._health)
        return app

    def _bill(self, rid: str, prompt: int, completion: int, *, stream: bool, complete: bool) -> None:
        record = {"rid": rid, "prompt": prompt, "completion": completion, "total": prompt + completion,
                  "stream": stream, "complete": complete, "at": time.time()}  # fmt: skip
        self.records.append(record)
        if self.log is not None:
            self.log.write(orjson.dumps(record) + b"\n")
            self.log.flush()

    async def _health(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _usage(self, _request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(self.records), content_type="application/json")

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        rid, prompt, completion = usage_of(body)
        model, cid, created = body.get("model"), f"chatcmpl-{uuid4().hex}", int(time.time())
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        if not body.get("stream"):
            self._bill(rid, prompt, completion, stream=False, complete=True)
            message = {"role": "assistant", "content": " tok" * completion}
            answer = {"id": cid, "object": "chat.completion", "created": created, "model": model, "usage": usage,
                      "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}  # fmt: skip
            return web.Response(body=orjson.dumps(answer), content_type="application/json")
        resp = web.StreamResponse(headers={"content-type": "text/event-stream", "cache-control": "no-cache"})
        await resp.prepare(request)

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            event = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                     "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}  # fmt: skip
            return b"data: " + orjson.dumps(event) + b"\n\n"

        sent = 0
        try:
            await resp.write(chunk({"role": "assistant", "content": ""}))
            for _ in range(completion):
                await asyncio.sleep(self.chunk_delay_s)
                await resp.write(chunk({"content": " tok"}))
                sent += 1
            await resp.write(chunk({}, "stop"))
            if (body.get("stream_options") or {}).get("include_usage"):
                event = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                         "choices": [], "usage": usage}  # fmt: skip
                await resp.write(b"data: " + orjson.dumps(event) + b"\n\n")
            await resp.write(b"data: [DONE]\n\n")
        except (asyncio.CancelledError, ConnectionError):
            self._bill(rid, prompt, sent, stream=True, complete=False)
            raise
        self._bill(rid, prompt, completion, stream=True, complete=True)
        await resp.write_eof()
        return resp


def main() -> None:
    """Serve the metered upstream until interrupted."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", type=Path, required=True, help="JSON lines, appended")
    parser.add_argument("--chunk-delay-ms", type=float, default=20.0)
    args = parser.parse_args()
    with args.log.open("ab") as log:
        provider = MeteredProvider(log=log, chunk_delay_s=args.chunk_delay_ms / 1000)
        web.run_app(
            provider.app(),
            host="127.0.0.1",
            port=args.port,
            access_log=None,
            print=None,
            handler_cancellation=True,
        )


if __name__ == "__main__":
    main()
