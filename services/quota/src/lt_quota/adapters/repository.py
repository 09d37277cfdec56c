"""All SQL of the quota service. Functions take a connection; the caller owns the transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TypeAlias

import asyncpg

__all__ = ["FreezeRecord", "KeyRecord", "PoolRecord", "UserRecord"]

# Pool connections are proxies of Connection; both work here.
Conn: TypeAlias = asyncpg.Connection


@dataclass(frozen=True)
class UserRecord:
    id: str
    org_id: str
    email: str
    name: str
    role: str
    status: str
    team_id: str | None
    created_at: datetime


@dataclass(frozen=True)
class KeyRecord:
    """An API key joined with its user and personal pool: what admission needs."""

    key_id: str
    user_id: str
    org_id: str
    team_id: str | None
    role: str
    email: str
    status: str
    expires_at: datetime | None
    revoked: bool
    pool_id: str | None


@dataclass(frozen=True)
class PoolRecord:
    id: str
    owner_type: str
    owner_id: str
    org_id: str
    unit: str
    limit: int


_USER_COLUMNS = """
    u.id, u.org_id, u.email, u.name, u.role, u.status, u.created_at,
    (SELECT tm.team_id FROM team_members tm WHERE tm.user_id = u.id ORDER BY tm.created_at, tm.team_id LIMIT 1)
        AS team_id
"""


def _user(row: asyncpg.Record) -> UserRecord:
    return UserRecord(
        id=row["id"],
        org_id=row["org_id"],
        email=row["email"],
        name=row["name"],
        role=row["role"],
        status=row["status"],
        team_id=row["team_id"],
        created_at=row["created_at"],
    )


def _pool(row: asyncpg.Record) -> PoolRecord:
    return PoolRecord(row["id"], row["owner_type"], row["owner_id"], row["org_id"], row["unit"], row["limit"])


# --- orgs, users, teams -------------------------------------------------------------------------------------


async def upsert_org(conn: Conn, org_id: str, name: str, timezone: str) -> str:
    await conn.execute(
        "INSERT INTO orgs (id, name, timezone) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
        org_id,
        name,
        timezone,
    )
    return str(await conn.fetchval("SELECT id FROM orgs WHERE name = $1", name))


async def insert_user(conn: Conn, user_id: str, org_id: str, email: str, name: str, role: str) -> bool:
    """False if the email is already taken in the org."""
    inserted = await conn.fetchval(
        """INSERT INTO users (id, org_id, email, name, role) VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (org_id, email) DO NOTHING RETURNING id""",
        user_id,
        org_id,
        email,
        name,
        role,
    )
    return inserted is not None


async def user_id_by_email(conn: Conn, org_id: str, email: str) -> str | None:
    value = await conn.fetchval("SELECT id FROM users WHERE org_id = $1 AND email = $2", org_id, email)
    return None if value is None else str(value)


async def get_user(conn: Conn, user_id: str, org_id: str | None = None) -> UserRecord | None:
    row = await conn.fetchrow(
        f"SELECT {_USER_COLUMNS} FROM users u WHERE u.id = $1 AND ($2::text IS NULL OR u.org_id = $2)",
        user_id,
        org_id,
    )
    return None if row is None else _user(row)


async def list_users(conn: Conn, org_id: str) -> list[UserRecord]:
    rows = await conn.fetch(
        f"SELECT {_USER_COLUMNS} FROM users u WHERE u.org_id = $1 ORDER BY u.created_at", org_id
    )
    return [_user(r) for r in rows]


async def insert_team(conn: Conn, team_id: str, org_id: str, name: str) -> bool:
    inserted = await conn.fetchval(
        "INSERT INTO teams (id, org_id, name) VALUES ($1, $2, $3) ON CONFLICT (org_id, name) DO NOTHING RETURNING id",
        team_id,
        org_id,
        name,
    )
    return inserted is not None


async def team_exists(conn: Conn, team_id: str, org_id: str) -> bool:
    return bool(await conn.fetchval("SELECT 1 FROM teams WHERE id = $1 AND org_id = $2", team_id, org_id))


async def upsert_member(conn: Conn, team_id: str, user_id: str, role: str) -> bool:
    """Add or update a membership; True if it was new."""
    inserted = await conn.fetchval(
        """INSERT INTO team_members (team_id, user_id, role) VALUES ($1, $2, $3)
           ON CONFLICT (team_id, user_id) DO UPDATE SET role = EXCLUDED.role
           RETURNING (xmax = 0)""",
        team_id,
        user_id,
        role,
    )
    return bool(inserted)


# --- api keys -----------------------------------------------------------------------------------------------


async def insert_key(
    conn: Conn, key_id: str, user_id: str, org_id: str, prefix: str, key_hash: str, name: str
) -> bool:
    inserted = await conn.fetchval(
        """INSERT INTO api_keys (id, user_id, org_id, prefix, hash, name) VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (hash) DO NOTHING RETURNING id""",
        key_id,
        user_id,
        org_id,
        prefix,
        key_hash,
        name,
    )
    return inserted is not None


async def key_by_hash(conn: Conn, key_hash: str) -> KeyRecord | None:
    row = await conn.fetchrow(
        f"""SELECT k.id AS key_id, k.expires_at, k.revoked_at IS NOT NULL AS revoked, {_USER_COLUMNS},
                   (SELECT p.id FROM pools p
                     WHERE p.owner_type = 'user' AND p.owner_id = u.id AND p.unit = 'tokens') AS pool_id
              FROM api_keys k JOIN users u ON u.id = k.user_id
             WHERE k.hash = $1""",
        key_hash,
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
    )


async def list_keys(conn: Conn, user_id: str) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            """SELECT id, prefix, name, created_at, revoked_at, expires_at FROM api_keys
                WHERE user_id = $1 ORDER BY created_at""",
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


# --- pools and ledger ---------------------------------------------------------------------------------------


async def ensure_pool(
    conn: Conn, pool_id: str, owner_type: str, owner_id: str, org_id: str, unit: str, limit: int
) -> str:
    """Create the owner's pool of `unit` if missing; return its id."""
    await conn.execute(
        """INSERT INTO pools (id, owner_type, owner_id, org_id, unit, "limit") VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (owner_type, owner_id, unit) DO NOTHING""",
        pool_id,
        owner_type,
        owner_id,
        org_id,
        unit,
        limit,
    )
    value = await conn.fetchval(
        "SELECT id FROM pools WHERE owner_type = $1 AND owner_id = $2 AND unit = $3",
        owner_type,
        owner_id,
        unit,
    )
    return str(value)


