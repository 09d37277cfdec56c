"""Subscription SQL: the channels events are sent to (env-configured defaults and the admin API's).

A channel's URL and secret values are stored sealed (`leaky_common.sealing`, bound to the row id and field);
`url_shown` keeps what the API may show of the URL. Only sending opens them.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

import asyncpg
import orjson

from leaky_common.sealing import SealError, SecretBox, is_sealed
from lt_notifier.domain.subscriptions import DefaultChannel, NewSubscription, Subscription, shown_url

__all__ = [
    "create_subscription",
    "deactivate_subscription",
    "get_subscription",
    "list_subscriptions",
    "new_id",
    "open_channel",
    "reseal_subscriptions",
    "seal_channel",
    "sync_default_channels",
]

logger = logging.getLogger(__name__)

_SUBSCRIPTION_COLUMNS = (
    "id, channel, name, url_shown AS url, event_types, min_severity, org_id, team_id, user_id, config::text AS config,"
    " secrets ? 'secret' AS has_secret, ARRAY(SELECT jsonb_object_keys(secrets) ORDER BY 1) AS secret_names,"
    " created_at, active"
)


def new_id(prefix: str) -> str:
    """A fresh row id with a readable prefix (`wh_`, `ch_`, `dlv_`)."""
    return f"{prefix}_{uuid.uuid4().hex}"


def _url_context(row_id: str) -> str:
    return f"webhook_subscriptions:{row_id}:url"


def _secret_context(row_id: str, name: str) -> str:
    return f"webhook_subscriptions:{row_id}:secrets:{name}"


def seal_channel(
    box: SecretBox, row_id: str, url: str | None, secrets: dict[str, str]
) -> tuple[str | None, dict[str, str]]:
    """The URL and secrets of row `row_id` as stored (sealed); SealError when there is no key."""
    sealed_url = box.seal(url, _url_context(row_id)) if url is not None else None
    return sealed_url, {k: box.seal(v, _secret_context(row_id, k)) for k, v in secrets.items()}


def open_channel(
    box: SecretBox, row_id: str, url: str | None, secrets: dict[str, str]
) -> tuple[str | None, dict[str, str]]:
    """The stored URL and secrets opened; SealError when they do not open (missing key, tampered row). A
    plaintext left from before sealing is taken as it is (start-up seals those once a key is configured)."""
    return _plain(box, row_id, url, secrets)


async def get_subscription(
    pool: asyncpg.Pool, box: SecretBox, subscription_id: str, org_id: str | None = None
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
    url, secrets = open_channel(box, row["id"], row["url"], orjson.loads(row["secrets"]))
    return Subscription(row["id"], row["channel"], url, orjson.loads(row["config"]), secrets)


async def sync_default_channels(
    pool: asyncpg.Pool, box: SecretBox, wanted: list[DefaultChannel], known_ids: list[str]
) -> None:
    """Activate the env-configured channels in `wanted`; deactivate the other ids of `known_ids`."""
    for channel in wanted:
        await _upsert_default(pool, box, channel)
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


async def _upsert_default(pool: asyncpg.Pool, box: SecretBox, c: DefaultChannel) -> None:
    url, secrets = seal_channel(box, c.id, c.url, c.secrets)
    await pool.execute(
        """
        INSERT INTO webhook_subscriptions
            (id, channel, name, url, url_shown, event_types, config, secrets, min_severity, active)
        VALUES ($1, $2, $1, $3, $4, NULL, $5::jsonb, $6::jsonb, $7, true)
        ON CONFLICT (id) DO UPDATE SET channel = EXCLUDED.channel, url = EXCLUDED.url,
            url_shown = EXCLUDED.url_shown, event_types = NULL, config = EXCLUDED.config,
            secrets = EXCLUDED.secrets, min_severity = EXCLUDED.min_severity,
            org_id = NULL, team_id = NULL, user_id = NULL, active = true
        """,
        c.id,
        c.channel,
        url,
        shown_url(c.channel, c.url),
        orjson.dumps(c.config).decode(),
        orjson.dumps(secrets).decode(),
        c.min_severity,
    )


async def create_subscription(pool: asyncpg.Pool, box: SecretBox, new: NewSubscription) -> dict[str, Any]:
    """Insert an active subscription (URL and secrets sealed) and return it (without its secrets)."""
    row_id = new_id("wh" if new.channel == "webhook" else "ch")
    url, secrets = seal_channel(box, row_id, new.url, new.secrets)
    row = await pool.fetchrow(
        "INSERT INTO webhook_subscriptions (id, channel, name, url, url_shown, event_types, config, secrets,"
        " min_severity, org_id, team_id, user_id)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8::jsonb, $9, $10, $11, $12)"
        f" RETURNING {_SUBSCRIPTION_COLUMNS}",
        row_id,
        new.channel,
        new.name,
        url,
        shown_url(new.channel, new.url),
        new.event_types,
        orjson.dumps(new.config).decode(),
        orjson.dumps(secrets).decode(),
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


async def reseal_subscriptions(pool: asyncpg.Pool, box: SecretBox) -> int:
    """Seal plaintext URLs and secrets (rows from before sealing) and re-seal those sealed with a key other
    than the current one (rotation); returns how many rows changed. Rows that do not open are left as they
    are and logged (their sends fail until the key that sealed them is configured again)."""
    if not box.configured:
        return 0
    changed = 0
    for row in await pool.fetch("SELECT id, url, secrets::text AS secrets FROM webhook_subscriptions"):
        stored: dict[str, str] = orjson.loads(row["secrets"])
        values = [v for v in (row["url"], *stored.values()) if v is not None]
        if not any(box.needs_reseal(v) for v in values):
            continue
        try:
            url, secrets = _plain(box, row["id"], row["url"], stored)
        except SealError:
            logger.warning(
                "channel secrets do not open; left as they are", extra={"subscription_id": row["id"]}
            )
            continue
        sealed_url, sealed = seal_channel(box, row["id"], url, secrets)
        await pool.execute(
            "UPDATE webhook_subscriptions SET url = $2, secrets = $3::jsonb WHERE id = $1",
            row["id"],
            sealed_url,
            orjson.dumps(sealed).decode(),
        )
        changed += 1
    return changed


def _plain(
    box: SecretBox, row_id: str, url: str | None, secrets: dict[str, str]
) -> tuple[str | None, dict[str, str]]:
    def one(value: str, context: str) -> str:
        return box.open(value, context) if is_sealed(value) else value

    opened_url = one(url, _url_context(row_id)) if url is not None else None
    return opened_url, {k: one(v, _secret_context(row_id, k)) for k, v in secrets.items()}
