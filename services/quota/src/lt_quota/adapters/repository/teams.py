"""SQL of teams and memberships: creation, members, managers and vacations."""

from __future__ import annotations

import asyncpg

from lt_quota.adapters.repository.records import Conn

__all__ = [
    "insert_team",
    "is_manager",
    "list_teams",
    "team_exists",
    "team_members",
    "teammate_on_vacation",
    "upsert_member",
    "user_teams",
]


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


async def teammate_on_vacation(conn: Conn, team_id: str, user_id: str) -> bool:
    """True if another member of the team is on vacation (a self-set vacation past its end is over)."""
    return bool(
        await conn.fetchval(
            """SELECT EXISTS (SELECT 1 FROM team_members tm JOIN users u ON u.id = tm.user_id
                               WHERE tm.team_id = $1 AND u.id <> $2 AND u.status = 'on_vacation'
                                 AND (u.vacation_until IS NULL OR u.vacation_until > now()))""",
            team_id,
            user_id,
        )
    )
