"""All SQL of the notifier: channel subscriptions, the inbox, dedup keys and deliveries."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from lt_notifier.notification import Notification

__all__ = [
    "DEFAULT_SUBSCRIPTION_ID",
    "MIGRATIONS",
    "DefaultChannel",
    "DueDelivery",
    "Subscription",
    "claim_due",
    "create_subscription",
    "deactivate_subscription",
    "get_subscription",
    "list_deliveries",
    "list_subscriptions",
    "mark_delivered",
    "mark_failed",
    "record_event",
    "retry_delivery",
    "sync_default_channels",
]

MIGRATIONS = Path(__file__).parent / "migrations"
DEFAULT_SUBSCRIPTION_ID = "default"

_SUBSCRIPTION_COLUMNS = (
    "id, channel, name, url, event_types, min_severity, org_id, team_id, user_id, config::text AS config,"
    " secrets ? 'secret' AS has_secret, ARRAY(SELECT jsonb_object_keys(secrets) ORDER BY 1) AS secret_names,"
    " created_at, active"
)
_DELIVERY_COLUMNS = (
    "id, event_id, event_type, channel, severity, subscription_id, status, attempts, last_error, next_attempt_at,"
    " delivered_at, created_at, payload::text AS payload"
)
_SEVERITY_RANK = "array_position(ARRAY['info', 'warning', 'error', 'critical'], {})"


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


@dataclass(frozen=True, slots=True)
class DueDelivery:
    """A claimed delivery with what it takes to send it."""

    id: str
    event_type: str
    channel: str
    body: bytes
    attempts: int
    url: str | None
    config: dict[str, Any]
    secrets: dict[str, str]


@dataclass(frozen=True, slots=True)
class Subscription:
    """What it takes to send to one active subscription."""

    id: str
    channel: str
    url: str | None
    config: dict[str, Any]
    secrets: dict[str, str]


async def get_subscription(
    pool: asyncpg.Pool, subscription_id: str, org_id: str | None = None
) -> Subscription | None:
    """An active subscription with its secrets (for sending only; never returned by the API); with `org_id`,
    only one scoped to that org."""
    row = await pool.fetchrow(
        "SELECT id, channel, url, config::text AS config, secrets::text AS secrets FROM webhook_subscriptions"
        " WHERE id = $1 AND active AND ($2::text IS NULL OR org_id = $2)",
        subscription_id,
        org_id,
    )
    if row is None:
        return None
    return Subscription(
        row["id"], row["channel"], row["url"], orjson.loads(row["config"]), orjson.loads(row["secrets"])
    )


@dataclass(frozen=True, slots=True)
class DefaultChannel:
    """A subscription configured by environment variables (kept in sync at start-up under a fixed id)."""

    id: str
    channel: str
    url: str | None
    config: dict[str, Any]
    secrets: dict[str, str]
    min_severity: str = "info"


async def sync_default_channels(
    pool: asyncpg.Pool, wanted: list[DefaultChannel], known_ids: list[str]
) -> None:
    """Activate the env-configured channels in `wanted`; deactivate the other ids of `known_ids`."""
    for channel in wanted:
        await _upsert_default(pool, channel)
    unwanted = sorted(set(known_ids) - {c.id for c in wanted})
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "UPDATE webhook_subscriptions SET active = false WHERE id = ANY($1::text[])", unwanted
        )
        await conn.execute(
            "UPDATE deliveries SET status = 'dead', last_error = 'channel switched off'"
            " WHERE subscription_id = ANY($1::text[]) AND status = 'pending'",
            unwanted,
        )


async def _upsert_default(pool: asyncpg.Pool, c: DefaultChannel) -> None:
    await pool.execute(
        """
        INSERT INTO webhook_subscriptions (id, channel, name, url, event_types, config, secrets, min_severity, active)
        VALUES ($1, $2, $1, $3, NULL, $4::jsonb, $5::jsonb, $6, true)
        ON CONFLICT (id) DO UPDATE SET channel = EXCLUDED.channel, url = EXCLUDED.url, event_types = NULL,
            config = EXCLUDED.config, secrets = EXCLUDED.secrets, min_severity = EXCLUDED.min_severity,
            org_id = NULL, team_id = NULL, user_id = NULL, active = true
        """,
        c.id,
        c.channel,
        c.url,
        orjson.dumps(c.config).decode(),
        orjson.dumps(c.secrets).decode(),
        c.min_severity,
    )


async def create_subscription(
    pool: asyncpg.Pool,
    url: str | None,
    event_types: list[str] | None,
    secrets: dict[str, str],
    *,
    channel: str = "webhook",
    name: str | None = None,
    config: dict[str, Any] | None = None,
    min_severity: str = "info",
    org_id: str | None = None,
    team_id: str | None = None,
    user_id: str | None = None,
) -> dict[str, Any]:
    """Insert an active subscription and return it (without its secrets)."""
    row = await pool.fetchrow(
        "INSERT INTO webhook_subscriptions (id, channel, name, url, event_types, config, secrets, min_severity,"
        " org_id, team_id, user_id) VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb, $8, $9, $10, $11)"
        f" RETURNING {_SUBSCRIPTION_COLUMNS}",
        _new_id("wh" if channel == "webhook" else "ch"),
        channel,
        name,
        url,
        event_types,
        orjson.dumps(config or {}).decode(),
        orjson.dumps(secrets).decode(),
        min_severity,
        org_id,
        team_id,
        user_id,
    )
    assert row is not None
    return _subscription(row)


def _subscription(row: asyncpg.Record) -> dict[str, Any]:
    return {**dict(row), "config": orjson.loads(row["config"])}


async def list_subscriptions(
    pool: asyncpg.Pool, channel: str | None = None, org_id: str | None = None
) -> list[dict[str, Any]]:
    """Active subscriptions (of one channel, or all; with `org_id`, only those scoped to it), oldest first."""
    rows = await pool.fetch(
        f"SELECT {_SUBSCRIPTION_COLUMNS} FROM webhook_subscriptions"
        " WHERE active AND ($1::text IS NULL OR channel = $1) AND ($2::text IS NULL OR org_id = $2)"
        " ORDER BY created_at, id",
        channel,
        org_id,
    )
    return [_subscription(r) for r in rows]


async def deactivate_subscription(
    pool: asyncpg.Pool, subscription_id: str, org_id: str | None = None
) -> bool:
    """Deactivate a subscription (with `org_id`, only one scoped to that org) and give up its pending
    deliveries; False if there was no such active one."""
    async with pool.acquire() as conn, conn.transaction():
        found = await conn.fetchval(
            "UPDATE webhook_subscriptions SET active = false"
            " WHERE id = $1 AND active AND ($2::text IS NULL OR org_id = $2) RETURNING true",
            subscription_id,
            org_id,
        )
        if not found:
            return False
        await conn.execute(
            "UPDATE deliveries SET status = 'dead', last_error = 'subscription deleted'"
            " WHERE subscription_id = $1 AND status = 'pending'",
            subscription_id,
        )
        return True


async def record_event(pool: asyncpg.Pool, note: Notification, payload: bytes) -> int | None:
    """Inbox the event and queue one delivery per matching subscription, atomically.

    A subscription matches on event type, minimum severity and scope (org, team, user: unset = any).
    Returns how many deliveries were queued (0 for a duplicate of an already notified dedup key), or None
    when the event was already handled.
    """
    async with pool.acquire() as conn, conn.transaction():
        fresh = await conn.fetchval(
            "INSERT INTO inbox (event_id) VALUES ($1) ON CONFLICT DO NOTHING RETURNING true", note.event_id
        )
        if not fresh:
            return None
        if note.dedup_key is not None and not await conn.fetchval(
            "INSERT INTO notification_dedup (dedup_key, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING"
            " RETURNING true",
            note.dedup_key,
            note.event_id,
        ):
            return 0
        subscriptions = await conn.fetch(
            "SELECT id, channel FROM webhook_subscriptions"
            " WHERE active AND (event_types IS NULL OR $1 = ANY (event_types))"
            f" AND {_SEVERITY_RANK.format('$2::text')} >= {_SEVERITY_RANK.format('min_severity')}"
            " AND (org_id IS NULL OR org_id = $3) AND (team_id IS NULL OR team_id = $4)"
            " AND (user_id IS NULL OR user_id = $5) ORDER BY id",
            note.event_type,
            note.severity,
            note.org_id,
            note.team_id,
            note.user_id,
        )
        if subscriptions:
            await conn.executemany(
                "INSERT INTO deliveries (id, event_id, event_type, channel, severity, subscription_id, payload)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb) ON CONFLICT (event_id, subscription_id) DO NOTHING",
                [
                    (
                        _new_id("dlv"),
                        note.event_id,
                        note.event_type,
                        s["channel"],
                        note.severity,
                        s["id"],
                        payload.decode(),
                    )
                    for s in subscriptions
                ],
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
        RETURNING d.id, d.event_type, s.channel, d.payload::text AS payload, d.attempts, s.url,
            s.config::text AS config, s.secrets::text AS secrets
        """,
        limit,
        lease_s,
    )
    return [
        DueDelivery(
            id=r["id"],
            event_type=r["event_type"],
            channel=r["channel"],
            body=r["payload"].encode(),
            attempts=r["attempts"],
            url=r["url"],
            config=orjson.loads(r["config"]),
            secrets=orjson.loads(r["secrets"]),
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
    pool: asyncpg.Pool,
    event_type: str | None,
    status: str | None,
    limit: int,
    channel: str | None = None,
    org_id: str | None = None,
) -> list[dict[str, Any]]:
    """Newest deliveries first, optionally filtered; with `org_id`, only those of subscriptions scoped to it."""
    rows = await pool.fetch(
        f"SELECT {_DELIVERY_COLUMNS} FROM deliveries d"
        " WHERE ($1::text IS NULL OR event_type = $1) AND ($2::text IS NULL OR status = $2)"
        " AND ($4::text IS NULL OR channel = $4)"
        " AND ($5::text IS NULL OR EXISTS (SELECT 1 FROM webhook_subscriptions s"
        " WHERE s.id = d.subscription_id AND s.org_id = $5))"
        " ORDER BY created_at DESC, id LIMIT $3",
        event_type,
        status,
        limit,
        channel,
        org_id,
    )
    return [dict(r) for r in rows]


async def retry_delivery(
    pool: asyncpg.Pool, delivery_id: str, org_id: str | None = None
) -> dict[str, Any] | None:
    """Put a dead delivery back in the queue with a fresh attempt budget; None if there is no such dead one
    (with `org_id`: of a subscription scoped to that org)."""
    row = await pool.fetchrow(
        "UPDATE deliveries d SET status = 'pending', attempts = 0, next_attempt_at = now()"
        " FROM webhook_subscriptions s"
        " WHERE d.id = $1 AND d.status = 'dead' AND s.id = d.subscription_id AND s.active"
        " AND ($2::text IS NULL OR s.org_id = $2)"
        f" RETURNING {', '.join('d.' + c.strip() for c in _DELIVERY_COLUMNS.split(','))}",
        delivery_id,
        org_id,
    )
    return dict(row) if row is not None else None
