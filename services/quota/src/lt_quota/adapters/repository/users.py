"""SQL of users: creation, lookup, listing and updates."""

from __future__ import annotations

from lt_quota.adapters.repository.records import USER_COLUMNS, Conn, user_from_row
from lt_quota.domain.records import UserRecord

__all__ = ["get_user", "insert_user", "list_users", "update_user", "user_id_by_email"]


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
        f"SELECT {USER_COLUMNS} FROM users u WHERE u.id = $1 AND ($2::text IS NULL OR u.org_id = $2)",
        user_id,
        org_id,
    )
    return None if row is None else user_from_row(row)


async def list_users(conn: Conn, org_id: str) -> list[UserRecord]:
    rows = await conn.fetch(
        f"SELECT {USER_COLUMNS} FROM users u WHERE u.org_id = $1 ORDER BY u.created_at", org_id
    )
    return [user_from_row(r) for r in rows]


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
    if "status" in cols:
        sets += ", vacation_until = NULL"  # an admin's status change has no end date
    value = await conn.fetchval(
        f"UPDATE users SET {sets} WHERE id = $1 AND org_id = $2 RETURNING id",
        user_id,
        org_id,
        *(fields[c] for c in cols),
    )
    return value is not None
