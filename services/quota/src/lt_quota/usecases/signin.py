"""Sign-in with email and password: set a password, log in, refresh, log out, and authenticate access tokens.

A login opens a sign-in session: the family of its refresh tokens. Each refresh token is exchanged once for a
new pair; presenting a used one again means it was copied, so the whole session is revoked (RFC 9700,
section 4.14.2). Access tokens name their session, which quota checks on every use, so logging out (or
changing the password, which ends every session of the user) takes effect at once, not at expiry.

Every failed login answers the same 401 body whether the email is unknown or the password wrong, after the
same argon2 work. Attempts are counted per account and per client address in Redis; past the limit, 429 with
Retry-After. Neither passwords nor tokens are ever logged.
"""

from __future__ import annotations

import asyncio
import logging
import math
from dataclasses import dataclass
from datetime import timedelta

import asyncpg

from leaky_common.auth import Principal
from leaky_common.errors import (
    Conflict,
    InvalidRequest,
    RateLimited,
    ServiceUnavailable,
    Unauthorized,
)
from lt_quota.adapters.repository import audit, caller_freezes
from lt_quota.adapters.repository import signin as repo
from lt_quota.domain import new_id
from lt_quota.domain.signin import AccessTokens, Passwords, hash_refresh_token, new_refresh_token
from lt_quota.usecases.context import QuotaContext

__all__ = ["SignIn", "TokenPair"]

logger = logging.getLogger(__name__)

_BAD_LOGIN = "invalid email or password"
_BAD_REFRESH = "invalid refresh token"


@dataclass(frozen=True, slots=True)
class TokenPair:
    """What a login or a refresh answers."""

    access_token: str
    expires_in: int
    refresh_token: str
    token_type: str = "bearer"


def principal_of_user(user: repo.SignInUser, block: str | None) -> Principal:
    """The principal of a signed-in user: no key (`key_id` None), so no key restrictions."""
    return Principal(
        user_id=user.id,
        org_id=user.org_id,
        team_id=user.team_id,
        role="admin" if user.role == "admin" else "user",
        email=user.email,
        managed_team_ids=user.managed_team_ids,
        platform_admin=user.role == "admin" and user.platform,
        management_block=block,
    )


