"""SQL of API keys: creation, lookup for authentication, rate-limit sizes, rotation and revocation."""

from __future__ import annotations

from datetime import datetime
from typing import TypedDict, Unpack

import asyncpg

from lt_quota.adapters.repository.records import (
    CHARGED_TEAM,
    ORG_COLUMNS,
    TEAM_BUCKET_COLUMNS,
    USER_COLUMNS,
    Conn,
    org_from_row,
    team_buckets_from_row,
)
from lt_quota.domain.records import KeyRecord

__all__ = [
    "KeyOptions",
    "get_key",
    "insert_key",
    "key_by_hash",
    "key_by_id",
    "key_owner",
    "list_keys",
    "move_key_pools",
    "revoke_key",
    "revoke_named_keys_except",
    "update_key_rate_limits",
]


class KeyOptions(TypedDict, total=False):
    """A new key's optional limits (absent: none): expiry, allowed models and priorities, own bucket sizes."""

    expires_at: datetime | None
    allowed_models: list[str] | None
    allowed_priorities: list[str] | None
    rate_limit_requests: int | None
    rate_limit_tokens: int | None


async def insert_key(
    conn: Conn,
    key_id: str,
    user_id: str,
    org_id: str,
    prefix: str,
    key_hash: str,
    name: str,
    **options: Unpack[KeyOptions],
) -> bool:
    """Store a new key (by hash); False if that hash exists."""
    inserted = await conn.fetchval(
        """INSERT INTO api_keys
               (id, user_id, org_id, prefix, hash, name, expires_at, allowed_models, allowed_priorities,
                rate_limit_requests_per_period, rate_limit_tokens_per_period)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
           ON CONFLICT (hash) DO NOTHING RETURNING id""",
        key_id,
        user_id,
        org_id,
        prefix,
        key_hash,
        name,
        options.get("expires_at"),
        options.get("allowed_models"),
        options.get("allowed_priorities"),
        options.get("rate_limit_requests"),
        options.get("rate_limit_tokens"),
    )
    return inserted is not None


_KEY_VIEW_COLUMNS = """id, prefix, name, created_at, revoked_at, expires_at, allowed_models, allowed_priorities,
    rate_limit_requests_per_period, rate_limit_tokens_per_period"""


async def update_key_rate_limits(
    conn: Conn, key_id: str, user_id: str, fields: dict[str, int | None]
) -> bool:
    """Set (or clear, with None) a live key's own bucket sizes; False if the user has no such key."""
    cols = [c for c in ("rate_limit_requests_per_period", "rate_limit_tokens_per_period") if c in fields]
    sets = ", ".join(f"{c} = ${i + 3}" for i, c in enumerate(cols)) or "id = id"
    value = await conn.fetchval(
        f"UPDATE api_keys SET {sets} WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL RETURNING id",
        key_id,
        user_id,
        *(fields[c] for c in cols),
    )
    return value is not None


async def get_key(conn: Conn, key_id: str, user_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {_KEY_VIEW_COLUMNS}, hash FROM api_keys WHERE id = $1 AND user_id = $2",
        key_id,
        user_id,
    )
    return row


async def key_by_hash(conn: Conn, key_hash: str) -> KeyRecord | None:
    return await _key_where(conn, "k.hash = $1", key_hash)


async def key_by_id(conn: Conn, key_id: str) -> KeyRecord | None:
    return await _key_where(conn, "k.id = $1", key_id)


async def _key_where(conn: Conn, clause: str, value: str) -> KeyRecord | None:
    row = await conn.fetchrow(
        f"""SELECT k.id AS key_id, k.expires_at, k.revoked_at IS NOT NULL AS revoked, {USER_COLUMNS},
                   k.allowed_models, k.allowed_priorities, k.rate_limit_requests_per_period,
                   k.rate_limit_tokens_per_period, {ORG_COLUMNS},
                   (SELECT p.id FROM pools p
                     WHERE p.owner_type = 'user' AND p.owner_id = u.id AND p.unit = 'tokens'
                       AND p.provider = '' AND p.model = '') AS pool_id,
                   ARRAY(SELECT tm.team_id FROM team_members tm
                          WHERE tm.user_id = u.id AND tm.role = 'manager' ORDER BY tm.team_id) AS managed_team_ids,
                   o.platform, {TEAM_BUCKET_COLUMNS}
              FROM api_keys k JOIN users u ON u.id = k.user_id JOIN orgs o ON o.id = u.org_id
                   LEFT JOIN teams tb ON tb.id = {CHARGED_TEAM}
             WHERE {clause}""",
        value,
    )
    if row is None:
        return None
    return KeyRecord(
        key_id=row["key_id"],
        user_id=row["id"],
        org_id=row["org_id"],
        team_id=row["team_id"],
        role=row["role"],
        email=row["email"],
        status=row["status"],
        expires_at=row["expires_at"],
        revoked=row["revoked"],
        pool_id=row["pool_id"],
        tier=row["tier"],
        default_priority=row["default_priority"],
        allow_priority_bypass=row["allow_priority_bypass"],
        privacy_default=row["privacy_default"],
        allowed_models=tuple(row["allowed_models"]) if row["allowed_models"] is not None else None,
        allowed_priorities=tuple(row["allowed_priorities"])
        if row["allowed_priorities"] is not None
        else None,
        org=org_from_row(row),
        managed_team_ids=tuple(row["managed_team_ids"]),
        platform=row["platform"],
        rate_limit_requests=row["rate_limit_requests_per_period"],
        rate_limit_tokens=row["rate_limit_tokens_per_period"],
        team_buckets=team_buckets_from_row(row),
    )


async def move_key_pools(conn: Conn, old_key_id: str, new_key_id: str) -> None:
    """Hand a key's own caps to its replacement (rotation)."""
    await conn.execute(
        "UPDATE pools SET owner_id = $2 WHERE owner_type = 'key' AND owner_id = $1", old_key_id, new_key_id
    )


async def list_keys(conn: Conn, user_id: str) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            f"SELECT {_KEY_VIEW_COLUMNS} FROM api_keys WHERE user_id = $1 ORDER BY created_at",
            user_id,
        )
    )


async def revoke_key(conn: Conn, key_id: str, user_id: str) -> str | None:
    """Revoke the user's key; returns its hash, or None if the user has no such key."""
    value = await conn.fetchval(
        """UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now())
            WHERE id = $1 AND user_id = $2 RETURNING hash""",
        key_id,
        user_id,
    )
    return None if value is None else str(value)


async def key_owner(conn: Conn, key_id: str) -> tuple[str, str] | None:
    """(user id, org id) of an API key."""
    row = await conn.fetchrow("SELECT user_id, org_id FROM api_keys WHERE id = $1", key_id)
    return None if row is None else (row["user_id"], row["org_id"])


async def revoke_named_keys_except(conn: Conn, user_id: str, name: str, keep_hash: str) -> list[str]:
    """Revoke the user's live keys called `name` other than `keep_hash`; returns their ids."""
    rows = await conn.fetch(
        """UPDATE api_keys SET revoked_at = now()
            WHERE user_id = $1 AND name = $2 AND hash <> $3 AND revoked_at IS NULL RETURNING id""",
        user_id,
        name,
        keep_hash,
    )
    return [str(r["id"]) for r in rows]
