"""All SQL of analytics: the request log (which doubles as the inbox) and the aggregates."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any

import asyncpg

from leaky_common.events import UsageRecorded
from lt_analytics.detection import EFFICIENCY_SCALE, ThresholdOverrides, efficiency
from lt_analytics.detectors import AnomalyDetector
from lt_analytics.domain import DailyUsage, day_bucket, grain_buckets, minute_bucket, rollup_scopes

__all__ = [
    "MIGRATIONS",
    "average_efficiency",
    "daily_usage",
    "efficiency_ranking",
    "list_anomalies",
    "record_batch",
    "scope_report",
    "set_threshold_overrides",
    "threshold_overrides",
    "timeseries",
]

MIGRATIONS = Path(__file__).parent / "migrations"

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
ON CONFLICT (event_id) DO NOTHING
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

_UPSERT_ROLLUP = """
INSERT INTO usage_rollup AS r (
    scope_type, scope_id, grain, bucket, model, provider, org_id,
    requests, prompt_tokens, completion_tokens, total_tokens, cost_usd_micros, efficiency_sum
)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::text[], $7::text[],
    $8::bigint[], $9::bigint[], $10::bigint[], $11::bigint[], $12::bigint[], $13::bigint[])
ON CONFLICT (scope_type, scope_id, grain, bucket, model, provider) DO UPDATE SET
    requests = r.requests + EXCLUDED.requests,
    prompt_tokens = r.prompt_tokens + EXCLUDED.prompt_tokens,
    completion_tokens = r.completion_tokens + EXCLUDED.completion_tokens,
    total_tokens = r.total_tokens + EXCLUDED.total_tokens,
    cost_usd_micros = r.cost_usd_micros + EXCLUDED.cost_usd_micros,
    efficiency_sum = r.efficiency_sum + EXCLUDED.efficiency_sum
"""


def _columns(rows: dict[tuple[Any, ...], list[int]]) -> list[list[Any]]:
    """{key tuple: sums} -> one list per column (keys first), the shape `unnest` takes."""
    if not rows:
        return []
    return [list(col) for col in zip(*(list(k) + v for k, v in rows.items()), strict=True)]


async def record_batch(
    pool: asyncpg.Pool, events: list[UsageRecorded], detector: AnomalyDetector | None = None
) -> set[str]:
    """Log events, add them to the aggregates and run the detectors, once per event id, in one transaction.

    Returns the ids of the events that were new; already recorded ones change nothing.
    """
    unique: list[UsageRecorded] = []
    seen: set[str] = set()
    for e in events:  # the first copy of a redelivered event, in stream order (loops depend on it)
        if e.event_id not in seen:
            seen.add(e.event_id)
            unique.append(e)
    async with pool.acquire() as conn, conn.transaction():
        fields = [f.strip().split()[0] for f in _LOG_COLUMNS.split(",")]
        inserted = await conn.fetch(_INSERT_LOG, *[[getattr(e, f) for e in unique] for f in fields])
        new_ids = {r["event_id"] for r in inserted}
        new = [e for e in unique if e.event_id in new_ids]
        if not new:
            return new_ids
        daily: dict[tuple[Any, ...], list[int]] = {}
        minute: dict[tuple[Any, ...], list[int]] = {}
        rollup: dict[tuple[Any, ...], list[int]] = {}
        rollup_org: dict[tuple[Any, ...], str | None] = {}
        for e in new:
            if e.user_id is not None:
                _add(daily, (e.user_id, e.model, day_bucket(e.occurred_at)), e, "pctx")
            if e.org_id is not None:
                _add(minute, (e.org_id, minute_bucket(e.occurred_at)), e, "tx")
            for scope_type, scope_id in rollup_scopes(e):
                for grain, bucket in grain_buckets(e.occurred_at):
                    key = (scope_type, scope_id, grain, bucket, e.model, e.provider)
                    _add(rollup, key, e, "pctxe")
                    rollup_org.setdefault(key, e.org_id)
        if daily:
            await conn.execute(_UPSERT_DAILY, *_columns(daily))
        if minute:
            await conn.execute(_UPSERT_MINUTE, *_columns(minute))
        if rollup:
            columns = _columns(rollup)
            # The org is an attribute of the row, not part of its key.
            await conn.execute(_UPSERT_ROLLUP, *columns[:6], [rollup_org[k] for k in rollup], *columns[6:])
        if detector is not None:
            await detector.check(conn, new)
        return new_ids


def _add(acc: dict[tuple[Any, ...], list[int]], key: tuple[Any, ...], e: UsageRecorded, what: str) -> None:
    """Add one request and the listed measures (p/c/t/x/e) of `e` to the sums under `key`."""
    values = {
        "p": e.prompt_tokens,
        "c": e.completion_tokens,
        "t": e.total_tokens,
        "x": e.cost_usd_micros,
        "e": efficiency(e.prompt_tokens, e.completion_tokens),
    }
    sums = acc.setdefault(key, [0] * (len(what) + 1))
    sums[0] += 1
    for i, measure in enumerate(what, start=1):
        sums[i] += values[measure]


async def daily_usage(pool: asyncpg.Pool, user_id: str, since: date) -> list[DailyUsage]:
    """A user's daily aggregate rows from `since` (inclusive)."""
    rows = await pool.fetch(
        """
        SELECT day, model, requests, prompt_tokens, completion_tokens, total_tokens, cost_usd_micros
        FROM usage_daily WHERE user_id = $1 AND day >= $2
        """,
        user_id,
        since,
    )
    return [DailyUsage(**dict(r)) for r in rows]


