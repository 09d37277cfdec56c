"""Live views of pools (limit, used, reserved, remaining in the current period) and of what a user may still
spend: the numbers every management answer shows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from leaky_common.auth import Principal
from leaky_common.errors import NotFound
from lt_quota.adapters import repository as repo
from lt_quota.adapters.redis_state import PoolState
from lt_quota.domain import period_of
from lt_quota.domain.records import OrgSettings, PoolRecord, UserRecord
from lt_quota.usecases.context import QuotaContext

__all__ = ["PoolViews", "iso", "require_org", "require_user"]


def iso(value: datetime | None) -> str | None:
    """ISO 8601, or None."""
    return value.isoformat() if value else None


async def require_org(conn: asyncpg.Connection, org_id: str) -> OrgSettings:
    """The org's settings; 404 if it does not exist."""
    org = await repo.org_settings(conn, org_id)
    if org is None:
        raise NotFound("organisation not found", code="org_not_found")
    return org


async def require_user(ctx: QuotaContext, principal: Principal) -> UserRecord:
    """The caller's own user; 404 if it is gone."""
    async with ctx.db.acquire() as conn:
        user = await repo.get_user(conn, principal.user_id, principal.org_id)
    if user is None:
        raise NotFound("user not found", code="user_not_found")
    return user


def _pool_view(pool: PoolRecord, state: PoolState, resets_at: datetime | None) -> dict[str, Any]:
    return {
        "id": pool.id,
        "owner_type": pool.owner_type,
        "owner_id": pool.owner_id,
        "unit": pool.unit,
        "period": pool.period,
        "provider": pool.provider or None,
        "model": pool.model or None,
        "limit": state.limit,
        "used": state.used,
        "reserved": state.reserved,
        "remaining": max(state.limit - state.used - state.reserved, 0),
        "resets_at": iso(resets_at),
    }


def _is_team_tokens(view: dict[str, Any]) -> bool:
    return bool(view["owner_type"] == "team" and view["unit"] == "tokens")


class PoolViews:
    """Pools and quotas as the API shows them, from the hot counters (loaded from the ledger if missing)."""

    def __init__(self, ctx: QuotaContext) -> None:
        self.ctx = ctx

    async def pool_views(self, pools: list[PoolRecord], timezone: str) -> list[dict[str, Any]]:
        """Pools with their live limit/used/reserved/remaining for the current period and `resets_at`."""
        state = self.ctx.state
        now = self.ctx.clock()
        periods = [period_of(p.period, now, timezone) for p in pools]
        keys = [state.pool_key(p.org_id, p.id, per.key) for p, per in zip(pools, periods, strict=True)]
        states = await state.counter_states(keys)
        for pool, per, key in zip(pools, periods, keys, strict=True):
            if states[key] is None:
                await self.ctx.load_counter(key, pool.id, per.key, False)
        if any(s is None for s in states.values()):
            states = await state.counter_states(keys)
        return [
            _pool_view(pool, states[key] or PoolState(pool.limit, 0, 0), per.end)
            for pool, per, key in zip(pools, periods, keys, strict=True)
        ]

    async def my_quota(self, principal: Principal) -> dict[str, Any]:
        """Every pool that applies to the caller (personal, team, org, the key's own caps), live, plus
        TokenPool's flat fields."""
        user = await require_user(self.ctx, principal)
        async with self.ctx.db.acquire() as conn:
            pools = await repo.governing_pools(
                conn, user.org_id, user.id, user.team_id, principal.key_id or ""
            )
            org = await require_org(conn, user.org_id)
            vacation = user.team_id is not None and await repo.teammate_on_vacation(
                conn, user.team_id, user.id
            )
        views = await self.pool_views(pools, org.timezone)
        personal = next(
            (v for v in views if v["owner_type"] == "user" and v["unit"] == "tokens" and not v["model"]), None
        )
        share = await self._vacation_share(views, org) if vacation and org.allow_vacation_sharing else 0
        return {
            "pools": views,
            "personal_quota": personal["limit"] if personal else 0,
            "used_tokens": personal["used"] if personal else 0,
            "reserved_tokens": personal["reserved"] if personal else 0,
            "available_quota": personal["remaining"] if personal else 0,
            "team_pool_available": sum(v["remaining"] for v in views if _is_team_tokens(v)),
            "vacation_share_available": share,
            "status": user.status,
        }

    async def _vacation_share(self, views: list[dict[str, Any]], org: OrgSettings) -> int:
        """What the caller may still borrow from their team's token pools while a teammate is away."""
        state = self.ctx.state
        share = 0
        for v in views:
            if not _is_team_tokens(v):
                continue
            per = period_of(v["period"], self.ctx.clock(), org.timezone)
            key = state.vacation_key(org.id, v["id"], per.key or "-")
            st = (await state.counter_states([key]))[key]
            if st is None and await self.ctx.load_counter(key, v["id"], per.key, True):
                st = (await state.counter_states([key]))[key]
            borrowed = (st.used + st.reserved) if st else 0
            allowance = v["limit"] * org.vacation_share_percent // 100 - borrowed
            share += max(0, min(allowance, v["remaining"]))
        return share
