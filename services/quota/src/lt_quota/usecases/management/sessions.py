"""Session budgets: an admin reads a session's usd budget (a session never seen shows the org's default),
sets it, or resets what the session spent."""

from __future__ import annotations

from typing import Any

from leaky_common.auth import Principal
from lt_quota.adapters import repository as repo
from lt_quota.domain import new_id
from lt_quota.domain.records import PoolRecord
from lt_quota.usecases.context import QuotaContext
from lt_quota.usecases.management.views import PoolViews, require_org

__all__ = ["Sessions"]


class Sessions:
    """Session budgets of the admin's org."""

    def __init__(self, ctx: QuotaContext, views: PoolViews) -> None:
        self.ctx = ctx
        self.views = views

    async def _view(self, pool: PoolRecord, session_id: str) -> dict[str, Any]:
        view = (await self.views.pool_views([pool], "UTC"))[0]
        return {
            "session_id": session_id,
            "pool_id": pool.id,
            "budget_usd_micros": view["limit"],
            "spent_usd_micros": view["used"],
            "reserved_usd_micros": view["reserved"],
            "remaining_usd_micros": view["remaining"],
        }

    async def get_session(self, admin: Principal, session_id: str) -> dict[str, Any]:
        """A session's budget; a session never seen shows the org's default budget, untouched."""
        async with self.ctx.db.acquire() as conn:
            org = await require_org(conn, admin.org_id)
            pool = await repo.session_pool(conn, org.id, session_id)
        if pool is None:
            budget = org.default_session_budget_usd_micros
            return {
                "session_id": session_id,
                "pool_id": None,
                "budget_usd_micros": budget,
                "spent_usd_micros": 0,
                "reserved_usd_micros": 0,
                "remaining_usd_micros": budget,
            }
        return await self._view(pool, session_id)

    async def list_sessions(self, admin: Principal) -> list[dict[str, Any]]:
        """Every session budget of the org."""
        async with self.ctx.db.acquire() as conn:
            pools = await repo.session_pools(conn, admin.org_id)
        prefix = f"{admin.org_id}/"
        return [await self._view(p, p.owner_id.removeprefix(prefix)) for p in pools]

    async def set_session_budget(self, admin: Principal, session_id: str, budget: int) -> dict[str, Any]:
        """Set a session's budget (creating it if the session was never seen)."""
        async with self.ctx.db.acquire() as conn:
            org = await require_org(conn, admin.org_id)
        pool = await self.ctx.session_pool(org, session_id)
        async with self.ctx.db.acquire() as conn, conn.transaction():
            await repo.lock_pools(conn, [pool.id])
            await repo.set_pool_limit(conn, pool.id, budget)
        self.ctx.forget_session(admin.org_id, session_id)
        await self.ctx.sync_limit(pool.id)
        return await self.get_session(admin, session_id)

    async def reset_session(self, admin: Principal, session_id: str) -> dict[str, Any]:
        """Clear what a session spent (a negative 'reset' ledger row) and revert its budget to the default."""
        async with self.ctx.db.acquire() as conn:
            org = await require_org(conn, admin.org_id)
        pool = await self.ctx.session_pool(org, session_id)
        async with self.ctx.db.acquire() as conn, conn.transaction():
            await repo.lock_pools(conn, [pool.id])
            spent = await repo.ledger_sum(conn, pool.id, "")
            if spent:
                await repo.insert_ledger(conn, pool.id, -spent, "reset", f"reset:{new_id()}", None)
            await repo.set_pool_limit(conn, pool.id, org.default_session_budget_usd_micros)
            await self.ctx.state.resync_used(self.ctx.state.pool_key(pool.org_id, pool.id), 0)
        self.ctx.forget_session(admin.org_id, session_id)
        await self.ctx.sync_limit(pool.id)
        return await self.get_session(admin, session_id)
