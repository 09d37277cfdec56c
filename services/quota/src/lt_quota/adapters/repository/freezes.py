"""SQL of freezes of a session, key or user: recording, live ones and lifting."""

from __future__ import annotations

from datetime import datetime
from typing import TypedDict, Unpack

import asyncpg

from lt_quota.adapters.repository.records import Conn
from lt_quota.domain.records import FreezeRecord

__all__ = ["FreezeOrigin", "insert_freeze", "lift_freezes", "live_freezes"]


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


class FreezeOrigin(TypedDict, total=False):
    """Who froze (`source`: admin, or a detector) and whose target it is (its org and user, if known)."""

    source: str
    org_id: str | None
    user_id: str | None


async def insert_freeze(
    conn: Conn,
    freeze_id: str,
    target_type: str,
    target_id: str,
    reason: str,
    expires_at: datetime | None,
    **origin: Unpack[FreezeOrigin],
) -> None:
    """Record a freeze (its `source` is admin unless given)."""
    await conn.execute(
        """INSERT INTO freezes (id, target_type, target_id, reason, expires_at, source, org_id, user_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
        freeze_id,
        target_type,
        target_id,
        reason,
        expires_at,
        origin.get("source", "admin"),
        origin.get("org_id"),
        origin.get("user_id"),
    )


async def live_freezes(
    conn: Conn,
    now: datetime,
    *,
    org_id: str | None = None,
    target: tuple[str, str] | None = None,
    exact_org: bool = False,
    orgless: bool = False,
) -> list[FreezeRecord]:
    """Freezes neither lifted nor expired at `now`, optionally of one target. `org_id`: only that org's (plus
    org-less ones with `orgless`, for platform admins); `exact_org`: only freezes whose org is exactly `org_id`
    (None: org-less ones), which is how a session (an id the client chose) is told apart between orgs."""
    rows = await conn.fetch(
        f"""SELECT {_FREEZE_COLUMNS} FROM freezes
             WHERE {_LIVE}
               AND CASE WHEN $6 THEN org_id IS NOT DISTINCT FROM $2::text
                        ELSE ($2::text IS NULL OR org_id = $2 OR ($5 AND org_id IS NULL)) END
               AND ($3::text IS NULL OR (target_type = $3 AND target_id = $4))
             ORDER BY created_at""",
        now,
        org_id,
        target[0] if target else None,
        target[1] if target else None,
        orgless,
        exact_org,
    )
    return [_freeze(r) for r in rows]


async def lift_freezes(
    conn: Conn, target_type: str, target_id: str, now: datetime, org_id: str, *, orgless: bool = False
) -> list[FreezeRecord]:
    """Lift every live freeze of a target in `org_id` (and of no org with `orgless`, for platform admins);
    returns the ones lifted."""
    rows = await conn.fetch(
        f"""UPDATE freezes SET lifted_at = $1
             WHERE {_LIVE} AND target_type = $2 AND target_id = $3 AND (org_id = $4 OR ($5 AND org_id IS NULL))
         RETURNING {_FREEZE_COLUMNS}""",
        now,
        target_type,
        target_id,
        org_id,
        orgless,
    )
    return [_freeze(r) for r in rows]
