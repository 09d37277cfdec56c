"""SQL of pools: creation, lookup, row locks, limits, governing pools and session budgets."""

from __future__ import annotations

from typing import TypedDict, Unpack

from lt_quota.adapters.repository.records import POOL_COLUMNS, Conn, pool_from_row
from lt_quota.domain.records import PoolRecord

__all__ = [
    "PoolScope",
    "delete_pool",
    "ensure_pool",
    "governing_pools",
    "insert_pool",
    "list_pools",
    "lock_pools",
    "owner_exists",
    "personal_pool",
    "pool_by_id",
    "pools_by_ids",
    "pools_to_load",
    "session_pool",
    "session_pools",
    "set_pool_limit",
    "update_pool",
]


class PoolScope(TypedDict, total=False):
    """A pool's period (default none) and provider/model scope (default: every model)."""

    period: str
    provider: str
    model: str


async def ensure_pool(
    conn: Conn,
    pool_id: str,
    owner_type: str,
    owner_id: str,
    org_id: str,
    unit: str,
    limit: int,
    **scope: Unpack[PoolScope],
) -> str:
    """Create the owner's pool of `unit` and scope if missing; return its id."""
    period = scope.get("period", "none")
    provider = scope.get("provider", "")
    model = scope.get("model", "")
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
        f"""SELECT {POOL_COLUMNS} FROM pools
             WHERE owner_type = 'user' AND owner_id = $1 AND unit = $2 AND provider = '' AND model = ''
             {lock}""",
        user_id,
        unit,
    )
    return None if row is None else pool_from_row(row)


async def pool_by_id(conn: Conn, pool_id: str, *, for_update: bool = False) -> PoolRecord | None:
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(f"SELECT {POOL_COLUMNS} FROM pools WHERE id = $1{lock}", pool_id)
    return None if row is None else pool_from_row(row)


async def set_pool_limit(conn: Conn, pool_id: str, limit: int) -> None:
    await conn.execute('UPDATE pools SET "limit" = $2 WHERE id = $1', pool_id, limit)


async def pools_to_load(conn: Conn) -> list[PoolRecord]:
    """Every pool except session budgets (those load on first use)."""
    rows = await conn.fetch(f"SELECT {POOL_COLUMNS} FROM pools WHERE owner_type <> 'session'")
    return [pool_from_row(r) for r in rows]


async def pools_by_ids(conn: Conn, pool_ids: list[str]) -> list[PoolRecord]:
    rows = await conn.fetch(f"SELECT {POOL_COLUMNS} FROM pools WHERE id = ANY($1::text[])", pool_ids)
    return [pool_from_row(r) for r in rows]


async def lock_pools(conn: Conn, pool_ids: list[str], *, share: bool = False) -> dict[str, PoolRecord]:
    """Row-lock pools in id order (no deadlocks) and return them: serialises ledger writes with counter
    rebuilds."""
    mode = "SHARE" if share else "UPDATE"
    rows = await conn.fetch(
        f"SELECT {POOL_COLUMNS} FROM pools WHERE id = ANY($1::text[]) ORDER BY id FOR {mode}",
        sorted(set(pool_ids)),
    )
    return {r["id"]: pool_from_row(r) for r in rows}


async def governing_pools(
    conn: Conn, org_id: str, user_id: str, team_id: str | None, key_id: str
) -> list[PoolRecord]:
    """Every pool that may govern a request of this user through this key (sessions aside)."""
    rows = await conn.fetch(
        f"""SELECT {POOL_COLUMNS} FROM pools
             WHERE org_id = $1
               AND ((owner_type = 'user' AND owner_id = $2) OR (owner_type = 'team' AND owner_id = $3)
                    OR (owner_type = 'org' AND owner_id = $1) OR (owner_type = 'key' AND owner_id = $4))
             ORDER BY created_at, id""",
        org_id,
        user_id,
        team_id,
        key_id,
    )
    return [pool_from_row(r) for r in rows]


async def list_pools(conn: Conn, org_id: str, owner_type: str | None = None) -> list[PoolRecord]:
    rows = await conn.fetch(
        f"""SELECT {POOL_COLUMNS} FROM pools WHERE org_id = $1 AND ($2::text IS NULL OR owner_type = $2)
             ORDER BY created_at, id""",
        org_id,
        owner_type,
    )
    return [pool_from_row(r) for r in rows]


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


async def session_pools(conn: Conn, org_id: str) -> list[PoolRecord]:
    rows = await conn.fetch(
        f"SELECT {POOL_COLUMNS} FROM pools WHERE org_id = $1 AND owner_type = 'session' ORDER BY created_at",
        org_id,
    )
    return [pool_from_row(r) for r in rows]


async def session_pool(
    conn: Conn, org_id: str, session_id: str, *, for_update: bool = False
) -> PoolRecord | None:
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(
        f"""SELECT {POOL_COLUMNS} FROM pools
             WHERE owner_type = 'session' AND owner_id = $1 AND unit = 'usd'{lock}""",
        f"{org_id}/{session_id}",
    )
    return None if row is None else pool_from_row(row)
