"""SQL of the usage tables: the request log (analytics' inbox, keyed by event id), the aggregates, and the
reads the reports make."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Any

import asyncpg

from leaky_common.events import UsageRecorded
from lt_analytics.domain.rollups import Aggregates
from lt_analytics.domain.usage import DailyUsage

__all__ = [
    "MIGRATIONS",
    "add_aggregates",
    "analyze_if_never_analyzed",
    "daily_usage",
    "efficiency_ranking",
    "efficiency_sums",
    "list_anomalies",
    "log_requests",
    "scope_rows",
    "snapshot",
    "team_of_other_org",
    "timeseries",
    "user_of_other_org",
]


MIGRATIONS = Path(__file__).parent.parent / "migrations"

_LOG_COLUMNS = (
    "event_id, request_id, occurred_at, org_id, team_id, user_id, key_id, session_id, model, provider,"
    " prompt_tokens, completion_tokens, total_tokens, cost_usd_micros, latency_ms, status, stream,"
    " prompt_fingerprint"
)
_LOG_TYPES = (
    "text[], text[], timestamptz[], text[], text[], text[], text[], text[], text[], text[],"
    " bigint[], bigint[], bigint[], bigint[], bigint[], text[], boolean[], text[]"
)
_INSERT_LOG = f"""
INSERT INTO request_log ({_LOG_COLUMNS})
SELECT * FROM unnest({", ".join(f"${i + 1}::{t.strip()}" for i, t in enumerate(_LOG_TYPES.split(",")))})
ON CONFLICT (event_id, occurred_at) DO NOTHING
RETURNING event_id
"""

_UPSERT_DAILY = """
INSERT INTO usage_daily AS u (
    user_id, model, day, requests, prompt_tokens, completion_tokens, total_tokens, cost_usd_micros
)
SELECT * FROM unnest($1::text[], $2::text[], $3::date[], $4::bigint[], $5::bigint[], $6::bigint[], $7::bigint[],
    $8::bigint[])
ON CONFLICT (user_id, day, model) DO UPDATE SET
    requests = u.requests + EXCLUDED.requests,
    prompt_tokens = u.prompt_tokens + EXCLUDED.prompt_tokens,
    completion_tokens = u.completion_tokens + EXCLUDED.completion_tokens,
    total_tokens = u.total_tokens + EXCLUDED.total_tokens,
    cost_usd_micros = u.cost_usd_micros + EXCLUDED.cost_usd_micros
"""

_UPSERT_MINUTE = """
INSERT INTO org_usage_minute AS o (org_id, minute, requests, total_tokens, cost_usd_micros)
SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::bigint[], $4::bigint[], $5::bigint[])
ON CONFLICT (org_id, minute) DO UPDATE SET
    requests = o.requests + EXCLUDED.requests,
    total_tokens = o.total_tokens + EXCLUDED.total_tokens,
    cost_usd_micros = o.cost_usd_micros + EXCLUDED.cost_usd_micros
"""

# The rollup rows of a batch (8 or so per event) are copied into a per-connection temporary table and added
# from there: binary COPY costs the worker less than half the CPU of encoding 13 arrays of thousands of values,
# and PostgreSQL less time too. The table empties itself at each commit.
_ROLLUP_KEY = ("scope_type", "scope_id", "grain", "bucket", "model", "provider", "org_id")
_ROLLUP_COLUMNS = (
    *_ROLLUP_KEY,
    *("requests", "prompt_tokens", "completion_tokens", "total_tokens", "cost_usd_micros", "efficiency_sum"),
)
_ROLLUP_STAGE = "lt_rollup_batch"
_CREATE_ROLLUP_STAGE = (
    f"CREATE TEMP TABLE IF NOT EXISTS {_ROLLUP_STAGE} (LIKE usage_rollup) ON COMMIT DELETE ROWS"
)
# ORDER BY: every batch locks the rows it adds to in one order, so two workers' batches cannot deadlock.
_UPSERT_ROLLUP = f"""
INSERT INTO usage_rollup AS r ({", ".join(_ROLLUP_COLUMNS)})
SELECT {", ".join(_ROLLUP_COLUMNS)} FROM {_ROLLUP_STAGE}
ORDER BY scope_type, scope_id, org_id, grain, bucket, model, provider
ON CONFLICT (scope_type, scope_id, org_id, grain, bucket, model, provider) DO UPDATE SET
    requests = r.requests + EXCLUDED.requests,
    prompt_tokens = r.prompt_tokens + EXCLUDED.prompt_tokens,
    completion_tokens = r.completion_tokens + EXCLUDED.completion_tokens,
    total_tokens = r.total_tokens + EXCLUDED.total_tokens,
    cost_usd_micros = r.cost_usd_micros + EXCLUDED.cost_usd_micros,
    efficiency_sum = r.efficiency_sum + EXCLUDED.efficiency_sum
