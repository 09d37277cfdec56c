"""Users: an admin creates and changes the users of their org; a user reads themselves, goes on vacation
(announced with `VacationChanged`) and sets their privacy default."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from leaky_common.auth import Principal
from leaky_common.errors import Conflict, Forbidden, InvalidRequest, NotFound
from leaky_common.events import Topics, VacationChanged
from leaky_common.outbox import write_outbox
from lt_quota.adapters import repository as repo
from lt_quota.domain import generate_api_key, hash_api_key, key_prefix, new_id
from lt_quota.domain.records import UserRecord
from lt_quota.domain.rights import VacationRule, check_status_changes, vacation_end
from lt_quota.usecases.context import QuotaContext
from lt_quota.usecases.management.views import require_user

__all__ = ["NewUser", "Users", "insert_user"]


@dataclass(frozen=True)
class NewUser:
    """A user to create, with a personal pool (`personal_quota` None: the service's default)."""

    email: str
    name: str
    role: str
    personal_quota: int | None
    unit: str = "tokens"
    period: str = "none"


async def insert_user(
    conn: asyncpg.Connection, org_id: str, new: NewUser, default_quota: int
) -> dict[str, Any]:
    """A user with a personal pool and a first key, in the caller's transaction (the key shown once)."""
    limit = default_quota if new.personal_quota is None else new.personal_quota
    user_id = new_id()
    api_key = generate_api_key()
    if not await repo.insert_user(conn, user_id, org_id, new.email, new.name, new.role):
        raise Conflict(f"a user with email {new.email} exists", code="email_taken", param="email")
    pool_id = await repo.ensure_pool(
        conn, new_id(), "user", user_id, org_id, new.unit, limit, period=new.period
    )
    await repo.insert_key(
        conn, new_id(), user_id, org_id, key_prefix(api_key), hash_api_key(api_key), "default"
    )
    return {
        "id": user_id,
        "email": new.email,
        "name": new.name,
        "org_id": org_id,
        "role": new.role,
        "api_key": api_key,
        "key_prefix": key_prefix(api_key),
        "pool_id": pool_id,
    }


async def _announce_vacation(conn: asyncpg.Connection, before: UserRecord, after: UserRecord) -> None:
    """`VacationChanged` when a change sent the user on vacation or brought them back."""
    was, now = before.status == "on_vacation", after.status == "on_vacation"
    if was != now:
        event = VacationChanged(
            producer="quota",
            user_id=after.id,
            org_id=after.org_id,
            team_id=after.team_id,
            on_vacation=now,
        )
        await write_outbox(conn, Topics.QUOTA_EVENTS, event, key=after.id)


class Users:
    """Users of an org and the caller's own settings."""

    def __init__(self, ctx: QuotaContext) -> None:
        self.ctx = ctx

    async def create_user(self, admin: Principal, new: NewUser, team_id: str | None) -> dict[str, Any]:
        """Create a user with a personal pool and a first API key (returned once)."""
        async with self.ctx.db.acquire() as conn, conn.transaction():
            if team_id is not None and not await repo.team_exists(conn, team_id, admin.org_id):
                raise NotFound(f"team {team_id} not found", code="team_not_found", param="team_id")
            user = await insert_user(conn, admin.org_id, new, self.ctx.settings.default_personal_quota)
            if team_id is not None:
                await repo.upsert_member(conn, team_id, user["id"], "member")
        await self.ctx.load_pools([user["pool_id"]])
        self.ctx.invalidate()
        return {**user, "team_id": team_id}

    async def update_user(self, admin: Principal, user_id: str, fields: dict[str, Any]) -> UserRecord:
        """Change a user's status, role, default priority, bypass right, privacy default or tier."""
        async with self.ctx.db.acquire() as conn, conn.transaction():
            before = await repo.get_user(conn, user_id, admin.org_id)
            if before is None or not await repo.update_user(conn, user_id, admin.org_id, fields):
                raise NotFound(f"user {user_id} not found", code="user_not_found")
            after = await repo.get_user(conn, user_id, admin.org_id)
            assert after is not None
            if before.status != after.status:
                detail = {"from": before.status, "to": after.status}
                await repo.audit(conn, admin.org_id, admin.user_id, "status.admin", user_id, detail)
            await _announce_vacation(conn, before, after)
        self.ctx.invalidate()
        return after

    async def set_my_status(
        self, principal: Principal, status: str, until: datetime | None = None
    ) -> UserRecord:
        """A user goes on vacation (ending `until`, at most `vacation_max_days` ahead) or comes back; at most
        `status_changes_per_day` changes in 24 hours, each in the audit log. A suspended user cannot lift their
        own suspension."""
        now = self.ctx.now()
        rule = VacationRule(self.ctx.settings.vacation_max_days, self.ctx.settings.status_changes_per_day)
        if status != "on_vacation" and until is not None:
            raise InvalidRequest("until goes only with on_vacation", code="invalid_until", param="until")
        end = vacation_end(rule, now, until) if status == "on_vacation" else None
        async with self.ctx.db.acquire() as conn, conn.transaction():
            before = await repo.get_user(conn, principal.user_id, principal.org_id)
            if before is None:
                raise NotFound("user not found", code="user_not_found")
            if before.status == "suspended":
                raise Forbidden("this user is suspended", code="user_suspended")
            changes = await repo.audit_count(conn, before.id, "status.self", now - timedelta(days=1))
            check_status_changes(rule, changes)
            await repo.set_own_status(conn, before.id, before.org_id, status, end)
            detail = {"from": before.status, "to": status, "until": end.isoformat() if end else None}
            await repo.audit(conn, before.org_id, before.id, "status.self", before.id, detail)
            after = await repo.get_user(conn, before.id, before.org_id)
            assert after is not None
            await _announce_vacation(conn, before, after)
        self.ctx.invalidate()
        return after

    async def set_my_privacy(self, principal: Principal, privacy: str) -> dict[str, Any]:
        """Set the caller's privacy default (standard or strict)."""
        async with self.ctx.db.acquire() as conn:
            await repo.update_user(conn, principal.user_id, principal.org_id, {"privacy_default": privacy})
        self.ctx.invalidate()
        return {"user_id": principal.user_id, "privacy_default": privacy}

    async def me(self, principal: Principal) -> UserRecord:
        """The caller's own user."""
        return await require_user(self.ctx, principal)

    async def list_users(self, admin: Principal) -> list[UserRecord]:
        """Users of the admin's org."""
        async with self.ctx.db.acquire() as conn:
            return await repo.list_users(conn, admin.org_id)

    async def user_principal(self, admin: Principal, user_id: str) -> Principal:
        """A principal for a user of the admin's org, so an admin can act on that user's keys and quota."""
        async with self.ctx.db.acquire() as conn:
            user = await repo.get_user(conn, user_id, admin.org_id)
        if user is None:
            raise NotFound(f"user {user_id} not found", code="user_not_found")
        return Principal(user_id=user.id, org_id=user.org_id, team_id=user.team_id, email=user.email)
