"""Approvals: a team member asks their managers for more tokens; a manager of the requester's team (or an
admin), never the requester, approves (raising the requester's personal pool) or rejects. Both steps are
announced through the outbox (`ApprovalRequested`, `ApprovalDecided`)."""

from __future__ import annotations

from typing import Any

import asyncpg

from leaky_common.auth import Principal
from leaky_common.errors import Conflict, Forbidden, InvalidRequest, NotFound
from leaky_common.events import ApprovalDecided, ApprovalRequested, Topics
from leaky_common.outbox import write_outbox
from lt_quota.adapters import repository as repo
from lt_quota.domain import new_id
from lt_quota.domain.rights import approved_amount
from lt_quota.usecases.context import QuotaContext
from lt_quota.usecases.management.views import iso

__all__ = ["Approvals", "approval_view"]


def approval_view(row: asyncpg.Record) -> dict[str, Any]:
    """An approval request as the API shows it."""
    return {
        "id": row["id"],
        "team_id": row["team_id"],
        "requester_user_id": row["requester_user_id"],
        "pool_id": row["pool_id"],
        "requested_credits": row["amount"],
        "unit": row["unit"],
        "reason": row["reason"],
        "priority": row["priority"],
        "status": row["status"],
        "approved_credits": row["approved_amount"],
        "decided_by": row["decided_by"],
        "decision_reason": row["decision_reason"],
        "decided_at": iso(row["decided_at"]),
        "created_at": iso(row["created_at"]),
    }


async def _pending_for(conn: asyncpg.Connection, principal: Principal, approval_id: str) -> asyncpg.Record:
    """The pending request `principal` may decide (locked); 404/403/409 otherwise."""
    row = await repo.get_approval(conn, approval_id, principal.org_id, for_update=True)
    if row is None:
        raise NotFound(f"approval {approval_id} not found", code="approval_not_found")
    if row["requester_user_id"] == principal.user_id:
        raise Forbidden("you cannot decide your own request", code="self_approval")
    if not principal.is_admin and not await repo.is_manager(conn, row["team_id"], principal.user_id):
        raise Forbidden("only a manager of the requester's team can decide", code="not_team_manager")
    if row["status"] != "pending":
        raise Conflict(f"this request is already {row['status']}", code="approval_decided")
    return row


class Approvals:
    """Requests for more tokens and their decisions."""

    def __init__(self, ctx: QuotaContext) -> None:
        self.ctx = ctx

    async def request_approval(
        self, principal: Principal, amount: int, reason: str, priority: str
    ) -> dict[str, Any]:
        """Ask the managers of the caller's team for `amount` more tokens on the personal pool."""
        async with self.ctx.db.acquire() as conn, conn.transaction():
            user = await repo.get_user(conn, principal.user_id, principal.org_id)
            if user is None:
                raise NotFound("user not found", code="user_not_found")
            if user.team_id is None:
                raise InvalidRequest(
                    "you are in no team, so no manager can approve a request", code="no_team"
                )
            pool = await repo.personal_pool(conn, user.id)
            if pool is None:
                raise NotFound("you have no personal token pool", code="pool_not_found")
            row = await repo.insert_approval(conn, new_id(), user, pool.id, amount, reason, priority)
            event = ApprovalRequested(
                producer="quota",
                approval_id=row["id"],
                requester_user_id=user.id,
                org_id=user.org_id,
                team_id=user.team_id,
                pool_id=pool.id,
                amount=amount,
                reason=reason,
            )
            await write_outbox(conn, Topics.QUOTA_EVENTS, event, key=row["id"])
        return approval_view(row)

    async def my_approvals(self, principal: Principal) -> list[dict[str, Any]]:
        """The caller's own requests."""
        async with self.ctx.db.acquire() as conn:
            return [approval_view(r) for r in await repo.my_approvals(conn, principal.user_id)]

    async def pending_approvals(self, principal: Principal) -> list[dict[str, Any]]:
        """Pending requests of the teams the caller manages (an admin: the whole org), never their own."""
        async with self.ctx.db.acquire() as conn:
            rows = await repo.pending_approvals(
                conn, principal.org_id, None if principal.is_admin else principal.user_id
            )
        return [approval_view(r) for r in rows if r["requester_user_id"] != principal.user_id]

    async def decide_approval(
        self, principal: Principal, approval_id: str, *, approve: bool, amount: int | None, reason: str | None
    ) -> dict[str, Any]:
        """Approve (raising the requester's personal pool by `amount`, default what was asked; never more than
        was asked, nor for a manager more than the org's `manager_approval_limit`) or reject; audited."""
        changed_pool: str | None = None
        async with self.ctx.db.acquire() as conn, conn.transaction():
            row = await _pending_for(conn, principal, approval_id)
            granted = None
            if approve:
                org = await repo.org_settings(conn, principal.org_id)
                limit = org.manager_approval_limit if org is not None else None
                granted = approved_amount(row["amount"], amount, limit, admin=principal.is_admin)
            if granted is not None:
                pool = await repo.pool_by_id(conn, row["pool_id"], for_update=True)
                assert pool is not None
                await repo.set_pool_limit(conn, pool.id, pool.limit + granted)
                changed_pool = pool.id
            decided = await repo.decide_approval(
                conn, approval_id, "approved" if approve else "rejected", granted, principal.user_id, reason
            )
            event = ApprovalDecided(
                producer="quota",
                approval_id=approval_id,
                requester_user_id=row["requester_user_id"],
                approver_user_id=principal.user_id,
                org_id=row["org_id"],
                team_id=row["team_id"],
                pool_id=row["pool_id"],
                decision="approved" if approve else "rejected",
                amount=granted or 0,
                reason=reason or "",
            )
            await write_outbox(conn, Topics.QUOTA_EVENTS, event, key=approval_id)
            detail = {"decision": event.decision, "requested": row["amount"], "granted": granted or 0}
            await repo.audit(conn, row["org_id"], principal.user_id, "approval", approval_id, detail)
        if changed_pool is not None:
            await self.ctx.sync_limit(changed_pool)
        return approval_view(decided)
