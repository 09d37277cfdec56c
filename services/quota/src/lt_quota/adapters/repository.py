"""All SQL of the quota service. Functions take a connection; the caller owns the transaction."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TypeAlias

import asyncpg

__all__ = ["FreezeRecord", "KeyRecord", "OrgSettings", "PoolRecord", "UserRecord"]

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
    default_priority: str = "normal"
    allow_priority_bypass: bool = False
    privacy_default: str = "standard"
    tier: str = "standard"


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
    tier: str = "standard"
    default_priority: str = "normal"
    allow_priority_bypass: bool = False
    privacy_default: str = "standard"
    allowed_models: tuple[str, ...] | None = None
    allowed_priorities: tuple[str, ...] | None = None
    org: OrgSettings | None = None
    managed_team_ids: tuple[str, ...] = ()
    # True for users of the platform org (`orgs.platform`): its admins manage orgs and global settings.
    platform: bool = False
    # The key's own leaky-bucket sizes (None: the org's, else the service's).
    rate_limit_requests: int | None = None
    rate_limit_tokens: int | None = None


@dataclass(frozen=True)
class OrgSettings:
    """An org's governance settings."""

    id: str
    name: str
    timezone: str
    vacation_share_percent: int
    allow_vacation_sharing: bool
    default_session_budget_usd_micros: int
    strict_sessions: bool
    privacy_strict: bool
    # Leaky-bucket size overrides per period (None: the service's settings).
    key_requests_per_period: int | None = None
    key_tokens_per_period: int | None = None
    user_requests_per_period: int | None = None
    user_tokens_per_period: int | None = None


@dataclass(frozen=True)
class PoolRecord:
    id: str
    owner_type: str
    owner_id: str
    org_id: str
    unit: str
    limit: int
    period: str = "none"
    provider: str = ""
    model: str = ""


