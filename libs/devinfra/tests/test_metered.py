"""The metered fake upstream: usage computed from the request, every bill written down, cut streams billed for
what was sent."""

from __future__ import annotations

import io
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from leaky_devinfra.fakes.metered import MeteredProvider, usage_of
from leaky_devinfra.testing import eventually

pytestmark = pytest.mark.integration


def _body(rid: str, **extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": f"hello there [rid:{rid}]"}], **extra}


def test_usage_is_computed_from_the_request_and_capped_by_max_tokens() -> None:
    rid, prompt, completion = usage_of(_body("chaos-1"))
    assert rid == "chaos-1"
    assert prompt == 4 + -(-len("hello there [rid:chaos-1]") // 3)
    assert 4 <= completion < 32
    assert usage_of(_body("chaos-1", max_tokens=2))[2] == 2
    assert usage_of({"messages": [{"role": "user", "content": "no id"}]})[0] == "-"


async def test_bills_plain_streamed_and_cut_requests() -> None:
    log = io.BytesIO()
    provider = MeteredProvider(log=log, chunk_delay_s=0.05)
    runner = web.AppRunner(provider.app(), handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    try:
        async with aiohttp.ClientSession() as s:
            async with s.post(url, json=_body("plain")) as r:
                answer = await r.json()
            _, prompt, completion = usage_of(_body("plain"))
            assert answer["usage"]["total_tokens"] == prompt + completion
            streamed = _body("whole", stream=True, stream_options={"include_usage": True})
            async with s.post(url, json=streamed) as r:
                events = [line async for line in r.content if line.startswith(b"data: {")]
            assert orjson.loads(events[-1][6:])["usage"]["total_tokens"] == sum(usage_of(streamed)[1:])
            async with s.post(url, json=_body("cut", stream=True)) as r:
                await r.content.readline()
                r.close()  # the caller goes away after the first chunk
        bills = await eventually(lambda: len(provider.records) == 3 and provider.records)
        by_rid = {b["rid"]: b for b in bills}
        assert by_rid["plain"]["complete"] and by_rid["whole"]["complete"]
        cut = by_rid["cut"]
        assert not cut["complete"] and cut["completion"] < usage_of(_body("cut"))[2]
        assert [orjson.loads(line)["rid"] for line in log.getvalue().splitlines()] == [
            b["rid"] for b in bills
        ]
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/usage") as r:
            assert await r.json() == bills
    finally:
        await runner.cleanup()
