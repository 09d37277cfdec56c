"""The benchmark's mock OpenAI upstream: one uvicorn process shared by every measured path.

Answers `POST /v1/chat/completions` with a fixed completion and usage; with `"stream": true`, an SSE stream
(role, two content chunks, finish, and a usage chunk when `stream_options.include_usage` is set).

    python bench/mock_upstream.py PORT
"""

from __future__ import annotations

import sys

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

USAGE = {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
BODY = orjson.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 0,
        "model": "bench-gpt",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hi there"}, "finish_reason": "stop"}
        ],
        "usage": USAGE,
    }
)


def _chunk(delta: dict[str, object], finish: str | None = None) -> bytes:
    body = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": "bench-gpt",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + orjson.dumps(body) + b"\n\n"


STREAM = [
    _chunk({"role": "assistant", "content": ""}),
    _chunk({"content": "hi"}),
    _chunk({"content": " there"}),
]
STREAM_END = _chunk({}, "stop")
USAGE_CHUNK = (
    b"data: "
    + orjson.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "bench-gpt",
            "choices": [],
            "usage": USAGE,
        }
    )
    + b"\n\n"
)


async def chat(request: Request) -> Response:
    """A fixed answer; streamed when asked."""
    body = orjson.loads(await request.body())
    if not body.get("stream"):
        return Response(BODY, media_type="application/json")
    with_usage = bool((body.get("stream_options") or {}).get("include_usage"))

    async def events():  # type: ignore[no-untyped-def]
        for part in STREAM:
            yield part
        yield STREAM_END
        if with_usage:
            yield USAGE_CHUNK
        yield b"data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream")


app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])

if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )
