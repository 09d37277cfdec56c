"""Delivery SQL: the inbox and dedup keys of consumed events, the delivery queue and its log."""

from __future__ import annotations

from typing import Any

import asyncpg
import orjson

from leaky_common.inbox import claim
from leaky_common.sealing import SealError, SecretBox
from leaky_common.tracing import headers_carrier
from lt_notifier.adapters.subscriptions import new_id, open_channel
from lt_notifier.domain.delivery import DueDelivery
from lt_notifier.domain.notification import Notification

__all__ = [
    "claim_due",
    "list_deliveries",
    "mark_delivered",
    "mark_failed",
    "record_event",
    "retry_delivery",
]

_DELIVERY_COLUMNS = (
    "id, event_id, event_type, channel, severity, subscription_id, status, attempts, last_error, next_attempt_at,"
    " delivered_at, created_at, payload::text AS payload"
)
_SEVERITY_RANK = "array_position(ARRAY['info', 'warning', 'error', 'critical'], {})"


async def record_event(pool: asyncpg.Pool, note: Notification, payload: bytes) -> int | None:
    """Inbox the event and queue one delivery per matching subscription, atomically.

    A subscription matches on event type, minimum severity and scope (org, team, user: unset = any).
    Returns how many deliveries were queued (0 for a duplicate of an already notified dedup key), or None
    when the event was already handled.
    """
    async with pool.acquire() as conn, conn.transaction():
        if not await claim(conn, note.event_id):
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
        traceparent = headers_carrier().get("traceparent")  # the consumer span's, for the sends to continue
        if subscriptions:
            await conn.executemany(
                "INSERT INTO deliveries (id, event_id, event_type, channel, severity, subscription_id, payload,"
                " traceparent) VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8)"
                " ON CONFLICT (event_id, subscription_id) DO NOTHING",
                [
                    (
                        new_id("dlv"),
                        note.event_id,
                        note.event_type,
                        s["channel"],
                        note.severity,
                        s["id"],
                        payload.decode(),
                        traceparent,
                    )
                    for s in subscriptions
                ],
            )
        return len(subscriptions)


async def claim_due(pool: asyncpg.Pool, box: SecretBox, limit: int, lease_s: float) -> list[DueDelivery]:
    """Take up to `limit` due deliveries, pushing their next attempt out by `lease_s` while they are sent;
    their channel's URL and secrets opened (`sealed_shut` when they do not open)."""
    rows = await pool.fetch(
        """
        UPDATE deliveries d SET next_attempt_at = now() + make_interval(secs => $2)
        FROM webhook_subscriptions s
        WHERE s.id = d.subscription_id AND d.id IN (
            SELECT id FROM deliveries WHERE status = 'pending' AND next_attempt_at <= now()
            ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED
        )
        RETURNING d.id, d.subscription_id, d.event_type, s.channel, d.payload::text AS payload, d.attempts, s.url,
            s.config::text AS config, s.secrets::text AS secrets, d.traceparent
        """,
        limit,
        lease_s,
    )
    return [_due(box, r) for r in rows]


def _due(box: SecretBox, r: asyncpg.Record) -> DueDelivery:
    try:
        url, secrets = open_channel(box, r["subscription_id"], r["url"], orjson.loads(r["secrets"]))
        shut = False
    except SealError:
        url, secrets, shut = None, {}, True
    return DueDelivery(
        id=r["id"],
        event_type=r["event_type"],
        channel=r["channel"],
        body=r["payload"].encode(),
        attempts=r["attempts"],
        url=url,
        config=orjson.loads(r["config"]),
        secrets=secrets,
        sealed_shut=shut,
        traceparent=r["traceparent"],
    )


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
