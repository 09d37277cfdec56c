"""The rollup rows of a batch go through a per-connection staging table (binary COPY, then one upsert): against
real Postgres, batch after batch on one connection adds each event exactly once, a batch rolled back leaves
nothing staged for the next, and the upsert refuses to run outside the batch's transaction."""

import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from leaky_common.db import create_pool
from leaky_common.events import UsageRecorded
from lt_analytics.adapters import repository
from lt_analytics.domain.rollups import aggregate
from lt_analytics.usecases.ingest import Ingest, Outcome

pytestmark = pytest.mark.integration

AT = datetime(2026, 12, 2, 10, 30, tzinfo=UTC)


def usage(i: int) -> UsageRecorded:
    return UsageRecorded(
        request_id=uuid.uuid4().hex,
        user_id=f"u{i % 3}",
        org_id="org-1",
        team_id="team-a",
        key_id=f"key-{i % 2}",
        session_id=f"s{i % 5}",
        model="mock-gpt",
        provider="mock",
        prompt_tokens=10,
        completion_tokens=i,
        total_tokens=10 + i,
        cost_usd_micros=2 * i,
        occurred_at=AT,
    )


async def rollup(pool: asyncpg.Pool, scope_type: str, grain: str) -> dict[str, tuple[int, int]]:
    rows = await pool.fetch(
        "SELECT scope_id, requests, total_tokens FROM usage_rollup WHERE scope_type = $1 AND grain = $2",
        scope_type,
        grain,
    )
    return {r["scope_id"]: (r["requests"], r["total_tokens"]) for r in rows}


async def test_batches_on_one_connection_add_each_event_once(db_url: str, pool: asyncpg.Pool) -> None:
    one = await create_pool(db_url, min_size=1, max_size=1)  # every batch on the same connection
    try:
        ingest = Ingest(one)
        events = [usage(i) for i in range(30)]
        for start in range(0, 30, 10):
            await ingest.record(events[start : start + 10])
        # A batch that fails after its rows were staged leaves nothing behind for the next one.
        async with one.acquire() as conn:
            with pytest.raises(ZeroDivisionError):
                async with conn.transaction():
                    await repository.add_aggregates(conn, aggregate([usage(99)]))
                    _ = 1 / 0
        await ingest.record([usage(30)])
    finally:
        await one.close()

    counted = [*events, usage(30)]
    assert await rollup(pool, "org", "day") == {"org-1": (31, sum(e.total_tokens for e in counted))}
    for grain in ("minute", "hour", "day"):
        users = await rollup(pool, "user", grain)
        assert users == {
            u: (
                sum(1 for e in counted if e.user_id == u),
                sum(e.total_tokens for e in counted if e.user_id == u),
            )
            for u in ("u0", "u1", "u2")
        }
    assert sum(n for n, _ in (await rollup(pool, "session", "hour")).values()) == 31


async def test_the_rollup_upsert_runs_only_inside_the_batchs_transaction(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        with pytest.raises(RuntimeError, match="inside the transaction"):
            await repository.add_aggregates(conn, aggregate([usage(1)]))
    assert await rollup(pool, "org", "day") == {}


async def test_sums_made_ahead_are_made_again_when_some_events_were_recorded_already(
    pool: asyncpg.Pool,
) -> None:
    """The worker sums a batch before its transaction; a redelivered event found in the request log must not be
    counted twice by those sums."""
    ingest = Ingest(pool)
    events = [usage(i) for i in range(6)]
    await ingest.record(events[:2])
    outcomes = await ingest.record(events, aggregate(events))  # summed ahead over all six
    assert [outcomes[e.event_id] for e in events] == [Outcome.DUPLICATE] * 2 + [Outcome.RECORDED] * 4
    assert await rollup(pool, "org", "day") == {"org-1": (6, sum(e.total_tokens for e in events))}
    assert sum(n for n, _ in (await rollup(pool, "session", "hour")).values()) == 6
