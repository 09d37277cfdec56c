"""SQL of orgs: creation, the platform flag, listing and governance settings."""

from __future__ import annotations

import asyncpg

from lt_quota.adapters.repository.records import ORG_COLUMNS, Conn, org_from_row
from lt_quota.domain.records import OrgSettings

__all__ = [
    "insert_org",
    "is_platform_org",
    "list_orgs",
    "mark_platform_org",
    "org_settings",
    "update_org",
    "upsert_org",
]


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


async def org_ids(conn: Conn) -> list[str]:
    return [str(r["id"]) for r in await conn.fetch("SELECT id FROM orgs")]


async def list_orgs(conn: Conn) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            """SELECT o.id, o.name, o.timezone, o.platform, o.created_at,
                      (SELECT count(*) FROM users u WHERE u.org_id = o.id) AS user_count
                 FROM orgs o ORDER BY o.created_at, o.id"""
        )
    )


async def org_settings(conn: Conn, org_id: str) -> OrgSettings | None:
    row = await conn.fetchrow(f"SELECT {ORG_COLUMNS} FROM orgs o WHERE o.id = $1", org_id)
    return None if row is None else org_from_row(row)


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
        "manager_approval_limit",
        "user_requests_per_period",
        "user_tokens_per_period",
    }
    cols = [c for c in fields if c in allowed]
    if cols:
        sets = ", ".join(f"{c} = ${i + 2}" for i, c in enumerate(cols))
        await conn.execute(f"UPDATE orgs SET {sets} WHERE id = $1", org_id, *(fields[c] for c in cols))
