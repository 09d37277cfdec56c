"""A gateway SIGKILLed while relaying a stream: the next gateway to start charges what was relayed, once.

Without the crash journal the stream's usage event is never written; its reservation is charged in full at
expiry (40 tokens of output budget instead of the handful relayed) and analytics never hears of it. Here a
whole stack (`bench/chaos.py`'s harness, a metered fake provider streaming one token every 100 ms) relays a
long stream; the gateway is killed after the client has some tokens, then restarted. Quota's ledger must
charge the stream its prompt plus the tokens relayed, as a usage row, analytics must count it once with the
same tokens, and every invariant of the chaos run must hold.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
import zlib
from pathlib import Path

import aiohttp
import asyncpg
import orjson
import pytest

from leaky_common.db import database_url_for

from .chaos_harness import load_chaos

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]


def long_rid(prefix: str) -> str:
    """A request id the metered provider answers with at least 28 tokens (4 + crc32 % 28)."""
    while True:
        rid = f"{prefix}{uuid.uuid4().hex[:12]}"
        if 4 + zlib.crc32(rid.encode()) % 28 >= 28:
            return rid


async def read_some(resp: aiohttp.ClientResponse, tokens: int) -> int:
    """Read the stream until `tokens` content chunks arrived."""
    seen = 0
    async for line in resp.content:
        if b'"content":" tok"' in line:
            seen += 1
            if seen >= tokens:
                return seen
    raise AssertionError(f"the stream ended after {seen} tokens")


async def read_rest(resp: aiohttp.ClientResponse) -> tuple[int, bool]:
    """The content chunks that still arrive, and whether the stream ended properly (it must not)."""
    seen, done = 0, False
    try:
        async for line in resp.content:
            seen += b'"content":" tok"' in line
            done = done or line.startswith(b"data: [DONE]")
    except aiohttp.ClientError:
        pass
    return seen, done


async def test_a_stream_whose_gateway_was_killed_is_charged_what_was_relayed(tmp_path: Path) -> None:
    chaos = load_chaos()
    # 40 tokens 250 ms apart: a 10 s stream, time enough to start the kill command on a loaded machine.
    config = chaos.Config(components=(), users=1, chunk_delay_ms=250, reservation_ttl_s=300, converge_s=60.0)
    h = chaos.Harness(config, tmp_path / "run")
    try:
        h.up()
        await h.make_users()
        rid = long_rid(sys.modules["chaos_checks"].RID_PREFIX)
        body = {
            "model": "chaos-gpt",
            "messages": [{"role": "user", "content": f"a long story please [rid:{rid}]"}],
            "max_tokens": 40,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        headers = {"Authorization": f"Bearer {h.keys[0]}", "X-Request-ID": rid}
        url = f"{h.gateway}/v1/chat/completions"
        async with aiohttp.ClientSession() as session, session.post(url, json=body, headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            received = await read_some(resp, 3)
            # Killed in this process (a `stack.py kill` subprocess took seconds to start on a loaded CI machine:
            # the stream had ended by then).
            await asyncio.to_thread(chaos.stack_chaos().kill, h.run_dir, "gateway")
            more, done = await read_rest(resp)
        received += more
        assert not done, "the stream finished before the gateway was killed"
        await asyncio.to_thread(chaos._stack, h.run_dir, "restart", "gateway")

        # Every invariant of the chaos run holds, the stream counting as unfinished: charged, as usage.
        inv = await chaos._converge(h, {rid}, {})
        assert inv.failed() == [], "\n".join(inv.lines())
        stores = h.stores()
        quota = await asyncpg.connect(database_url_for(stores.postgres, "lt_quota"))
        try:
            rows = await quota.fetch("SELECT kind, amount FROM ledger WHERE request_id = $1", rid)
            still_open = await quota.fetchval("SELECT count(*) FROM open_reservations")
        finally:
            await quota.close()
        analytics = await asyncpg.connect(database_url_for(stores.postgres, "lt_analytics"))
        try:
            logged = await analytics.fetch(
                "SELECT prompt_tokens, completion_tokens, total_tokens, status FROM request_log "
                "WHERE request_id = $1",
                rid,
            )
        finally:
            await analytics.close()
        assert len(logged) == 1, logged
        row = logged[0]
        # What the gateway relayed: at least what the client read (data in flight when the connection broke is
        # lost on its side), at most what the provider sent (the provider counts tokens still in flight too).
        bills = [orjson.loads(line) for line in Path(stores.provider_log).read_bytes().splitlines() if line]
        (bill,) = [b for b in bills if b["rid"] == rid]
        assert bill["complete"] is False
        assert received <= row["completion_tokens"] <= bill["completion"], (received, dict(row), bill)
        assert row["status"] == "error"
        assert [(r["kind"], r["amount"]) for r in rows] == [("usage", row["total_tokens"])]
        # Far below the reservation charged at expiry without the journal (prompt + the 40-token budget).
        assert row["total_tokens"] < row["prompt_tokens"] + 40
        assert still_open == 0
    finally:
        started = time.monotonic()
        h.down()
        assert time.monotonic() - started < 120