_USER_COLUMNS = """
    u.id, u.org_id, u.email, u.name, u.role, u.status, u.created_at, u.default_priority,
    u.allow_priority_bypass, u.privacy_default, u.tier,
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
        default_priority=row["default_priority"],
        allow_priority_bypass=row["allow_priority_bypass"],
        privacy_default=row["privacy_default"],
        tier=row["tier"],
    )


_POOL_COLUMNS = 'id, owner_type, owner_id, org_id, unit, "limit", period, provider, model'


def _pool(row: asyncpg.Record) -> PoolRecord:
    return PoolRecord(
        row["id"],
        row["owner_type"],
        row["owner_id"],
        row["org_id"],
        row["unit"],
        row["limit"],
        row["period"],
        row["provider"],
        row["model"],
    )


_ORG_COLUMNS = """o.id AS org_id_, o.name AS org_name, o.timezone, o.vacation_share_percent,
    o.allow_vacation_sharing, o.default_session_budget_usd_micros, o.strict_sessions,
    o.privacy_strict AS org_privacy_strict, o.key_requests_per_period, o.key_tokens_per_period,
    o.user_requests_per_period, o.user_tokens_per_period"""


def _org(row: asyncpg.Record) -> OrgSettings:
    return OrgSettings(
        id=row["org_id_"],
        name=row["org_name"],
        timezone=row["timezone"],
        vacation_share_percent=row["vacation_share_percent"],
        allow_vacation_sharing=row["allow_vacation_sharing"],
        default_session_budget_usd_micros=row["default_session_budget_usd_micros"],
        strict_sessions=row["strict_sessions"],
        privacy_strict=row["org_privacy_strict"],
        key_requests_per_period=row["key_requests_per_period"],
        key_tokens_per_period=row["key_tokens_per_period"],
        user_requests_per_period=row["user_requests_per_period"],
        user_tokens_per_period=row["user_tokens_per_period"],
    )


# --- orgs, users, teams -------------------------------------------------------------------------------------


async def upsert_org(conn: Conn, org_id: str, name: str, timezone: str) -> str:
    await conn.execute(
        "INSERT INTO orgs (id, name, timezone) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
        org_id,
        name,
        timezone,
    )
    return str(await conn.fetchval("SELECT id FROM orgs WHERE name = $1", name))


async def insert_org(conn: Conn, org_id: str, name: str, timezone: str) -> bool:
    """False if an org of that name exists."""
    inserted = await conn.fetchval(
        "INSERT INTO orgs (id, name, timezone) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING RETURNING id",
        org_id,
        name,
        timezone,
    )
    return inserted is not None


async def mark_platform_org(conn: Conn, org_id: str) -> None:
    await conn.execute("UPDATE orgs SET platform = true WHERE id = $1", org_id)


async def is_platform_org(conn: Conn, org_id: str) -> bool:
    return bool(await conn.fetchval("SELECT platform FROM orgs WHERE id = $1", org_id))


async def list_orgs(conn: Conn) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            """SELECT o.id, o.name, o.timezone, o.platform, o.created_at,
                      (SELECT count(*) FROM users u WHERE u.org_id = o.id) AS user_count
                 FROM orgs o ORDER BY o.created_at, o.id"""
        )
    )


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
    conn: Conn,
    key_id: str,
    user_id: str,
    org_id: str,
    prefix: str,
    key_hash: str,
    name: str,
    *,
    expires_at: datetime | None = None,
    allowed_models: list[str] | None = None,
    allowed_priorities: list[str] | None = None,
    rate_limit_requests: int | None = None,
    rate_limit_tokens: int | None = None,
) -> bool:
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
        expires_at,
        allowed_models,
        allowed_priorities,
        rate_limit_requests,
        rate_limit_tokens,
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
        f"""SELECT k.id AS key_id, k.expires_at, k.revoked_at IS NOT NULL AS revoked, {_USER_COLUMNS},
                   k.allowed_models, k.allowed_priorities, k.rate_limit_requests_per_period,
                   k.rate_limit_tokens_per_period, {_ORG_COLUMNS},
                   (SELECT p.id FROM pools p
                     WHERE p.owner_type = 'user' AND p.owner_id = u.id AND p.unit = 'tokens'
                       AND p.provider = '' AND p.model = '') AS pool_id,
                   ARRAY(SELECT tm.team_id FROM team_members tm
                          WHERE tm.user_id = u.id AND tm.role = 'manager' ORDER BY tm.team_id) AS managed_team_ids,
                   o.platform
              FROM api_keys k JOIN users u ON u.id = k.user_id JOIN orgs o ON o.id = u.org_id
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
        org=_org(row),
        managed_team_ids=tuple(row["managed_team_ids"]),
        platform=row["platform"],
        rate_limit_requests=row["rate_limit_requests_per_period"],
        rate_limit_tokens=row["rate_limit_tokens_per_period"],
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


# --- pools and ledger ---------------------------------------------------------------------------------------


async def ensure_pool(
    conn: Conn,
    pool_id: str,
    owner_type: str,
    owner_id: str,
    org_id: str,
    unit: str,
    limit: int,
    *,
    period: str = "none",
    provider: str = "",
    model: str = "",
) -> str:
    """Create the owner's pool of `unit` and scope if missing; return its id."""
    await conn.execute(
        """INSERT INTO pools (id, owner_type, owner_id, org_id, unit, "limit", period, provider, model)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
           ON CONFLICT (owner_type, owner_id, unit, provider, model) DO NOTHING""",
        pool_id,
        owner_type,
        owner_id,
        org_id,
        unit,
        limit,
        period,
        provider,
        model,
    )
    value = await conn.fetchval(
        """SELECT id FROM pools WHERE owner_type = $1 AND owner_id = $2 AND unit = $3
            AND provider = $4 AND model = $5""",
        owner_type,
        owner_id,
        unit,
        provider,
        model,
    )
    return str(value)


