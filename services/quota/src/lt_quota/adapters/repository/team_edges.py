"""SQL of a team's bucket sizes and of a user's primary team."""

from __future__ import annotations

from typing import Any

from lt_quota.adapters.repository.records import Conn
from lt_quota.domain.records import BucketOverrides

__all__ = [
    "BUCKET_COLUMNS",
    "is_member",
    "set_primary_team",
    "set_team_buckets",
    "team_bucket_overrides",
    "team_buckets",
]

BUCKET_COLUMNS = (
    "key_requests_per_period",
    "key_tokens_per_period",
    "user_requests_per_period",
    "user_tokens_per_period",
)


async def team_buckets(conn: Conn, team_id: str, org_id: str) -> dict[str, Any] | None:
    """A team of the org with its bucket sizes (None if no such team)."""
    row = await conn.fetchrow(
        f"SELECT id, name, org_id, {', '.join(BUCKET_COLUMNS)} FROM teams WHERE id = $1 AND org_id = $2",
        team_id,
        org_id,
    )
    return None if row is None else dict(row)


async def team_bucket_overrides(conn: Conn, team_id: str, org_id: str) -> BucketOverrides | None:
    """The bucket sizes a team overrides (None if no such team)."""
    team = await team_buckets(conn, team_id, org_id)
    return None if team is None else BucketOverrides(**{c: team[c] for c in BUCKET_COLUMNS})


async def set_team_buckets(conn: Conn, team_id: str, org_id: str, fields: dict[str, int | None]) -> bool:
    """Set (or clear, with None) the given bucket sizes of a team of the org; False if no such team."""
    cols = [c for c in BUCKET_COLUMNS if c in fields]
    if not cols:
        return bool(await conn.fetchval("SELECT 1 FROM teams WHERE id = $1 AND org_id = $2", team_id, org_id))
    sets = ", ".join(f"{c} = ${i + 3}" for i, c in enumerate(cols))
    updated = await conn.fetchval(
        f"UPDATE teams SET {sets} WHERE id = $1 AND org_id = $2 RETURNING id",
        team_id,
        org_id,
        *(fields[c] for c in cols),
    )
    return updated is not None


async def is_member(conn: Conn, team_id: str, user_id: str) -> bool:
    """Whether the user is a member (of any role) of the team."""
    return bool(
        await conn.fetchval(
            "SELECT 1 FROM team_members WHERE team_id = $1 AND user_id = $2", team_id, user_id
        )
    )


async def set_primary_team(conn: Conn, user_id: str, team_id: str | None) -> None:
    """Set (or clear, with None) the user's primary team."""
    await conn.execute("UPDATE users SET primary_team_id = $2 WHERE id = $1", user_id, team_id)