"""


def _columns(rows: dict[tuple[Any, ...], list[int]]) -> list[list[Any]]:
    """{key tuple: sums} -> one list per column (keys first), the shape `unnest` takes; in one order of the
    keys, so two workers' batches lock the rows they both add to in the same order (no deadlock)."""
    if not rows:
        return []
    # Keys hold no None (see `aggregate`) and each position one type: they sort as they are.
    return [list(col) for col in zip(*((*key, *rows[key]) for key in sorted(rows)), strict=True)]


async def log_requests(conn: asyncpg.Connection, events: list[UsageRecorded]) -> set[str]:
    """Insert events into the request log; the ids of those that were not there yet."""
    fields = [f.strip().split()[0] for f in _LOG_COLUMNS.split(",")]
    inserted = await conn.fetch(_INSERT_LOG, *[[getattr(e, f) for e in events] for f in fields])
    return {r["event_id"] for r in inserted}


async def add_aggregates(conn: asyncpg.Connection, sums: Aggregates) -> None:
    """Add a batch's sums to the daily, per-org-minute and rollup tables."""
    if sums.daily:
        await conn.execute(_UPSERT_DAILY, *_columns(sums.daily))
    if sums.minute:
        await conn.execute(_UPSERT_MINUTE, *_columns(sums.minute))
    if sums.rollup:
        if not conn.is_in_transaction():  # the staged rows would be gone (ON COMMIT DELETE ROWS) before use
            raise RuntimeError("add_aggregates runs inside the transaction that logs the batch")
        await conn.execute(_CREATE_ROLLUP_STAGE)
        records = [(*key, *measures) for key, measures in sums.rollup.items()]
        await conn.copy_records_to_table(_ROLLUP_STAGE, records=records, columns=_ROLLUP_COLUMNS)
        await conn.execute(_UPSERT_ROLLUP)


async def analyze_if_never_analyzed(pool: asyncpg.Pool, day: date) -> bool:
    """ANALYZE the request log's partition of `day` if it exists and was never analyzed; True if it ran.

    A partition that was never analyzed leaves the planner without statistics, and the detectors' window query
    then took the (org, time) index over the (org, session, time) one: it read every request of the org in the
    window for each target, 0.7-0.9 s a batch at 45,000 rows, until autovacuum got round to it (up to a minute
    into each day, or into the life of a new database)."""
    name = f"request_log_p{day:%Y%m%d}"  # digits only: no text of any event reaches the statement
    async with pool.acquire() as conn:
        never = await conn.fetchval(
            "SELECT last_analyze IS NULL AND last_autoanalyze IS NULL FROM pg_stat_user_tables"
            " WHERE relid = to_regclass($1)",
            name,
        )
        if not never:
            return False
        await conn.execute(f"ANALYZE {name}")
    return True


