"""The request log and rollups are partitioned by time: the worker's upkeep creates the coming partitions, moves
what the default partition caught into its dated one, drops partitions past the retention, and a redelivered
event is still recognised after its row moved."""

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from leaky_common.events import UsageRecorded
from lt_analytics.adapters.partitions import maintain, partitioned_tables
from lt_analytics.usecases.ingest import Ingest, Outcome

pytestmark = pytest.mark.integration

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)
SPECS = partitioned_tables(request_log_days=30, rollup_days=90)


def _event(at: datetime, n: int) -> UsageRecorded:
    return UsageRecorded(
        request_id=f"r{n}",
        occurred_at=at,
        org_id="o1",
        user_id="u1",
        key_id="k1",
        model="m",
        provider="p",
        prompt_tokens=10,
        completion_tokens=5,
        total_tokens=15,
    )


async def _where(pool: asyncpg.Pool, table: str) -> dict[str, str]:
    key = "request_id" if table == "request_log" else "grain || ':' || bucket::text"
    rows = await pool.fetch(f"SELECT {key} AS k, tableoid::regclass::text AS part FROM {table}")
    return {r["k"]: r["part"] for r in rows}


async def test_both_tables_are_partitioned_by_time(pool: asyncpg.Pool) -> None:
    kinds = await pool.fetch(
        "SELECT relname, relkind::text AS relkind FROM pg_class WHERE relname IN ('request_log', 'usage_rollup') ORDER BY relname"
    )
    assert [(r["relname"], r["relkind"]) for r in kinds] == [("request_log", "p"), ("usage_rollup", "p")]


async def test_upkeep_creates_moves_and_drops_partitions(pool: asyncpg.Pool) -> None:
    ingest = Ingest(pool)
    today, old, ahead = (
        _event(NOW, 1),
        _event(NOW - timedelta(days=40), 2),
        _event(NOW + timedelta(days=60), 3),
    )
    outcomes = await ingest.record([today, old, ahead])
    assert set(outcomes.values()) == {Outcome.RECORDED}
    assert set((await _where(pool, "request_log")).values()) == {"request_log_default"}

    report = await maintain(pool, SPECS, NOW)
    # Days from the cutoff (30 days back) through a week ahead; months of the rollups likewise.
    assert "request_log_p20260615" in report.created and "request_log_p20260622" in report.created
    assert "request_log_p20260515" not in report.created and "request_log_p20260623" not in report.created
    assert {"usage_rollup_p202603", "usage_rollup_p202606"} <= set(report.created)
    log = await _where(pool, "request_log")
    # Today's row moved to its day; the one older than the retention is gone; the far-future one waits in the
    # default partition for its day's partition.
    assert log == {"r1": "request_log_p20260615", "r3": "request_log_default"}
    assert report.moved_rows >= 1

    # A redelivery of today's event, after its row moved, changes nothing.
    again = await ingest.record([today])
    assert again == {today.event_id: Outcome.DUPLICATE}
    assert await pool.fetchval("SELECT count(*) FROM request_log WHERE request_id = 'r1'") == 1
    totals = await pool.fetchval(
        "SELECT sum(requests) FROM usage_rollup WHERE scope_type = 'user' AND scope_id = 'u1' AND grain = 'day'"
    )
    assert totals == 3  # the rollups keep 90 days: the 40-day-old request still counts there

    # A second run changes nothing; one 31 days later drops what fell out of the retention.
    assert (await maintain(pool, SPECS, NOW)).created == []
    later = await maintain(pool, SPECS, NOW + timedelta(days=31))
    assert "request_log_p20260615" in later.dropped
    assert "request_log_p20260516" in later.dropped  # the first day kept at NOW (cutoff May 16)
    assert "r1" not in await _where(pool, "request_log")
    assert "request_log_p20260723" in later.created


async def test_concurrent_upkeep_runs_agree(pool: asyncpg.Pool) -> None:
    reports = await asyncio.gather(*(maintain(pool, SPECS, NOW) for _ in range(3)))
    created = [name for r in reports for name in r.created]
    assert len(created) == len(set(created)) and created
