"""A day's request-log partition starts without statistics; the worker analyzes it once it has recorded enough
of that day, so the detectors' window query looks each session up by its (org, session, time) index instead of
reading every request of the org in the window (0.7-0.9 s a batch at 45,000 rows in bench/analytics.py)."""

import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from leaky_common.events import UsageRecorded
from lt_analytics.adapters.detections import _COLUMN, _WINDOW_STATS
from lt_analytics.adapters.partitions import maintain, partitioned_tables
from lt_analytics.usecases.ingest import Ingest

pytestmark = pytest.mark.integration

TARGETS = 200


def usage(i: int) -> UsageRecorded:
    return UsageRecorded(
        request_id=uuid.uuid4().hex,
        user_id=f"user-{i % 200}",
        org_id=f"org-{i % 5}",
        team_id=f"team-{i % 20}",
        key_id=f"key-{i % 400}",
        session_id=f"sess-{i % 1000}",
        model="mock-gpt",
        provider="mock",
        prompt_tokens=50,
        completion_tokens=20,
        total_tokens=70,
        cost_usd_micros=35,
        prompt_fingerprint=uuid.uuid4().hex,
    )


async def window_plan(pool: asyncpg.Pool) -> str:
    """The plan the detectors' session window query gets now, for TARGETS sessions of the bench's shape."""
    now = datetime.now(UTC)
    ids, orgs = [f"sess-{i}" for i in range(TARGETS)], [f"org-{i % 5}" for i in range(TARGETS)]
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "EXPLAIN " + _WINDOW_STATS.format(column=_COLUMN["session"]),
            ids,
            [now] * TARGETS,
            ["fp"] * TARGETS,
            [60.0] * TARGETS,
            [60.0] * TARGETS,
            [1000] * TARGETS,
            [10**9] * TARGETS,
            [4] * TARGETS,
            list(range(TARGETS)),
            orgs,
        )
    return "\n".join(r[0] for r in rows)


async def test_a_days_partition_is_analyzed_once_the_worker_recorded_enough_of_it(pool: asyncpg.Pool) -> None:
    await maintain(pool, partitioned_tables(90, 400), datetime.now(UTC))
    today = f"request_log_p{datetime.now(UTC):%Y%m%d}"
    # Only the worker may analyze it here: autovacuum coming by during the test would decide it instead.
    await pool.execute(f"ALTER TABLE {today} SET (autovacuum_enabled = false)")
    # Most of the day so far, in time order as traffic comes, written before this process started (so it counts
    # none of it). Without statistics this shape gets the (org, time) index (checked: the plan assertion below
    # fails when the worker does not analyze).
    await pool.execute(
        """INSERT INTO request_log (event_id, request_id, occurred_at, org_id, team_id, user_id, key_id,
               session_id, model, provider, prompt_tokens, completion_tokens, total_tokens, cost_usd_micros,
               latency_ms, status, stream, prompt_fingerprint)
           SELECT 'e' || g, 'r' || g, now() - interval '40 seconds' + g * interval '0.5 milliseconds', 'org-' || (g % 5),
                  'team-' || (g % 20), 'user-' || (g % 200), 'key-' || (g % 400), 'sess-' || (g % 1000),
                  'mock-gpt', 'mock', 50, 20, 70, 35, 12, 'ok', false, md5(g::text)
           FROM generate_series(1, 45000) g"""
    )
    ingest = Ingest(pool, analyze_after=1000)
    await ingest.record([usage(i) for i in range(600)])
    assert await pool.fetchval("SELECT reltuples FROM pg_class WHERE relname = $1", today) <= 0  # not yet

    await ingest.record([usage(i) for i in range(600, 1200)])
    assert await pool.fetchval("SELECT reltuples FROM pg_class WHERE relname = $1", today) >= 45000
    plan = await window_plan(pool)
    assert f"{today}_org_id_session_id_occurred_at_idx" in plan, plan
    assert f"{today}_org_id_occurred_at_idx" not in plan, plan

    # Once per day and process: the next batches of the day do not analyze it again.
    analyzed = await pool.fetchval("SELECT analyze_count FROM pg_stat_user_tables WHERE relname = $1", today)
    await ingest.record([usage(i) for i in range(1200, 2400)])
    again = await pool.fetchval("SELECT analyze_count FROM pg_stat_user_tables WHERE relname = $1", today)
    assert again == analyzed
