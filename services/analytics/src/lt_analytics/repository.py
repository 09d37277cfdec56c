"""All SQL of analytics: the request log (which doubles as the inbox) and the aggregates."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any

import asyncpg

from leaky_common.events import UsageRecorded
from lt_analytics.detection import ThresholdOverrides, efficiency
from lt_analytics.detectors import AnomalyDetector
from lt_analytics.domain import DailyUsage, day_bucket, grain_buckets, minute_bucket, rollup_scopes

__all__ = [
    "MIGRATIONS",
    "daily_usage",
    "efficiency_ranking",
    "list_anomalies",
    "record_usage",
    "scope_report",
    "set_threshold_overrides",
    "threshold_overrides",
]

MIGRATIONS = Path(__file__).parent / "migrations"

_INSERT_LOG = """
INSERT INTO request_log (
    event_id, request_id, occurred_at, org_id, team_id, user_id, key_id, session_id, model, provider,
    prompt_tokens, completion_tokens, total_tokens, cost_usd_micros, latency_ms, status, stream,
    prompt_fingerprint
) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
ON CONFLICT (event_id) DO NOTHING
RETURNING true
"""

_UPSERT_DAILY = """
INSERT INTO usage_daily AS u (
    user_id, model, day, requests, prompt_tokens, completion_tokens, total_tokens, cost_usd_micros
) VALUES ($1, $2, $3, 1, $4, $5, $6, $7)
ON CONFLICT (user_id, day, model) DO UPDATE SET
    requests = u.requests + 1,
    prompt_tokens = u.prompt_tokens + EXCLUDED.prompt_tokens,
    completion_tokens = u.completion_tokens + EXCLUDED.completion_tokens,
    total_tokens = u.total_tokens + EXCLUDED.total_tokens,
    cost_usd_micros = u.cost_usd_micros + EXCLUDED.cost_usd_micros
"""

_UPSERT_MINUTE = """
INSERT INTO org_usage_minute AS o (org_id, minute, requests, total_tokens, cost_usd_micros)
VALUES ($1, $2, 1, $3, $4)
ON CONFLICT (org_id, minute) DO UPDATE SET
    requests = o.requests + 1,
    total_tokens = o.total_tokens + EXCLUDED.total_tokens,
    cost_usd_micros = o.cost_usd_micros + EXCLUDED.cost_usd_micros
"""

# One statement for every (scope, grain) pair of the event.
_UPSERT_ROLLUP = """
INSERT INTO usage_rollup AS r (
    scope_type, scope_id, grain, bucket, model, provider, org_id,
    requests, prompt_tokens, completion_tokens, total_tokens, cost_usd_micros, efficiency_sum
)
SELECT s.scope_type, s.scope_id, g.grain, g.bucket, $5, $6, $7, 1, $8, $9, $10, $11, $12
FROM unnest($1::text[], $2::text[]) AS s (scope_type, scope_id),
     unnest($3::text[], $4::timestamptz[]) AS g (grain, bucket)
ON CONFLICT (scope_type, scope_id, grain, bucket, model, provider) DO UPDATE SET
    requests = r.requests + 1,
    prompt_tokens = r.prompt_tokens + EXCLUDED.prompt_tokens,
    completion_tokens = r.completion_tokens + EXCLUDED.completion_tokens,
    total_tokens = r.total_tokens + EXCLUDED.total_tokens,
    cost_usd_micros = r.cost_usd_micros + EXCLUDED.cost_usd_micros,
    efficiency_sum = r.efficiency_sum + EXCLUDED.efficiency_sum
"""


async def record_usage(
    pool: asyncpg.Pool, event: UsageRecorded, detector: AnomalyDetector | None = None
) -> bool:
    """Log the event, add it to the aggregates and run the detectors, once per event id.

    Returns False (and changes nothing) if the event was already recorded.
    """
    async with pool.acquire() as conn, conn.transaction():
        inserted = await conn.fetchval(
            _INSERT_LOG,
            event.event_id,
            event.request_id,
            event.occurred_at,
            event.org_id,
            event.team_id,
            event.user_id,
            event.key_id,
            event.session_id,
            event.model,
            event.provider,
            event.prompt_tokens,
            event.completion_tokens,
            event.total_tokens,
            event.cost_usd_micros,
            event.latency_ms,
            event.status,
            event.stream,
            event.prompt_fingerprint,
        )
        if not inserted:
            return False
        if event.user_id is not None:
            await conn.execute(
                _UPSERT_DAILY,
                event.user_id,
                event.model,
                day_bucket(event.occurred_at),
                event.prompt_tokens,
                event.completion_tokens,
                event.total_tokens,
                event.cost_usd_micros,
            )
        if event.org_id is not None:
            await conn.execute(
                _UPSERT_MINUTE,
                event.org_id,
                minute_bucket(event.occurred_at),
                event.total_tokens,
                event.cost_usd_micros,
            )
        scopes = rollup_scopes(event)
        if scopes:
            grains = grain_buckets(event.occurred_at)
            await conn.execute(
                _UPSERT_ROLLUP,
                [t for t, _ in scopes],
                [i for _, i in scopes],
                [g for g, _ in grains],
                [b for _, b in grains],
                event.model,
                event.provider,
                event.org_id,
                event.prompt_tokens,
                event.completion_tokens,
                event.total_tokens,
                event.cost_usd_micros,
                efficiency(event.prompt_tokens, event.completion_tokens),
            )
        if detector is not None:
            await detector.check(conn, event)
        return True


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


async def scope_report(pool: asyncpg.Pool, scope: str, scope_id: str, since: datetime) -> dict[str, Any]:
    """Totals and breakdowns (model, provider, day, top 10 users) of an org or team since `since`."""
    rows = await pool.fetch(
        """
        SELECT model, provider, bucket, requests, prompt_tokens, completion_tokens, total_tokens, cost_usd_micros
        FROM usage_rollup WHERE scope_type = $1 AND scope_id = $2 AND grain = 'day' AND bucket >= $3
        """,
        scope,
        scope_id,
        since,
    )
    column = "org_id" if scope == "org" else "team_id"
    users = await pool.fetch(
        f"""
        SELECT user_id AS name, count(*) AS requests, sum(prompt_tokens) AS prompt_tokens,
               sum(completion_tokens) AS completion_tokens, sum(total_tokens) AS total_tokens,
               sum(cost_usd_micros) AS cost_usd_micros
        FROM request_log WHERE {column} = $1 AND occurred_at >= $2 AND user_id IS NOT NULL
        GROUP BY user_id ORDER BY sum(total_tokens) DESC, user_id LIMIT 10
        """,
        scope_id,
        since,
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
    pool: asyncpg.Pool, *, user_id: str | None, org_id: str | None, kind: str | None, limit: int
) -> list[dict[str, Any]]:
    """Newest detections first, filtered by user, org and kind when given."""
    rows = await pool.fetch(
        """
        SELECT * FROM anomalies
        WHERE ($1::text IS NULL OR user_id = $1) AND ($2::text IS NULL OR org_id = $2)
          AND ($3::text IS NULL OR kind = $3)
        ORDER BY detected_at DESC, id LIMIT $4
        """,
        user_id,
        org_id,
        kind,
        limit,
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