@asynccontextmanager
async def snapshot(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A connection whose queries all read one snapshot (a read-only REPEATABLE READ transaction): a read made
    of several queries never mixes the state before a worker's batch with the state after it."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        yield conn


async def daily_usage(conn: asyncpg.Connection, user_id: str, since: date) -> list[DailyUsage]:
    """A user's daily aggregate rows from `since` (inclusive)."""
    rows = await conn.fetch(
        """
        SELECT day, model, requests, prompt_tokens, completion_tokens, total_tokens, cost_usd_micros
        FROM usage_daily WHERE user_id = $1 AND day >= $2
        """,
        user_id,
        since,
    )
    return [DailyUsage(**dict(r)) for r in rows]


async def efficiency_sums(
    conn: asyncpg.Connection, user_id: str, org_id: str, since: datetime
) -> tuple[int, int]:
    """(sum of per-request efficiencies, requests) of a user's requests recorded under `org_id` since `since`."""
    row = await conn.fetchrow(
        "SELECT sum(requests) AS n, sum(efficiency_sum) AS e FROM usage_rollup"
        " WHERE scope_type = 'user' AND scope_id = $1 AND grain = 'day' AND bucket >= $2 AND org_id = $3",
        user_id,
        since,
        org_id,
    )
    if row is None or not row["n"]:
        return 0, 0
    return int(row["e"]), int(row["n"])


async def timeseries(
    pool: asyncpg.Pool,
    scope: str,
    scope_id: str,
    org_id: str,
    grain: str,
    since: datetime,
    model: str | None,
    provider: str | None,
) -> list[dict[str, Any]]:
    """Per-bucket totals of one scope from `since`, oldest first, optionally for one model/provider; only usage
    recorded under `org_id` (a caller never sees another org's rows)."""
    rows = await pool.fetch(
        """
        SELECT bucket, sum(requests)::bigint AS requests, sum(prompt_tokens)::bigint AS prompt_tokens,
               sum(completion_tokens)::bigint AS completion_tokens, sum(total_tokens)::bigint AS total_tokens,
               sum(cost_usd_micros)::bigint AS cost_usd_micros
        FROM usage_rollup
        WHERE scope_type = $1 AND scope_id = $2 AND grain = $3 AND bucket >= date_trunc($3, $4::timestamptz, 'UTC')
          AND ($5::text IS NULL OR model = $5) AND ($6::text IS NULL OR provider = $6) AND org_id = $7
        GROUP BY bucket ORDER BY bucket
        """,
        scope,
        scope_id,
        grain,
        since,
        model,
        provider,
        org_id,
    )
    return [dict(r) for r in rows]


async def scope_rows(
    pool: asyncpg.Pool, scope: str, scope_id: str, org_id: str, since: datetime
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """An org's or team's daily rollup rows since `since` and its top 10 users by tokens, counting only usage
    recorded under `org_id` (a caller never sees another org's rows). Both read one snapshot, so the totals and
    the top users always count the same requests."""
    async with snapshot(pool) as conn:
        return await _scope_rows(conn, scope, scope_id, org_id, since)


async def _scope_rows(
    conn: asyncpg.Connection, scope: str, scope_id: str, org_id: str, since: datetime
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rows = await conn.fetch(
        """
        SELECT model, provider, bucket, requests, prompt_tokens, completion_tokens, total_tokens, cost_usd_micros
        FROM usage_rollup
        WHERE scope_type = $1 AND scope_id = $2 AND grain = 'day' AND bucket >= $3 AND org_id = $4
        """,
        scope,
        scope_id,
        since,
        org_id,
    )
    column = "org_id" if scope == "org" else "team_id"
    users = await conn.fetch(
        f"""
        SELECT user_id AS name, count(*) AS requests, sum(prompt_tokens) AS prompt_tokens,
               sum(completion_tokens) AS completion_tokens, sum(total_tokens) AS total_tokens,
               sum(cost_usd_micros) AS cost_usd_micros
        FROM request_log
        WHERE {column} = $1 AND occurred_at >= $2 AND org_id = $3 AND user_id IS NOT NULL
        GROUP BY user_id ORDER BY sum(total_tokens) DESC, user_id LIMIT 10
        """,
        scope_id,
        since,
        org_id,
    )
    return [dict(r) for r in rows], [dict(u) for u in users]


async def user_of_other_org(pool: asyncpg.Pool, user_id: str, org_id: str) -> bool:
    """True if the user's usage was recorded under another org and never under `org_id` (user ids are unique,
    so the org their usage carries is the user's org)."""
    return bool(
        await pool.fetchval(
            """
            SELECT NOT EXISTS (SELECT 1 FROM usage_rollup
                                WHERE scope_type = 'user' AND scope_id = $1 AND org_id = $2)
               AND EXISTS (SELECT 1 FROM usage_rollup
                            WHERE scope_type = 'user' AND scope_id = $1 AND org_id <> $2)
            """,
            user_id,
            org_id,
        )
    )


async def team_of_other_org(pool: asyncpg.Pool, team_id: str, org_id: str) -> bool:
    """True if the team's usage was recorded under another org and never under `org_id` (team ids are
    unique, so the org its usage carries is the team's org)."""
    return bool(
        await pool.fetchval(
            """
            SELECT NOT EXISTS (SELECT 1 FROM usage_rollup
                                WHERE scope_type = 'team' AND scope_id = $1 AND grain = 'day' AND org_id = $2)
               AND EXISTS (SELECT 1 FROM usage_rollup
                            WHERE scope_type = 'team' AND scope_id = $1 AND grain = 'day' AND org_id <> $2)
            """,
            team_id,
            org_id,
        )
    )


async def efficiency_ranking(
    pool: asyncpg.Pool, org_id: str, since: datetime, limit: int
) -> list[dict[str, Any]]:
    """Users of `org_id` with requests since `since`, best average efficiency first."""
    rows = await pool.fetch(
        """
        SELECT scope_id AS user_id, sum(requests)::bigint AS requests, sum(total_tokens)::bigint AS total_tokens,
               sum(efficiency_sum)::bigint AS efficiency_sum
        FROM usage_rollup
        WHERE grain = 'day' AND org_id = $1 AND scope_type = 'user' AND bucket >= $2
        GROUP BY scope_id HAVING sum(requests) > 0
        ORDER BY sum(efficiency_sum)::numeric / sum(requests) DESC, sum(total_tokens) DESC, scope_id
        LIMIT $3
        """,
        org_id,
        since,
        limit,
    )
    return [dict(r) for r in rows]


async def list_anomalies(
    pool: asyncpg.Pool,
    *,
    user_id: str | None,
    org_id: str | None,
    kind: str | None,
    limit: int,
    team_ids: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """Newest detections first, filtered by org and kind when given; with `user_id`, only that user's and
    those of `team_ids` (the teams a manager manages)."""
    rows = await pool.fetch(
        """
        SELECT * FROM anomalies
        WHERE ($1::text IS NULL OR user_id = $1 OR team_id = ANY($5::text[]))
          AND ($2::text IS NULL OR org_id = $2) AND ($3::text IS NULL OR kind = $3)
        ORDER BY detected_at DESC, id LIMIT $4
        """,
        user_id,
        org_id,
        kind,
        limit,
        list(team_ids),
    )
    return [dict(r) for r in rows]
