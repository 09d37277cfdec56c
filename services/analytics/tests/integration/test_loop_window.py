"""Without a session, four identical requests freeze the key only when they fall within the loop window.

The events carry their own `occurred_at`, so the window is crossed without waiting; real Postgres stores the
run between batches, as the worker does.
"""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
import pytest

from leaky_common.events import UsageRecorded
from lt_analytics.adapters.thresholds import ThresholdStore
from lt_analytics.domain.thresholds import Thresholds
from lt_analytics.handlers import Outcome, UsageHandler
from lt_analytics.usecases.detect import AnomalyDetector
from lt_analytics.usecases.ingest import Ingest

pytestmark = pytest.mark.integration

WINDOW_S = 30


def handler(pool: asyncpg.Pool) -> UsageHandler:
    limits = Thresholds(loop_consecutive=4, loop_window_s=WINDOW_S)
    return UsageHandler(Ingest(pool, AnomalyDetector(ThresholdStore(limits, ttl_s=0))))


def ping(key_id: str, at: datetime) -> UsageRecorded:
    return UsageRecorded(
        request_id=uuid.uuid4().hex,
        user_id="admin",
        org_id="org-1",
        key_id=key_id,
        model="mock-gpt",
        provider="mock",
        prompt_tokens=1,
        completion_tokens=1,
        total_tokens=2,
        prompt_fingerprint="fp-ping",
        occurred_at=at,
    )


async def feed_one_by_one(h: UsageHandler, *events: UsageRecorded) -> None:
    # One batch per event: the run is loaded from and saved to Postgres between requests.
    for e in events:
        assert await h.handle(e.model_dump_json().encode()) is Outcome.RECORDED


async def alerts(pool: asyncpg.Pool, key_id: str) -> list[dict[str, Any]]:
    rows = await pool.fetch("SELECT topic, value FROM outbox ORDER BY id")
    found = [(r["topic"], orjson.loads(bytes(r["value"]))) for r in rows]
    return [m for t, m in found if t == "alerts" and m["key_id"] == key_id]


async def test_four_spread_wider_than_the_window_do_not_freeze_four_within_do(pool: asyncpg.Pool) -> None:
    h = handler(pool)
    start = datetime.now(UTC) - timedelta(hours=1)
    # 0, 20, 40, 60 s: each step inside the window, but never four of them within 30 s.
    await feed_one_by_one(h, *(ping("key-spread", start + timedelta(seconds=20 * i)) for i in range(4)))
    # Once a day for ten days: the start-up ping the issue saw.
    await feed_one_by_one(h, *(ping("key-daily", start - timedelta(days=10 - d)) for d in range(10)))
    assert await alerts(pool, "key-spread") == []
    assert await alerts(pool, "key-daily") == []
    assert await pool.fetchval("SELECT count(*) FROM anomalies") == 0

    # Four within 30 s: a loop, and the key is frozen.
    await feed_one_by_one(h, *(ping("key-fast", start + timedelta(seconds=5 * i)) for i in range(4)))
    [alert] = await alerts(pool, "key-fast")
    assert (alert["kind"], alert["frozen"], alert["session_id"]) == ("loop", True, None)
    freezes = await pool.fetch("SELECT value FROM outbox WHERE topic = 'quota.freeze-requests'")
    assert [orjson.loads(bytes(r["value"]))["target_id"] for r in freezes] == ["key-fast"]