async def personal_pool(
    conn: Conn, user_id: str, *, unit: str = "tokens", for_update: bool = False
) -> PoolRecord | None:
    """The user's unscoped pool of `unit` (tokens, or usd in micro-dollars)."""
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(
        f"""SELECT {_POOL_COLUMNS} FROM pools
             WHERE owner_type = 'user' AND owner_id = $1 AND unit = $2 AND provider = '' AND model = ''
             {lock}""",
        user_id,
        unit,
    )
    return None if row is None else _pool(row)


async def pool_by_id(conn: Conn, pool_id: str, *, for_update: bool = False) -> PoolRecord | None:
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(f"SELECT {_POOL_COLUMNS} FROM pools WHERE id = $1{lock}", pool_id)
    return None if row is None else _pool(row)


async def set_pool_limit(conn: Conn, pool_id: str, limit: int) -> None:
    await conn.execute('UPDATE pools SET "limit" = $2 WHERE id = $1', pool_id, limit)


async def pools_to_load(conn: Conn) -> list[PoolRecord]:
    """Every pool except session budgets (those load on first use)."""
    rows = await conn.fetch(f"SELECT {_POOL_COLUMNS} FROM pools WHERE owner_type <> 'session'")
    return [_pool(r) for r in rows]


async def pools_by_ids(conn: Conn, pool_ids: list[str]) -> list[PoolRecord]:
    rows = await conn.fetch(f"SELECT {_POOL_COLUMNS} FROM pools WHERE id = ANY($1::text[])", pool_ids)
    return [_pool(r) for r in rows]


async def lock_pools(conn: Conn, pool_ids: list[str], *, share: bool = False) -> dict[str, PoolRecord]:
    """Row-lock pools in id order (no deadlocks) and return them: serialises ledger writes with counter
    rebuilds."""
    mode = "SHARE" if share else "UPDATE"
    rows = await conn.fetch(
        f"SELECT {_POOL_COLUMNS} FROM pools WHERE id = ANY($1::text[]) ORDER BY id FOR {mode}",
        sorted(set(pool_ids)),
    )
    return {r["id"]: _pool(r) for r in rows}


async def period_totals(conn: Conn, pairs: list[tuple[str, str]]) -> dict[str, int]:
    """Running totals (every source) of many pools, each for its own period: pool id -> used."""
    rows = await conn.fetch(
        """SELECT u.pool_id, u.used FROM pool_usage u
             JOIN unnest($1::text[], $2::text[]) AS w (pool_id, period_key)
               ON u.pool_id = w.pool_id AND u.period_key = w.period_key
            WHERE u.source = ''""",
        [p for p, _ in pairs],
        [k for _, k in pairs],
    )
    return {r["pool_id"]: int(r["used"]) for r in rows}


async def ledger_sum(conn: Conn, pool_id: str, period_key: str, source: str | None = None) -> int:
    """What the ledger holds for a pool in one period (only rows of `source`, if given), from the running
    totals kept with every ledger row."""
    value = await conn.fetchval(
        "SELECT used FROM pool_usage WHERE pool_id = $1 AND period_key = $2 AND source = $3",
        pool_id,
        period_key,
        source or "",
    )
    return int(value or 0)


async def governing_pools(
    conn: Conn, org_id: str, user_id: str, team_id: str | None, key_id: str
) -> list[PoolRecord]:
    """Every pool that may govern a request of this user through this key (sessions aside)."""
    rows = await conn.fetch(
        f"""SELECT {_POOL_COLUMNS} FROM pools
             WHERE org_id = $1
               AND ((owner_type = 'user' AND owner_id = $2) OR (owner_type = 'team' AND owner_id = $3)
                    OR (owner_type = 'org' AND owner_id = $1) OR (owner_type = 'key' AND owner_id = $4))
             ORDER BY created_at, id""",
        org_id,
        user_id,
        team_id,
        key_id,
    )
    return [_pool(r) for r in rows]


