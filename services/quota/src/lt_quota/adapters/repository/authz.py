"""SQL of authorization rules: a key's restrictions, live freezes of a caller, the audit log, self-set
vacations and counting an org's new sessions."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from lt_quota.adapters.repository.records import Conn
from lt_quota.domain.rights import KeyLimits

__all__ = [
    "audit",
    "audit_count",
    "caller_freezes",
    "key_limits",
    "lock_org_sessions",
    "new_sessions_since",
    "set_own_status",
]


async def key_limits(conn: Conn, key_id: str) -> KeyLimits:
    """A key's restrictions: allowed models and priorities, expiry, own caps and bucket sizes."""
    row = await conn.fetchrow(
        """SELECT allowed_models, allowed_priorities, expires_at, rate_limit_requests_per_period,
                  rate_limit_tokens_per_period FROM api_keys WHERE id = $1""",
        key_id,
    )
    if row is None:
        return KeyLimits()
    caps = await conn.fetch(
        """SELECT unit, "limit", period FROM pools WHERE owner_type = 'key' AND owner_id = $1""", key_id
    )
    return KeyLimits(
        allowed_models=None if row["allowed_models"] is None else tuple(row["allowed_models"]),
        allowed_priorities=None if row["allowed_priorities"] is None else tuple(row["allowed_priorities"]),
        expires_at=row["expires_at"],
        caps={c["unit"]: (int(c["limit"]), c["period"]) for c in caps},
        rate_limit_requests=row["rate_limit_requests_per_period"],
        rate_limit_tokens=row["rate_limit_tokens_per_period"],
    )


async def caller_freezes(conn: Conn, now: datetime, key_id: str, user_id: str) -> set[str]:
    """Which of `key` and `user` have a live freeze on this key or user."""
    rows = await conn.fetch(
        """SELECT DISTINCT target_type FROM freezes
            WHERE lifted_at IS NULL AND (expires_at IS NULL OR expires_at > $1)
              AND ((target_type = 'key' AND target_id = $2) OR (target_type = 'user' AND target_id = $3))""",
        now,
        key_id,
        user_id,
    )
    return {r["target_type"] for r in rows}


async def audit(
    conn: Conn, org_id: str, actor_user_id: str, action: str, target_id: str, detail: dict[str, Any]
) -> None:
    """Append one entry to the audit log (in the caller's transaction)."""
    await conn.execute(
        "INSERT INTO audit_log (org_id, actor_user_id, action, target_id, detail) VALUES ($1, $2, $3, $4, $5)",
        org_id,
        actor_user_id,
        action,
        target_id,
        json.dumps(detail),
    )


async def audit_count(conn: Conn, actor_user_id: str, action: str, since: datetime) -> int:
    """How many `action` entries `actor_user_id` made since `since`."""
    value = await conn.fetchval(
        "SELECT count(*) FROM audit_log WHERE actor_user_id = $1 AND action = $2 AND created_at > $3",
        actor_user_id,
        action,
        since,
    )
    return int(value or 0)


async def set_own_status(conn: Conn, user_id: str, org_id: str, status: str, until: datetime | None) -> None:
    """A user's own status change: a vacation with its end, or back to active (no end)."""
    await conn.execute(
        "UPDATE users SET status = $3, vacation_until = $4 WHERE id = $1 AND org_id = $2",
        user_id,
        org_id,
        status,
        until,
    )


async def lock_org_sessions(conn: Conn, org_id: str) -> None:
    """Serialise the creation of an org's sessions (transaction-scoped advisory lock)."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('lt_sessions:' || $1))", org_id)


async def new_sessions_since(conn: Conn, org_id: str, since: datetime) -> int:
    """Session budgets of the org created since `since`."""
    value = await conn.fetchval(
        "SELECT count(*) FROM pools WHERE org_id = $1 AND owner_type = 'session' AND created_at > $2",
        org_id,
        since,
    )
    return int(value or 0)
