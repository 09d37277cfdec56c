"""SQL of sign-in: password hashes, sign-in sessions (refresh-token families) and refresh tokens."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from lt_quota.adapters.repository.records import CHARGED_TEAM, Conn

__all__ = [
    "RefreshRow",
    "SignInUser",
    "insert_refresh_token",
    "insert_sign_in_session",
    "lock_refresh_token",
    "password_hash_of",
    "revoke_sign_in_session",
    "revoke_user_sign_in_sessions",
    "set_password_hash",
    "sign_in_user",
    "sign_in_user_by_email",
    "use_refresh_token",
]


@dataclass(frozen=True, slots=True)
class SignInUser:
    """What a signed-in caller's principal is made of (loaded on every use of an access token)."""

    id: str
    org_id: str
    email: str
    role: str
    status: str
    team_id: str | None
    managed_team_ids: tuple[str, ...]
    platform: bool
    password_hash: str | None


@dataclass(frozen=True, slots=True)
class RefreshRow:
    """A refresh token with its session, locked for the exchange."""

    session_id: str
    user_id: str
    used: bool
    session_revoked: bool
    session_expires_at: datetime


_SIGN_IN_COLUMNS = f"""u.id, u.org_id, u.email, u.role, u.status, u.password_hash, o.platform,
    {CHARGED_TEAM} AS team_id,
    ARRAY(SELECT tm.team_id FROM team_members tm
           WHERE tm.user_id = u.id AND tm.role = 'manager' ORDER BY tm.team_id) AS managed_team_ids"""


def _user(row: asyncpg.Record) -> SignInUser:
    return SignInUser(
        id=row["id"],
        org_id=row["org_id"],
        email=row["email"],
        role=row["role"],
        status=row["status"],
        team_id=row["team_id"],
        managed_team_ids=tuple(row["managed_team_ids"]),
        platform=bool(row["platform"]),
        password_hash=row["password_hash"],
    )


async def sign_in_user_by_email(conn: Conn, email: str) -> SignInUser | None:
    """The one user who signs in with `email` (any case), if any has set a password."""
    row = await conn.fetchrow(
        f"""SELECT {_SIGN_IN_COLUMNS} FROM users u JOIN orgs o ON o.id = u.org_id
             WHERE lower(u.email) = lower($1) AND u.password_hash IS NOT NULL""",
        email,
    )
    return None if row is None else _user(row)


async def sign_in_user(conn: Conn, user_id: str, session_id: str, now: datetime) -> SignInUser | None:
    """The user of a live sign-in session (None once it is revoked or has ended)."""
    row = await conn.fetchrow(
        f"""SELECT {_SIGN_IN_COLUMNS} FROM auth_sessions s JOIN users u ON u.id = s.user_id
                   JOIN orgs o ON o.id = u.org_id
             WHERE s.id = $1 AND s.user_id = $2 AND s.revoked_at IS NULL AND s.expires_at > $3""",
        session_id,
        user_id,
        now,
    )
    return None if row is None else _user(row)


async def password_hash_of(conn: Conn, user_id: str) -> str | None:
    value = await conn.fetchval("SELECT password_hash FROM users WHERE id = $1 FOR UPDATE", user_id)
    return None if value is None else str(value)


async def set_password_hash(conn: Conn, user_id: str, password_hash: str, now: datetime) -> None:
    """Raises asyncpg.UniqueViolationError if another user already signs in with this email."""
    await conn.execute(
        "UPDATE users SET password_hash = $2, password_changed_at = $3 WHERE id = $1",
        user_id,
        password_hash,
        now,
    )


async def insert_sign_in_session(
    conn: Conn, session_id: str, user_id: str, now: datetime, expires_at: datetime
) -> None:
    await conn.execute(
        "INSERT INTO auth_sessions (id, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
        session_id,
        user_id,
        now,
        expires_at,
    )


async def insert_refresh_token(conn: Conn, token_hash: str, session_id: str, now: datetime) -> None:
    await conn.execute(
        "INSERT INTO refresh_tokens (hash, session_id, created_at) VALUES ($1, $2, $3)",
        token_hash,
        session_id,
        now,
    )


async def lock_refresh_token(conn: Conn, token_hash: str) -> RefreshRow | None:
    """The refresh token and its session, locked (FOR UPDATE) until the caller's transaction ends."""
    row = await conn.fetchrow(
        """SELECT s.id AS session_id, s.user_id, r.used_at IS NOT NULL AS used,
                  s.revoked_at IS NOT NULL AS session_revoked, s.expires_at
             FROM refresh_tokens r JOIN auth_sessions s ON s.id = r.session_id
            WHERE r.hash = $1
              FOR UPDATE OF r, s""",
        token_hash,
    )
    if row is None:
        return None
    return RefreshRow(
        row["session_id"], row["user_id"], row["used"], row["session_revoked"], row["expires_at"]
    )


async def use_refresh_token(conn: Conn, token_hash: str, now: datetime) -> None:
    await conn.execute("UPDATE refresh_tokens SET used_at = $2 WHERE hash = $1", token_hash, now)


async def revoke_sign_in_session(conn: Conn, session_id: str, reason: str, now: datetime) -> None:
    await conn.execute(
        """UPDATE auth_sessions SET revoked_at = $3, revoked_reason = $2
            WHERE id = $1 AND revoked_at IS NULL""",
        session_id,
        reason,
        now,
    )


async def revoke_user_sign_in_sessions(conn: Conn, user_id: str, reason: str, now: datetime) -> int:
    """End every live sign-in session of a user (a password change signs them out everywhere)."""
    status = await conn.execute(
        """UPDATE auth_sessions SET revoked_at = $3, revoked_reason = $2
            WHERE user_id = $1 AND revoked_at IS NULL""",
        user_id,
        reason,
        now,
    )
    return int(status.split()[-1])