async def teammate_on_vacation(conn: Conn, team_id: str, user_id: str) -> bool:
    """True if another member of the team is on vacation."""
    return bool(
        await conn.fetchval(
            """SELECT EXISTS (SELECT 1 FROM team_members tm JOIN users u ON u.id = tm.user_id
                               WHERE tm.team_id = $1 AND u.id <> $2 AND u.status = 'on_vacation')""",
            team_id,
            user_id,
        )
    )


async def insert_ledger(
    conn: Conn,
    pool_id: str,
    amount: int,
    kind: str,
    idempotency_key: str,
    request_id: str | None,
    *,
    period_key: str = "",
    source: str | None = None,
) -> tuple[int, int | None]:
    """Append a ledger row unless its idempotency key exists, and add it to the running totals, in one
    statement. Returns (amount recorded under that key, the period's running total if this call inserted
    it, else None)."""
    totals = ["", source] if source == "vacation_share" else [""]
    row = await conn.fetchrow(
        """WITH ins AS (
               INSERT INTO ledger (pool_id, amount, kind, idempotency_key, request_id, period_key, source)
               VALUES ($1, $2, $3, $4, $5, $6, $7)
               ON CONFLICT (idempotency_key) DO NOTHING RETURNING amount
           ), tot AS (
               INSERT INTO pool_usage (pool_id, period_key, source, used)
               SELECT $1, $6, t, ins.amount FROM ins, unnest($8::text[]) AS t
               ON CONFLICT (pool_id, period_key, source) DO UPDATE SET used = pool_usage.used + EXCLUDED.used
               RETURNING source, used
           )
           SELECT (SELECT amount FROM ins) AS inserted, (SELECT used FROM tot WHERE source = '') AS used""",
        pool_id,
        amount,
        kind,
        idempotency_key,
        request_id,
        period_key,
        source,
        totals,
    )
    if row["inserted"] is not None:
        return int(row["inserted"]), int(row["used"])
    value = await conn.fetchval("SELECT amount FROM ledger WHERE idempotency_key = $1", idempotency_key)
    return int(value), None


async def claim_threshold(conn: Conn, pool_id: str, period_key: str, percent: int) -> bool:
    """Record that a pool reached `percent` in a period; False if it was announced before."""
    value = await conn.fetchval(
        """INSERT INTO threshold_events (pool_id, period_key, percent) VALUES ($1, $2, $3)
           ON CONFLICT DO NOTHING RETURNING percent""",
        pool_id,
        period_key,
        percent,
    )
    return value is not None


async def org_settings(conn: Conn, org_id: str) -> OrgSettings | None:
    row = await conn.fetchrow(f"SELECT {_ORG_COLUMNS} FROM orgs o WHERE o.id = $1", org_id)
    return None if row is None else _org(row)


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


# --- management: users, teams, org, pools, approvals --------------------------------------------------------


async def update_user(conn: Conn, user_id: str, org_id: str, fields: dict[str, object]) -> bool:
    """Set the given columns of a user of the org; False if there is no such user."""
    allowed = {
        "status",
        "role",
        "default_priority",
        "allow_priority_bypass",
        "privacy_default",
        "tier",
        "name",
    }
    cols = [c for c in fields if c in allowed]
    if not cols:
        return bool(await conn.fetchval("SELECT 1 FROM users WHERE id = $1 AND org_id = $2", user_id, org_id))
    sets = ", ".join(f"{c} = ${i + 3}" for i, c in enumerate(cols))
    value = await conn.fetchval(
        f"UPDATE users SET {sets} WHERE id = $1 AND org_id = $2 RETURNING id",
        user_id,
        org_id,
        *(fields[c] for c in cols),
    )
    return value is not None


