"""Pools: an admin creates, reads, resizes and deletes the token and usd pools of their org (for a user,
team, key or the org itself). A limit change reaches the hot counter at once."""

from __future__ import annotations

from typing import Any

import asyncpg

from leaky_common.auth import Principal
from leaky_common.errors import Conflict, InvalidRequest, NotFound
from lt_quota.adapters import repository as repo
from lt_quota.domain import new_id
from lt_quota.domain.records import PoolRecord
from lt_quota.usecases.context import QuotaContext
from lt_quota.usecases.management.views import PoolViews, require_org
from lt_quota.usecases.thresholds import Thresholds

__all__ = ["Pools"]


async def _admin_pool(conn: asyncpg.Connection, admin: Principal, pool_id: str) -> PoolRecord:
    pool = await repo.pool_by_id(conn, pool_id)
    if pool is None or pool.org_id != admin.org_id:
        raise NotFound(f"pool {pool_id} not found", code="pool_not_found")
    return pool


class Pools:
    """The admin's pools."""

    def __init__(self, ctx: QuotaContext, views: PoolViews) -> None:
        self.ctx = ctx
        self.views = views
        self.thresholds = Thresholds(ctx)

    async def create_pool(self, admin: Principal, fields: dict[str, Any]) -> dict[str, Any]:
        """A pool for a user, team, key or the org (org pools are owned by the admin's org)."""
        owner_type = fields["owner_type"]
        owner_id = admin.org_id if owner_type == "org" else fields.get("owner_id")
        if not owner_id:
            raise InvalidRequest("owner_id is required", param="owner_id")
        pool = PoolRecord(
            id=new_id(),
            owner_type=owner_type,
            owner_id=owner_id,
            org_id=admin.org_id,
            unit=fields["unit"],
            limit=fields["limit"],
            period=fields["period"],
            provider=fields.get("provider") or "",
            model=fields.get("model") or "",
        )
        async with self.ctx.db.acquire() as conn, conn.transaction():
            if not await repo.owner_exists(conn, owner_type, owner_id, admin.org_id):
                raise NotFound(
                    f"{owner_type} {owner_id} not found", code=f"{owner_type}_not_found", param="owner_id"
                )
            if not await repo.insert_pool(conn, pool):
                raise Conflict("this owner already has a pool of that unit and scope", code="pool_exists")
            org = await require_org(conn, admin.org_id)
        self.ctx.invalidate()
        return (await self.views.pool_views([pool], org.timezone))[0]

    async def list_pools(self, admin: Principal, owner_type: str | None) -> list[dict[str, Any]]:
        """The org's pools (of one owner type if given), sessions' budgets aside."""
        async with self.ctx.db.acquire() as conn:
            pools = [
                p for p in await repo.list_pools(conn, admin.org_id, owner_type) if p.owner_type != "session"
            ]
            org = await require_org(conn, admin.org_id)
        return await self.views.pool_views(pools, org.timezone)

    async def get_pool(self, admin: Principal, pool_id: str) -> dict[str, Any]:
        """One pool of the admin's org, live."""
        async with self.ctx.db.acquire() as conn:
            pool = await _admin_pool(conn, admin, pool_id)
            org = await require_org(conn, admin.org_id)
        return (await self.views.pool_views([pool], org.timezone))[0]

    async def update_pool(
        self, admin: Principal, pool_id: str, limit: int | None, period: str | None
    ) -> dict[str, Any]:
        """Change a pool's limit or period; the hot copy follows at once. A limit lowered below the usage
        announces the thresholds it now reaches."""
        async with self.ctx.db.acquire() as conn, conn.transaction():
            await _admin_pool(conn, admin, pool_id)
            await repo.lock_pools(conn, [pool_id])
            await repo.update_pool(conn, pool_id, limit, period)
            changed = await repo.pool_by_id(conn, pool_id)
            if changed is not None:
                await self.thresholds.announce_limit(conn, changed)
        await self.ctx.sync_limit(pool_id)
        return await self.get_pool(admin, pool_id)

    async def delete_pool(self, admin: Principal, pool_id: str) -> dict[str, Any]:
        """Delete a pool that was never charged (the ledger is append-only: a charged pool stays)."""
        async with self.ctx.db.acquire() as conn, conn.transaction():
            await _admin_pool(conn, admin, pool_id)
            if not await repo.delete_pool(conn, pool_id):
                raise Conflict("this pool has ledger entries; set its limit instead", code="pool_in_use")
        self.ctx.invalidate()
        return {"id": pool_id, "deleted": True}
