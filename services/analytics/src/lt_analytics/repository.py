"""All SQL of analytics: the request log (which doubles as the inbox) and the aggregates."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import asyncpg

from leaky_common.events import UsageRecorded
from lt_analytics.domain import DailyUsage, day_bucket, minute_bucket

__all__ = ["MIGRATIONS", "daily_usage", "record_usage"]

MIGRATIONS = Path(__file__).parent / "migrations"

_INSERT_LOG = """
INSERT INTO request_log (
    event_id, request_id, occurred_at, org_id, team_id, user_id, key_id, session_id, model, provider,
    prompt_tokens, completion_tokens, total_tokens, cost_usd_micros, latency_ms, status, stream
) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
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


async def record_usage(pool: asyncpg.Pool, event: UsageRecorded) -> bool:
    """Log the event and add it to the aggregates, once per event id; False if it was already recorded."""
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
