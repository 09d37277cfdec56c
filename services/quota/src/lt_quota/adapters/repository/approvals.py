"""SQL of approval requests: asking, listing for requester and managers, deciding."""

from __future__ import annotations

import asyncpg

from lt_quota.adapters.repository.records import Conn
from lt_quota.domain.records import UserRecord

__all__ = ["decide_approval", "get_approval", "insert_approval", "my_approvals", "pending_approvals"]


_APPROVAL_COLUMNS = """id, org_id, team_id, requester_user_id, pool_id, amount, unit, reason, priority, status,
    approved_amount, decided_by, decision_reason, decided_at, created_at"""


async def insert_approval(
    conn: Conn,
    approval_id: str,
    requester: UserRecord,
    pool_id: str,
    amount: int,
    reason: str,
    priority: str,
) -> asyncpg.Record:
    """Record a pending request of `requester` (in their org and team) for more on `pool_id`."""
    row: asyncpg.Record = await conn.fetchrow(
        f"""INSERT INTO approvals (id, org_id, team_id, requester_user_id, pool_id, amount, reason, priority)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {_APPROVAL_COLUMNS}""",
        approval_id,
        requester.org_id,
        requester.team_id,
        requester.id,
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