async def average_efficiency(pool: asyncpg.Pool, user_id: str, since: datetime) -> float:
    """Mean per-request efficiency of a user's requests since `since` (0 without requests)."""
    row = await pool.fetchrow(
        "SELECT sum(requests) AS n, sum(efficiency_sum) AS e FROM usage_rollup"
        " WHERE scope_type = 'user' AND scope_id = $1 AND grain = 'day' AND bucket >= $2",
        user_id,
        since,
    )
    if row is None or not row["n"]:
        return 0.0
    return round(int(row["e"]) / int(row["n"]) / EFFICIENCY_SCALE, 4)


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


async def scope_report(
    pool: asyncpg.Pool, scope: str, scope_id: str, org_id: str, since: datetime
) -> dict[str, Any]:
    """Totals and breakdowns (model, provider, day, top 10 users) of an org or team since `since`, counting
    only usage recorded under `org_id` (a caller never sees another org's rows)."""
    rows = await pool.fetch(
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
    users = await pool.fetch(
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
    fields = ("requests", "prompt_tokens", "completion_tokens", "total_tokens", "cost_usd_micros")

    def fold(key: str) -> list[dict[str, Any]]:
        acc: dict[str, list[int]] = {}
        for r in rows:
            name = r[key].date().isoformat() if key == "bucket" else r[key]
            sums = acc.setdefault(name, [0] * len(fields))
            for i, f in enumerate(fields):
                sums[i] += int(r[f])
        ordered = (
            sorted(acc.items()) if key == "bucket" else sorted(acc.items(), key=lambda kv: (-kv[1][3], kv[0]))
        )
        return [{"name": n, **dict(zip(fields, v, strict=True))} for n, v in ordered]

    totals = {f: sum(int(r[f]) for r in rows) for f in fields}
    return {
        "totals": totals,
        "by_model": fold("model"),
        "by_provider": fold("provider"),
        "by_day": fold("bucket"),
        "top_users": [{k: (v if k == "name" else int(v)) for k, v in dict(u).items()} for u in users],
    }


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


async def threshold_overrides(pool: asyncpg.Pool) -> dict[str, ThresholdOverrides]:
    """Every override row by org id ('*' = global)."""
    rows = await pool.fetch("SELECT org_id, config::text AS config FROM anomaly_thresholds")
    return {r["org_id"]: ThresholdOverrides.model_validate_json(r["config"]) for r in rows}


async def set_threshold_overrides(pool: asyncpg.Pool, org_id: str, overrides: ThresholdOverrides) -> None:
    """Replace the overrides of one org (or '*'); an empty set removes the row."""
    config = overrides.model_dump_json(exclude_unset=True, exclude_none=True)
    if config == "{}":
        await pool.execute("DELETE FROM anomaly_thresholds WHERE org_id = $1", org_id)
        return
    await pool.execute(
        """
        INSERT INTO anomaly_thresholds (org_id, config) VALUES ($1, $2::jsonb)
        ON CONFLICT (org_id) DO UPDATE SET config = EXCLUDED.config, updated_at = now()
        """,
        org_id,
        config,
    )