async def personal_pool(conn: Conn, user_id: str, *, for_update: bool = False) -> PoolRecord | None:
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(
        f"""SELECT id, owner_type, owner_id, org_id, unit, "limit" FROM pools
             WHERE owner_type = 'user' AND owner_id = $1 AND unit = 'tokens'{lock}""",
        user_id,
    )
    return None if row is None else _pool(row)


async def pool_by_id(conn: Conn, pool_id: str, *, for_update: bool = False) -> PoolRecord | None:
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(
        f'SELECT id, owner_type, owner_id, org_id, unit, "limit" FROM pools WHERE id = $1{lock}', pool_id
    )
    return None if row is None else _pool(row)


async def user_pools(conn: Conn, user_id: str) -> list[PoolRecord]:
    rows = await conn.fetch(
        """SELECT id, owner_type, owner_id, org_id, unit, "limit" FROM pools
            WHERE owner_type = 'user' AND owner_id = $1 ORDER BY created_at""",
        user_id,
    )
    return [_pool(r) for r in rows]


async def set_pool_limit(conn: Conn, pool_id: str, limit: int) -> None:
    await conn.execute('UPDATE pools SET "limit" = $2 WHERE id = $1', pool_id, limit)


async def pools_with_usage(conn: Conn, pool_ids: list[str] | None = None) -> list[tuple[str, int, int]]:
    """(pool id, limit, used from the ledger) for all pools, or the given ones."""
    rows = await conn.fetch(
        """SELECT p.id, p."limit", COALESCE(SUM(l.amount), 0)::bigint AS used
             FROM pools p LEFT JOIN ledger l ON l.pool_id = p.id
            WHERE $1::text[] IS NULL OR p.id = ANY($1::text[])
            GROUP BY p.id""",
        pool_ids,
    )
    return [(r["id"], r["limit"], r["used"]) for r in rows]


async def insert_ledger(
    conn: Conn, pool_id: str, amount: int, kind: str, idempotency_key: str, request_id: str | None
) -> int:
    """Append a ledger row unless its idempotency key exists; return the amount recorded under that key."""
    await conn.execute(
        """INSERT INTO ledger (pool_id, amount, kind, idempotency_key, request_id) VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (idempotency_key) DO NOTHING""",
        pool_id,
        amount,
        kind,
        idempotency_key,
        request_id,
    )
    return int(await conn.fetchval("SELECT amount FROM ledger WHERE idempotency_key = $1", idempotency_key))


# --- adjustments, freezes, inbox ----------------------------------------------------------------------------


async def find_adjustment(conn: Conn, purchase_id: str, step: str, kind: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT * FROM adjustments WHERE purchase_id = $1 AND step = $2 AND kind = $3",
        purchase_id,
        step,
        kind,
    )
    return row


