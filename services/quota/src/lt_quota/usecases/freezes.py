"""Freezes: a detector's `RequestFreeze` command, an admin's freeze and unfreeze, and restoring every live
freeze into Redis. Postgres holds each freeze; Redis holds the longest live one per target for admission."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg

from leaky_common.auth import Principal
from leaky_common.errors import NotFound
from leaky_common.events import FreezeChanged, RequestFreeze, Topics
from leaky_common.inbox import claim
from leaky_common.outbox import write_outbox
from lt_quota.adapters import repository as repo
from lt_quota.domain import longest_freeze, new_id, session_target, ttl_ms
from lt_quota.domain.records import FreezeRecord
from lt_quota.usecases.context import QuotaContext

__all__ = ["Freezes", "freeze_view"]

logger = logging.getLogger(__name__)


def freeze_view(f: FreezeRecord) -> dict[str, Any]:
    """A freeze as the admin API shows it."""
    return {
        "id": f.id,
        "target_type": f.target_type,
        "target_id": f.target_id,
        "reason": f.reason,
        "source": f.source,
        "user_id": f.user_id,
        "expires_at": f.expires_at.isoformat() if f.expires_at else None,
        "created_at": f.created_at.isoformat(),
    }


@dataclass(frozen=True)
class _Order:
    """A freeze to record: by an admin (of `org_id`) or a detector (`anomaly`, maybe naming no known key)."""

    target_type: str
    target_id: str
    reason: str
    duration_s: int | None  # None: until lifted
    source: str
    org_id: str | None
    causation_id: str | None = None


class Freezes:
    """Freeze and unfreeze sessions, keys and users."""

    def __init__(self, ctx: QuotaContext) -> None:
        self.ctx = ctx

    async def freeze(self, cmd: RequestFreeze) -> None:
        """Apply a `RequestFreeze` command once; a duration of 0 or less freezes until lifted. A session is
        an id the client chose, so a session freeze naming no org belongs to nobody and is dropped."""
        async with self.ctx.db.acquire() as conn, conn.transaction():
            if not await claim(conn, cmd.event_id):
                return
            if cmd.target_type == "session" and not cmd.org_id:
                logger.warning("session freeze without an org dropped", extra={"event_id": cmd.event_id})
                return
            order = _Order(
                cmd.target_type,
                cmd.target_id,
                cmd.reason,
                cmd.duration_s if cmd.duration_s > 0 else None,
                source="anomaly",
                org_id=cmd.org_id,
                causation_id=cmd.event_id,
            )
            await self._record(conn, order)
        await self._sync(cmd.target_type, cmd.target_id, cmd.org_id)

    async def admin_freeze(
        self, admin: Principal, target_type: str, target_id: str, reason: str, duration_s: int | None
    ) -> dict[str, Any]:
        """Freeze a session, key or user of the admin's org (`duration_s` None: until unfrozen)."""
        async with self.ctx.db.acquire() as conn, conn.transaction():
            order = _Order(target_type, target_id, reason, duration_s, source="admin", org_id=admin.org_id)
            record = await self._record(conn, order)
        await self._sync(target_type, target_id, admin.org_id)
        return freeze_view(record)

    async def list_freezes(self, admin: Principal) -> list[dict[str, Any]]:
        """Live freezes of the admin's org (platform admins also see freezes of no org)."""
        async with self.ctx.db.acquire() as conn:
            records = await repo.live_freezes(
                conn, self.ctx.now(), org_id=admin.org_id, orgless=admin.platform_admin
            )
        return [freeze_view(r) for r in records]

    async def unfreeze(self, admin: Principal, target_type: str, target_id: str) -> dict[str, Any]:
        """Lift every live freeze of a target (idempotent); announces the change if one was lifted."""
        now = self.ctx.now()
        async with self.ctx.db.acquire() as conn, conn.transaction():
            user_id, org_id = await self._owner(conn, target_type, target_id, admin.org_id)
            lifted = await repo.lift_freezes(
                conn, target_type, target_id, now, admin.org_id, orgless=admin.platform_admin
            )
            if lifted:
                event = FreezeChanged(
                    producer="quota",
                    target_type=target_type,
                    target_id=target_id,
                    org_id=org_id,
                    user_id=user_id,
                    frozen=False,
                    reason="unfrozen by an admin",
                    source="admin",
                )
                await write_outbox(conn, Topics.QUOTA_EVENTS, event, key=target_id)
        await self._sync(target_type, target_id, admin.org_id)
        return {"target_type": target_type, "target_id": target_id, "frozen": False, "lifted": len(lifted)}

    async def restore_freezes(self) -> int:
        """Write every live freeze from Postgres into Redis (start-up, or after Redis lost its state)."""
        async with self.ctx.db.acquire() as conn:
            records = await repo.live_freezes(conn, self.ctx.now())
        targets = {(r.target_type, r.target_id, r.org_id) for r in records}
        for target_type, target_id, org_id in targets:
            await self._sync(target_type, target_id, org_id)
        await self.ctx.state.mark_restored()
        return len(targets)

    @staticmethod
    async def _owner(
        conn: asyncpg.Connection, target_type: str, target_id: str, org_id: str | None
    ) -> tuple[str | None, str | None]:
        """(user id, org id) behind a key or user target; 404 if it is not in `org_id` (when given)."""
        owner: tuple[str, str] | None = None
        if target_type == "key":
            owner = await repo.key_owner(conn, target_id)
        elif target_type == "user":
            user = await repo.get_user(conn, target_id)
            owner = (user.id, user.org_id) if user else None
        else:
            return None, org_id
        if owner is None or (org_id is not None and owner[1] != org_id):
            raise NotFound(f"{target_type} {target_id} not found", code=f"{target_type}_not_found")
        return owner

    async def _record(self, conn: asyncpg.Connection, o: _Order) -> FreezeRecord:
        """Insert a freeze and its `FreezeChanged` announcement in the caller's transaction."""
        admin = o.source == "admin"
        try:
            user_id, owner_org = await self._owner(
                conn, o.target_type, o.target_id, o.org_id if admin else None
            )
        except NotFound:
            if admin:
                raise
            user_id, owner_org = None, o.org_id  # a detector may name a key we do not know: freeze it anyway
        if o.target_type == "session":
            owner_org = o.org_id  # a session is its org's (the detector's command names it)
        now = self.ctx.now()
        expires_at = None if o.duration_s is None else now + timedelta(seconds=o.duration_s)
        freeze_id = new_id()
        await repo.insert_freeze(
            conn,
            freeze_id,
            o.target_type,
            o.target_id,
            o.reason,
            expires_at,
            source=o.source,
            org_id=owner_org,
            user_id=user_id,
        )
        event = FreezeChanged(
            producer="quota",
            causation_id=o.causation_id,
            target_type=o.target_type,
            target_id=o.target_id,
            org_id=owner_org,
            user_id=user_id,
            frozen=True,
            reason=o.reason,
            expires_at=expires_at,
            source="admin" if admin else "anomaly",
        )
        await write_outbox(conn, Topics.QUOTA_EVENTS, event, key=o.target_id)
        return FreezeRecord(
            freeze_id, o.target_type, o.target_id, o.reason, expires_at, o.source, owner_org, user_id, now
        )

    async def _sync(self, target_type: str, target_id: str, org_id: str | None) -> None:
        """Make Redis hold the target's longest live freeze (or none). Keys and users have global ids; a
        session id is the client's, so a session's freezes are those of its org (`org_id`)."""
        session = target_type == "session"
        async with self.ctx.db.acquire() as conn:
            live = await repo.live_freezes(
                conn,
                self.ctx.now(),
                target=(target_type, target_id),
                org_id=org_id if session else None,
                exact_org=session,
            )
            # Redis keeps it under the org the target belongs to (the hash slot of that org's admissions).
            owner_org = org_id if session else await self._owner_org(conn, target_type, target_id, org_id)
        if session:
            target_id = session_target(org_id, target_id)
        if not live:
            await self.ctx.state.unfreeze(owner_org, target_type, target_id)
            return
        longest = longest_freeze(live)
        await self.ctx.state.freeze(
            owner_org, target_type, target_id, longest.reason, ttl_ms(longest.expires_at, self.ctx.clock())
        )

    @staticmethod
    async def _owner_org(
        conn: asyncpg.Connection, target_type: str, target_id: str, fallback: str | None
    ) -> str | None:
        """The org of a key's or user's owner; `fallback` for a key we do not know (a detector may name one)."""
        if target_type == "key":
            owner = await repo.key_owner(conn, target_id)
            return owner[1] if owner else fallback
        user = await repo.get_user(conn, target_id)
        return user.org_id if user else fallback
