"""Threshold announcements: `QuotaThresholdReached` once per user/team/org pool, period and percentage
(80/90/100) that a charge reached, or that the usage already reaches when an admin lowers the limit, written
to the outbox in that change's transaction."""

from __future__ import annotations

import asyncpg

from leaky_common.events import QuotaThresholdReached, Topics
from leaky_common.outbox import write_outbox
from lt_quota.adapters import repository as repo
from lt_quota.domain import ANNOUNCED_OWNERS, period_of, thresholds_crossed, thresholds_reached
from lt_quota.domain.records import PoolRecord
from lt_quota.usecases.context import QuotaContext

__all__ = ["Thresholds"]


class Thresholds:
    """Announce the usage thresholds a charge made a pool reach."""

    def __init__(self, ctx: QuotaContext) -> None:
        self.ctx = ctx

    async def announce(
        self, conn: asyncpg.Connection, pool: PoolRecord, period_key: str, used: int, amount: int
    ) -> None:
        """In the charge's transaction: announce each threshold `amount` (bringing the pool to `used` in
        `period_key`) reached, unless this pool announced it in this period already."""
        if pool.owner_type in ANNOUNCED_OWNERS:
            await self._announce(conn, pool, period_key, used, thresholds_reached(used, amount, pool.limit))

    async def announce_limit(self, conn: asyncpg.Connection, pool: PoolRecord) -> None:
        """In a limit change's transaction (`pool` as changed): announce each threshold the period's usage
        already reaches under the new limit, unless this pool announced it in this period already."""
        if pool.owner_type not in ANNOUNCED_OWNERS:
            return
        per = period_of(pool.period, self.ctx.clock(), await self.ctx.timezone(conn, pool.org_id))
        used = await repo.ledger_sum(conn, pool.id, per.key)
        await self._announce(conn, pool, per.key, used, thresholds_crossed(used, pool.limit))

    async def _announce(
        self, conn: asyncpg.Connection, pool: PoolRecord, period_key: str, used: int, percents: list[int]
    ) -> None:
        for percent in percents:
            if not await repo.claim_threshold(conn, pool.id, period_key, percent):
                continue
            per = period_of(pool.period, self.ctx.clock(), await self.ctx.timezone(conn, pool.org_id))
            event = QuotaThresholdReached(
                producer="quota",
                pool_id=pool.id,
                owner_type=pool.owner_type,
                owner_id=pool.owner_id,
                org_id=pool.org_id,
                percent=percent,
                limit=pool.limit,
                used=used,
                unit=pool.unit,
                period_start=per.start if per.key == period_key else None,
            )
            await write_outbox(conn, Topics.QUOTA_EVENTS, event, key=pool.id)