async def update_org(conn: Conn, org_id: str, fields: dict[str, object]) -> None:
    allowed = {
        "timezone",
        "vacation_share_percent",
        "allow_vacation_sharing",
        "default_session_budget_usd_micros",
        "strict_sessions",
        "privacy_strict",
        "key_requests_per_period",
        "key_tokens_per_period",
        "user_requests_per_period",
        "user_tokens_per_period",
    }
    cols = [c for c in fields if c in allowed]
    if cols:
        sets = ", ".join(f"{c} = ${i + 2}" for i, c in enumerate(cols))
        await conn.execute(f"UPDATE orgs SET {sets} WHERE id = $1", org_id, *(fields[c] for c in cols))


async def list_teams(conn: Conn, org_id: str) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            """SELECT t.id, t.name, t.created_at,
                      (SELECT count(*) FROM team_members m WHERE m.team_id = t.id) AS member_count
                 FROM teams t WHERE t.org_id = $1 ORDER BY t.created_at""",
            org_id,
        )
    )


async def user_teams(conn: Conn, user_id: str) -> list[asyncpg.Record]:
    """The user's teams with their role there and the member count."""
    return list(
        await conn.fetch(
            """SELECT t.id, t.name, tm.role,
                      (SELECT count(*) FROM team_members m WHERE m.team_id = t.id) AS member_count
                 FROM team_members tm JOIN teams t ON t.id = tm.team_id
                WHERE tm.user_id = $1 ORDER BY tm.created_at, t.id""",
            user_id,
        )
    )


async def team_members(conn: Conn, team_id: str) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            """SELECT u.id, u.email, u.name, u.status, tm.role FROM team_members tm JOIN users u ON u.id = tm.user_id
                WHERE tm.team_id = $1 ORDER BY tm.created_at, u.id""",
            team_id,
        )
    )


async def is_manager(conn: Conn, team_id: str, user_id: str) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT 1 FROM team_members WHERE team_id = $1 AND user_id = $2 AND role = 'manager'",
            team_id,
            user_id,
        )
    )


async def list_pools(conn: Conn, org_id: str, owner_type: str | None = None) -> list[PoolRecord]:
    rows = await conn.fetch(
        f"""SELECT {_POOL_COLUMNS} FROM pools WHERE org_id = $1 AND ($2::text IS NULL OR owner_type = $2)
             ORDER BY created_at, id""",
        org_id,
        owner_type,
    )
    return [_pool(r) for r in rows]


async def insert_pool(conn: Conn, pool: PoolRecord) -> bool:
    """False if the owner already has a pool of this unit and scope."""
    value = await conn.fetchval(
        """INSERT INTO pools (id, owner_type, owner_id, org_id, unit, "limit", period, provider, model)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
           ON CONFLICT (owner_type, owner_id, unit, provider, model) DO NOTHING RETURNING id""",
        pool.id,
        pool.owner_type,
        pool.owner_id,
        pool.org_id,
        pool.unit,
        pool.limit,
        pool.period,
        pool.provider,
        pool.model,
    )
    return value is not None


async def owner_exists(conn: Conn, owner_type: str, owner_id: str, org_id: str) -> bool:
    if owner_type == "org":
        return owner_id == org_id
    table = {"user": "users", "team": "teams", "key": "api_keys"}[owner_type]
    return bool(await conn.fetchval(f"SELECT 1 FROM {table} WHERE id = $1 AND org_id = $2", owner_id, org_id))


async def update_pool(conn: Conn, pool_id: str, limit: int | None, period: str | None) -> None:
    await conn.execute(
        'UPDATE pools SET "limit" = COALESCE($2, "limit"), period = COALESCE($3, period) WHERE id = $1',
        pool_id,
        limit,
        period,
    )


