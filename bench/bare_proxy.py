"""Bench only (`bench/floor.py`): the floor of a Python hop. Serves `POST /v1/chat/completions` as our services
serve (uvicorn with uvloop and httptools, no access log) and forwards the body to an upstream with aiohttp,
the gateway's HTTP client: no parsing, no governance, no metrics.

    python bench/bare_proxy.py PORT UPSTREAM_URL
"""

from __future__ import annotations

import sys
from typing import Any

import aiohttp
import uvicorn

UPSTREAM = ""
_session: list[aiohttp.ClientSession] = []


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                _session.append(aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)))
                await send({"type": "lifespan.startup.complete"})
            else:
                await _session[0].close()
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    headers = {"content-type": "application/json"}
    async with _session[0].post(UPSTREAM + "/v1/chat/completions", data=body, headers=headers) as resp:
        answer = await resp.read()
        status = resp.status
    await send(
        {"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": answer})


if __name__ == "__main__":
    UPSTREAM = sys.argv[2].rstrip("/")
    uvicorn.run(
        app, host="127.0.0.1", port=int(sys.argv[1]), loop="uvloop", http="httptools", access_log=False,
        log_level="warning",
    )  # fmt: skip
