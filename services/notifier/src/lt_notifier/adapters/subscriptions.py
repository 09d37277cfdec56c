"""Subscription SQL: the channels events are sent to (env-configured defaults and the admin API's)."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import orjson

from lt_notifier.domain.subscriptions import DefaultChannel, NewSubscription, Subscription

__all__ = [
    "create_subscription",
    "deactivate_subscription",
    "get_subscription",
    "list_subscriptions",
    "new_id",
    "sync_default_channels",
]

_SUBSCRIPTION_COLUMNS = (
    "id, channel, name, url, event_types, min_severity, org_id, team_id, user_id, config::text AS config,"
    " secrets ? 'secret' AS has_secret, ARRAY(SELECT jsonb_object_keys(secrets) ORDER BY 1) AS secret_names,"
    " created_at, active"
)


def new_id(prefix: str) -> str:
    """A fresh row id with a readable prefix (`wh_`, `ch_`, `dlv_`)."""
    return f"{prefix}_{uuid.uuid4().hex}"


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


async def create_subscription(pool: asyncpg.Pool, new: NewSubscription) -> dict[str, Any]:
    """Insert an active subscription and return it (without its secrets)."""
    row = await pool.fetchrow(
        "INSERT INTO webhook_subscriptions (id, channel, name, url, event_types, config, secrets, min_severity,"
        " org_id, team_id, user_id) VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb, $8, $9, $10, $11)"
        f" RETURNING {_SUBSCRIPTION_COLUMNS}",
        new_id("wh" if new.channel == "webhook" else "ch"),
        new.channel,
        new.name,
        new.url,
        new.event_types,
        orjson.dumps(new.config).decode(),
        orjson.dumps(new.secrets).decode(),
        new.min_severity,
        new.org_id,
        new.team_id,
        new.user_id,
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