async def delete_pool(conn: Conn, pool_id: str) -> bool:
    """Delete a pool that was never charged; False if it has ledger rows or other references."""
    if await conn.fetchval("SELECT 1 FROM ledger WHERE pool_id = $1 LIMIT 1", pool_id):
        return False
    if await conn.fetchval(
        """SELECT 1 FROM approvals WHERE pool_id = $1 UNION ALL SELECT 1 FROM adjustments WHERE pool_id = $1
           LIMIT 1""",
        pool_id,
    ):
        return False
    await conn.execute("DELETE FROM threshold_events WHERE pool_id = $1", pool_id)
    await conn.execute("DELETE FROM pools WHERE id = $1", pool_id)
    return True


_APPROVAL_COLUMNS = """id, org_id, team_id, requester_user_id, pool_id, amount, unit, reason, priority, status,
    approved_amount, decided_by, decision_reason, decided_at, created_at"""


async def insert_approval(
    conn: Conn,
    approval_id: str,
    org_id: str,
    team_id: str,
    requester: str,
    pool_id: str,
    amount: int,
    reason: str,
    priority: str,
) -> asyncpg.Record:
    row: asyncpg.Record = await conn.fetchrow(
        f"""INSERT INTO approvals (id, org_id, team_id, requester_user_id, pool_id, amount, reason, priority)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {_APPROVAL_COLUMNS}""",
        approval_id,
        org_id,
        team_id,
        requester,
        pool_id,
        amount,
        reason,
        priority,
    )
    return row


async def get_approval(
    conn: Conn, approval_id: str, org_id: str, *, for_update: bool = False
) -> asyncpg.Record | None:
    lock = " FOR UPDATE" if for_update else ""
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {_APPROVAL_COLUMNS} FROM approvals WHERE id = $1 AND org_id = $2{lock}", approval_id, org_id
    )
    return row


async def pending_approvals(conn: Conn, org_id: str, manager_id: str | None) -> list[asyncpg.Record]:
    """Pending requests of the teams `manager_id` manages (every team of the org if None), never their own."""
    return list(
        await conn.fetch(
            f"""SELECT {_APPROVAL_COLUMNS} FROM approvals a
                 WHERE a.org_id = $1 AND a.status = 'pending'
                   AND ($2::text IS NULL OR (a.requester_user_id <> $2 AND EXISTS (
                        SELECT 1 FROM team_members tm
                         WHERE tm.team_id = a.team_id AND tm.user_id = $2 AND tm.role = 'manager')))
                 ORDER BY a.created_at""",
            org_id,
            manager_id,
        )
    )


async def my_approvals(conn: Conn, user_id: str) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            f"SELECT {_APPROVAL_COLUMNS} FROM approvals WHERE requester_user_id = $1 ORDER BY created_at",
            user_id,
        )
    )


async def decide_approval(
    conn: Conn,
    approval_id: str,
    status: str,
    approved_amount: int | None,
    decided_by: str,
    reason: str | None,
) -> asyncpg.Record:
    row: asyncpg.Record = await conn.fetchrow(
        f"""UPDATE approvals SET status = $2, approved_amount = $3, decided_by = $4, decision_reason = $5,
                   decided_at = now()
             WHERE id = $1 RETURNING {_APPROVAL_COLUMNS}""",
        approval_id,
        status,
        approved_amount,
        decided_by,
        reason,
    )
    return row


async def session_pools(conn: Conn, org_id: str) -> list[PoolRecord]:
    rows = await conn.fetch(
        f"SELECT {_POOL_COLUMNS} FROM pools WHERE org_id = $1 AND owner_type = 'session' ORDER BY created_at",
        org_id,
    )
    return [_pool(r) for r in rows]


async def session_pool(
    conn: Conn, org_id: str, session_id: str, *, for_update: bool = False
) -> PoolRecord | None:
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(
        f"""SELECT {_POOL_COLUMNS} FROM pools
             WHERE owner_type = 'session' AND owner_id = $1 AND unit = 'usd'{lock}""",
        f"{org_id}/{session_id}",
    )
    return None if row is None else _pool(row)
