"""All SQL of the notifier: subscriptions, the inbox and deliveries."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

__all__ = [
    "DEFAULT_SUBSCRIPTION_ID",
    "MIGRATIONS",
    "DueDelivery",
    "claim_due",
    "create_subscription",
    "deactivate_subscription",
    "list_deliveries",
    "list_subscriptions",
    "mark_delivered",
    "mark_failed",
    "record_event",
    "sync_default_subscription",
]

MIGRATIONS = Path(__file__).parent / "migrations"
DEFAULT_SUBSCRIPTION_ID = "default"

_SUBSCRIPTION_COLUMNS = "id, url, event_types, secret IS NOT NULL AS has_secret, created_at, active"
_DELIVERY_COLUMNS = (
    "id, event_id, event_type, subscription_id, status, attempts, last_error, next_attempt_at, delivered_at,"
    " created_at, payload::text AS payload"
)


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


@dataclass(frozen=True, slots=True)
class DueDelivery:
    """A claimed delivery with what it takes to send it."""

    id: str
    event_type: str
    body: bytes
    attempts: int
    url: str
    secret: str | None


async def sync_default_subscription(pool: asyncpg.Pool, url: str | None, secret: str | None) -> None:
    """Make the env-configured default webhook (all event types) match the settings; off when unset."""
    if url is None:
        await pool.execute(
            "UPDATE webhook_subscriptions SET active = false WHERE id = $1", DEFAULT_SUBSCRIPTION_ID
        )
        return
    await pool.execute(
        """
        INSERT INTO webhook_subscriptions (id, url, event_types, secret, active) VALUES ($1, $2, NULL, $3, true)
        ON CONFLICT (id) DO UPDATE SET url = EXCLUDED.url, event_types = NULL, secret = EXCLUDED.secret,
            active = true
        """,
        DEFAULT_SUBSCRIPTION_ID,
        url,
        secret,
    )


async def create_subscription(
    pool: asyncpg.Pool, url: str, event_types: list[str] | None, secret: str | None
) -> dict[str, Any]:
    """Insert an active subscription and return it (without its secret)."""
    row = await pool.fetchrow(
        f"INSERT INTO webhook_subscriptions (id, url, event_types, secret) VALUES ($1, $2, $3, $4)"
        f" RETURNING {_SUBSCRIPTION_COLUMNS}",
        _new_id("wh"),
        url,
        event_types,
        secret,
    )
    assert row is not None
    return dict(row)


async def list_subscriptions(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    """Active subscriptions, oldest first."""
    rows = await pool.fetch(
        f"SELECT {_SUBSCRIPTION_COLUMNS} FROM webhook_subscriptions WHERE active ORDER BY created_at, id"
    )
    return [dict(r) for r in rows]


async def deactivate_subscription(pool: asyncpg.Pool, subscription_id: str) -> bool:
    """Deactivate a subscription and give up its pending deliveries; False if there was no active one."""
    async with pool.acquire() as conn, conn.transaction():
        found = await conn.fetchval(
            "UPDATE webhook_subscriptions SET active = false WHERE id = $1 AND active RETURNING true",
            subscription_id,
        )
        if not found:
            return False
        await conn.execute(
            "UPDATE deliveries SET status = 'dead', last_error = 'subscription deleted'"
            " WHERE subscription_id = $1 AND status = 'pending'",
            subscription_id,
        )
        return True


async def record_event(pool: asyncpg.Pool, event_id: str, event_type: str, payload: bytes) -> int | None:
    """Inbox the event and queue one delivery per matching subscription, atomically.

    Returns how many deliveries were queued, or None when the event was already handled.
    """
    async with pool.acquire() as conn, conn.transaction():
        fresh = await conn.fetchval(
            "INSERT INTO inbox (event_id) VALUES ($1) ON CONFLICT DO NOTHING RETURNING true", event_id
        )
        if not fresh:
            return None
        subscriptions = await conn.fetch(
            "SELECT id FROM webhook_subscriptions"
            " WHERE active AND (event_types IS NULL OR $1 = ANY (event_types)) ORDER BY id",
            event_type,
        )
        if subscriptions:
            await conn.executemany(
                "INSERT INTO deliveries (id, event_id, event_type, subscription_id, payload)"
                " VALUES ($1, $2, $3, $4, $5::jsonb) ON CONFLICT (event_id, subscription_id) DO NOTHING",
                [(_new_id("dlv"), event_id, event_type, s["id"], payload.decode()) for s in subscriptions],
            )
        return len(subscriptions)


async def claim_due(pool: asyncpg.Pool, limit: int, lease_s: float) -> list[DueDelivery]:
    """Take up to `limit` due deliveries, pushing their next attempt out by `lease_s` while they are sent."""
    rows = await pool.fetch(
        """
        UPDATE deliveries d SET next_attempt_at = now() + make_interval(secs => $2)
        FROM webhook_subscriptions s
        WHERE s.id = d.subscription_id AND d.id IN (
            SELECT id FROM deliveries WHERE status = 'pending' AND next_attempt_at <= now()
            ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED
        )
        RETURNING d.id, d.event_type, d.payload::text AS payload, d.attempts, s.url, s.secret
        """,
        limit,
        lease_s,
    )
    return [
        DueDelivery(
            id=r["id"],
            event_type=r["event_type"],
            body=r["payload"].encode(),
            attempts=r["attempts"],
            url=r["url"],
            secret=r["secret"],
        )
        for r in rows
    ]


async def mark_delivered(pool: asyncpg.Pool, delivery_id: str) -> None:
    """Record a successful attempt."""
    await pool.execute(
        "UPDATE deliveries SET status = 'delivered', attempts = attempts + 1, delivered_at = now(),"
        " last_error = NULL WHERE id = $1 AND status = 'pending'",
        delivery_id,
    )


async def mark_failed(
    pool: asyncpg.Pool, delivery_id: str, error: str, max_attempts: int, retry_in_s: float
) -> None:
    """Record a failed attempt: retry after `retry_in_s`, or dead once `max_attempts` were made."""
    await pool.execute(
        """
        UPDATE deliveries SET attempts = attempts + 1, last_error = $2,
            status = CASE WHEN attempts + 1 >= $3 THEN 'dead' ELSE 'pending' END,
            next_attempt_at = now() + make_interval(secs => $4)
        WHERE id = $1 AND status = 'pending'
        """,
        delivery_id,
        error[:500],
        max_attempts,
        retry_in_s,
    )


async def list_deliveries(
    pool: asyncpg.Pool, event_type: str | None, status: str | None, limit: int
) -> list[dict[str, Any]]:
    """Newest deliveries first, optionally filtered."""
    rows = await pool.fetch(
        f"SELECT {_DELIVERY_COLUMNS} FROM deliveries"
        " WHERE ($1::text IS NULL OR event_type = $1) AND ($2::text IS NULL OR status = $2)"
        " ORDER BY created_at DESC, id LIMIT $3",
        event_type,
        status,
        limit,
    )
    return [dict(r) for r in rows]