class SignIn:
    """Passwords, sign-in sessions and access tokens over Postgres (truth) and Redis (attempt counters)."""

    def __init__(self, ctx: QuotaContext) -> None:
        s = ctx.settings
        self.ctx = ctx
        self.tokens = AccessTokens(
            s.auth_signing_key.get_secret_value() if s.auth_signing_key else None,
            s.auth_signing_kid,
            s.auth_public_keys,
            issuer=s.auth_issuer,
            ttl_s=s.access_token_ttl_s,
        )
        self.passwords = Passwords()
        self._hashing = asyncio.Semaphore(s.password_hash_concurrency)

    async def _hash(self, password: str) -> str:
        async with self._hashing:
            return await asyncio.to_thread(self.passwords.hash, password)

    async def _check(self, stored: str | None, password: str) -> bool:
        async with self._hashing:
            return await asyncio.to_thread(self.passwords.check, stored, password)

    def _now_s(self) -> int:
        return self.ctx.clock() // 1000

    async def set_password(self, principal: Principal, password: str, current: str | None) -> None:
        """Set or change the caller's password; every sign-in session of theirs ends. Changing a password
        over an access token (no key) needs the current one, and counts as a login attempt of the account; an
        API key is proof enough by itself."""
        if len(password) < self.ctx.settings.password_min_length:
            raise InvalidRequest(
                f"the password needs at least {self.ctx.settings.password_min_length} characters",
                code="password_too_short",
                param="password",
            )
        if principal.key_id is None and principal.email:
            # Guessing the current password counts against the account's login attempts.
            limit = self.ctx.settings.login_attempts_per_account
            await self._count("acct", principal.email.strip().lower(), limit)
        new_hash = await self._hash(password)
        now = self.ctx.now()
        async with self.ctx.db.acquire() as conn, conn.transaction():
            stored = await repo.password_hash_of(conn, principal.user_id)
            needs_current = stored is not None and principal.key_id is None
            if needs_current and not await self._current_matches(stored, current):
                raise Unauthorized(
                    "the current password is wrong or missing", code="invalid_current_password"
                )
            try:
                await repo.set_password_hash(conn, principal.user_id, new_hash, now)
            except asyncpg.UniqueViolationError as exc:
                raise Conflict(
                    "another account already signs in with this email", code="sign_in_email_taken"
                ) from exc
            ended = await repo.revoke_user_sign_in_sessions(conn, principal.user_id, "password_changed", now)
            detail = {
                "changed": stored is not None,
                "sessions_ended": ended,
                "with_key": principal.key_id is not None,
            }
            await audit(conn, principal.org_id, principal.user_id, "password.self", principal.user_id, detail)

    async def _current_matches(self, stored: str | None, current: str | None) -> bool:
        return current is not None and await self._check(stored, current)

    async def _count(self, kind: str, subject: str, limit: int) -> None:
        window_ms = self.ctx.settings.login_window_s * 1000
        key = self.ctx.state.login_key(kind, subject)
        attempts, ttl_ms = await self.ctx.state.count_attempt(key, window_ms)
        if attempts > limit:
            retry = max(1, math.ceil(ttl_ms / 1000))
            raise RateLimited(
                "too many login attempts; try again later",
                code="too_many_login_attempts",
                headers={"retry-after": str(retry)},
            )

    async def login(self, email: str, password: str, address: str) -> TokenPair:
        """A new sign-in session for the user who signs in with `email`; 401 (one body for every failure),
        429 past the attempt limits, 503 when no signing key is configured."""
        if not self.tokens.enabled:
            raise ServiceUnavailable("sign-in is not configured", code="sign_in_unavailable")
        account = email.strip().lower()
        s = self.ctx.settings
        await self._count("addr", address, s.login_attempts_per_address)
        await self._count("acct", account, s.login_attempts_per_account)
        async with self.ctx.db.acquire() as conn:
            user = await repo.sign_in_user_by_email(conn, account)
        stored = user.password_hash if user else None
        if not await self._check(stored, password) or user is None:
            raise Unauthorized(_BAD_LOGIN, code="invalid_credentials")
        await self.ctx.state.clear_attempts(self.ctx.state.login_key("acct", account))
        now = self.ctx.now()
        session_id = new_id()
        refresh = new_refresh_token()
        async with self.ctx.db.acquire() as conn, conn.transaction():
            if stored is not None and self.passwords.needs_rehash(stored):
                rehashed = await self._hash(password)
                await repo.set_password_hash(conn, user.id, rehashed, now)
            expires = now + timedelta(seconds=s.refresh_session_ttl_s)
            await repo.insert_sign_in_session(conn, session_id, user.id, now, expires)
            await repo.insert_refresh_token(conn, hash_refresh_token(refresh), session_id, now)
        logger.info("sign-in session %s opened for user %s", session_id, user.id)
        return self._pair(user.id, session_id, refresh)

    def _pair(self, user_id: str, session_id: str, refresh: str) -> TokenPair:
        access = self.tokens.sign(user_id, session_id, self._now_s())
        return TokenPair(access, self.tokens.ttl_s, refresh)

    async def refresh(self, refresh_token: str) -> TokenPair:
        """Exchange a refresh token for a new pair; a used one revokes its whole session (401 either way)."""
        if not self.tokens.enabled:
            raise ServiceUnavailable("sign-in is not configured", code="sign_in_unavailable")
        token_hash = hash_refresh_token(refresh_token)
        now = self.ctx.now()
        fresh = new_refresh_token()
        reused = False
        async with self.ctx.db.acquire() as conn, conn.transaction():
            row = await repo.lock_refresh_token(conn, token_hash)
            if row is None or row.session_revoked or row.session_expires_at <= now:
                raise Unauthorized(_BAD_REFRESH, code="invalid_refresh_token")
            if row.used:
                await repo.revoke_sign_in_session(conn, row.session_id, "refresh_token_reused", now)
                reused = True
            else:
                await repo.use_refresh_token(conn, token_hash, now)
                await repo.insert_refresh_token(conn, hash_refresh_token(fresh), row.session_id, now)
        if reused:
            logger.warning(
                "a used refresh token was presented again: sign-in session %s revoked", row.session_id
            )
            raise Unauthorized(_BAD_REFRESH, code="refresh_token_reused")
        return self._pair(row.user_id, row.session_id, fresh)

    async def logout(self, refresh_token: str) -> None:
        """End the sign-in session of a refresh token (used or not); unknown tokens change nothing."""
        now = self.ctx.now()
        async with self.ctx.db.acquire() as conn, conn.transaction():
            row = await repo.lock_refresh_token(conn, hash_refresh_token(refresh_token))
            if row is not None:
                await repo.revoke_sign_in_session(conn, row.session_id, "logout", now)

    async def authenticate(self, access_token: str) -> Principal:
        """The principal of a valid access token of a live sign-in session; 401 otherwise."""
        claims = self.tokens.verify(access_token, self._now_s())
        now = self.ctx.now()
        async with self.ctx.db.acquire() as conn:
            user = await repo.sign_in_user(conn, claims.user_id, claims.session_id, now)
            if user is None:
                raise Unauthorized("this sign-in session has ended", code="invalid_access_token")
            frozen = await caller_freezes(conn, now, "", user.id)
        block = None
        if user.status == "suspended":
            block = "user_suspended"
        elif "user" in frozen:
            block = "user_frozen"
        return principal_of_user(user, block)