async def adjustment_for_purchase(
    conn: Conn, purchase_id: str, kind: str, *, applied_only: bool = False
) -> asyncpg.Record | None:
    """Any recorded adjustment of `kind` for a purchase, whatever its step."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT * FROM adjustments WHERE purchase_id = $1 AND kind = $2 AND (applied OR NOT $3) LIMIT 1",
        purchase_id,
        kind,
        applied_only,
    )
    return row


async def insert_adjustment(
    conn: Conn,
    *,
    adjustment_id: str,
    pool_id: str,
    kind: str,
    amount: int,
    purchase_id: str,
    step: str,
    saga_id: str,
    new_limit: int,
    reply_event_id: str,
    applied: bool = True,
    reason: str | None = None,
) -> None:
    await conn.execute(
        """INSERT INTO adjustments
               (id, pool_id, kind, amount, purchase_id, step, saga_id, new_limit, reply_event_id, applied, reason)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)""",
        adjustment_id,
        pool_id,
        kind,
        amount,
        purchase_id,
        step,
        saga_id,
        new_limit,
        reply_event_id,
        applied,
        reason,
    )


@dataclass(frozen=True)
class FreezeRecord:
    """One freeze of a session, key or user."""

    id: str
    target_type: str
    target_id: str
    reason: str
    expires_at: datetime | None
    source: str
    org_id: str | None
    user_id: str | None
    created_at: datetime


def _freeze(row: asyncpg.Record) -> FreezeRecord:
    return FreezeRecord(
        id=row["id"],
        target_type=row["target_type"],
        target_id=row["target_id"],
        reason=row["reason"],
        expires_at=row["expires_at"],
        source=row["source"],
        org_id=row["org_id"],
        user_id=row["user_id"],
        created_at=row["created_at"],
    )


_FREEZE_COLUMNS = "id, target_type, target_id, reason, expires_at, source, org_id, user_id, created_at"
_LIVE = "lifted_at IS NULL AND (expires_at IS NULL OR expires_at > $1)"


async def insert_freeze(
    conn: Conn,
    freeze_id: str,
    target_type: str,
    target_id: str,
    reason: str,
    expires_at: datetime | None,
    *,
    source: str = "admin",
    org_id: str | None = None,
    user_id: str | None = None,
) -> None:
    await conn.execute(
        """INSERT INTO freezes (id, target_type, target_id, reason, expires_at, source, org_id, user_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
        freeze_id,
        target_type,
        target_id,
        reason,
        expires_at,
        source,
        org_id,
        user_id,
    )


async def live_freezes(
    conn: Conn,
    now: datetime,
    *,
    org_id: str | None = None,
    target: tuple[str, str] | None = None,
) -> list[FreezeRecord]:
    """Freezes neither lifted nor expired at `now`; optionally of one org (plus org-less ones) or one target."""
    rows = await conn.fetch(
        f"""SELECT {_FREEZE_COLUMNS} FROM freezes
             WHERE {_LIVE}
               AND ($2::text IS NULL OR org_id = $2 OR org_id IS NULL)
               AND ($3::text IS NULL OR (target_type = $3 AND target_id = $4))
             ORDER BY created_at""",
        now,
        org_id,
        target[0] if target else None,
        target[1] if target else None,
    )
    return [_freeze(r) for r in rows]


async def lift_freezes(
    conn: Conn, target_type: str, target_id: str, now: datetime, org_id: str
) -> list[FreezeRecord]:
    """Lift every live freeze of a target in `org_id` (or of no org); returns the ones lifted."""
    rows = await conn.fetch(
        f"""UPDATE freezes SET lifted_at = $1
             WHERE {_LIVE} AND target_type = $2 AND target_id = $3 AND (org_id IS NULL OR org_id = $4)
         RETURNING {_FREEZE_COLUMNS}""",
        now,
        target_type,
        target_id,
        org_id,
    )
    return [_freeze(r) for r in rows]


async def key_owner(conn: Conn, key_id: str) -> tuple[str, str] | None:
    """(user id, org id) of an API key."""
    row = await conn.fetchrow("SELECT user_id, org_id FROM api_keys WHERE id = $1", key_id)
    return None if row is None else (row["user_id"], row["org_id"])


async def claim_inbox(conn: Conn, event_id: str) -> bool:
    """Record a handled event id; False if it was handled before."""
    value = await conn.fetchval(
        "INSERT INTO inbox (event_id) VALUES ($1) ON CONFLICT DO NOTHING RETURNING event_id", event_id
    )
    return value is not None
