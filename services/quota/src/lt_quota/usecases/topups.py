"""Top-ups: the purchase saga's `CreditTokens` (raise a pool's limit) and `DebitTokens` (its compensation),
applied once per (purchase, step) and answered through the outbox. Credit and debit both take the pool's row
lock, so a compensation undoes only a credit that was applied and a credit arriving after its purchase was
compensated is refused: tokens are never lost nor given away."""

from __future__ import annotations

from typing import Any

import asyncpg

from leaky_common.events import CreditTokens, DebitTokens, TokensCredited, TokensDebited, Topics
from leaky_common.inbox import claim
from leaky_common.outbox import write_outbox
from lt_quota.adapters import repository as repo
from lt_quota.domain import adjusted_limit, may_top_up, missing_pool_reason, new_id, refusal
from lt_quota.domain.records import PoolRecord
from lt_quota.usecases.context import QuotaContext

__all__ = ["TopUps"]

Command = CreditTokens | DebitTokens
Reply = TokensCredited | TokensDebited


def _kind(cmd: Command) -> str:
    return "credit" if isinstance(cmd, CreditTokens) else "debit"


def _reply(cmd: Command, **fields: Any) -> Reply:
    """The saga's reply to `cmd` (same correlation, caused by it)."""
    reply_cls = TokensCredited if isinstance(cmd, CreditTokens) else TokensDebited
    return reply_cls(
        producer="quota",
        correlation_id=cmd.correlation_id or cmd.saga_id,
        causation_id=cmd.event_id,
        saga_id=cmd.saga_id,
        step=cmd.step,
        purchase_id=cmd.purchase_id,
        **fields,
    )


class TopUps:
    """Credit and debit pools for purchases."""

    def __init__(self, ctx: QuotaContext) -> None:
        self.ctx = ctx

    async def credit(self, cmd: CreditTokens) -> None:
        """Raise a pool's limit for a purchase (once per purchase and step)."""
        await self.adjust_limit(cmd)

    async def debit(self, cmd: DebitTokens) -> None:
        """Take back a purchase's credit (its compensation; once per purchase and step)."""
        await self.adjust_limit(cmd)

    async def adjust_limit(self, cmd: Command) -> None:
        """Raise (credit) or lower (debit) a pool's limit once per (purchase, step); reply via the outbox."""
        changed_pool: str | None = None
        async with self.ctx.db.acquire() as conn, conn.transaction():
            await claim(conn, cmd.event_id)
            existing = await repo.find_adjustment(conn, cmd.purchase_id, cmd.step, _kind(cmd))
            if existing is not None:
                # The same reply again (same event id), so the saga can dedupe it.
                reply = _reply(
                    cmd,
                    event_id=existing["reply_event_id"],
                    success=existing["applied"],
                    pool_id=existing["pool_id"],
                    new_limit=existing["new_limit"] if existing["applied"] else None,
                    reason=existing["reason"],
                )
                changed_pool = existing["pool_id"] if existing["applied"] else None
            else:
                reply, changed_pool = await self._apply(conn, cmd)
            await write_outbox(conn, Topics.SAGA_REPLIES, reply, key=cmd.saga_id)
        if changed_pool is not None:
            await self.ctx.sync_limit(changed_pool)

    async def _apply(self, conn: asyncpg.Connection, cmd: Command) -> tuple[Reply, str | None]:
        """Apply a command seen for the first time; returns the reply and the pool whose limit changed."""
        kind = _kind(cmd)
        # Without a pool id, the buyer's own unscoped pool of the purchase's unit.
        pool = await (
            repo.pool_by_id(conn, cmd.pool_id, for_update=True)
            if cmd.pool_id
            else repo.personal_pool(conn, cmd.user_id, unit=cmd.unit, for_update=True)
        )
        if pool is None:
            user_exists = bool(cmd.pool_id) or await repo.get_user(conn, cmd.user_id) is not None
            missing = missing_pool_reason(cmd.pool_id, cmd.user_id, cmd.unit, user_exists=user_exists)
            return _reply(cmd, success=False, pool_id=None, reason=missing), None
        reason, tombstone = await self._refusal(conn, cmd, pool)
        if reason is not None:
            reply = _reply(cmd, success=False, pool_id=pool.id, reason=reason)
            if tombstone:  # a refusal that must stick for this purchase (unlike a malformed command)
                await self._record(conn, cmd, pool.id, pool.limit, reply, reason=reason)
            return reply, None
        new_limit = adjusted_limit(kind, pool.limit, cmd.amount)
        reply = _reply(cmd, success=True, pool_id=pool.id, new_limit=new_limit)
        await repo.set_pool_limit(conn, pool.id, new_limit)
        await self._record(conn, cmd, pool.id, new_limit, reply, reason=None)
        return reply, pool.id

    async def _refusal(
        self, conn: asyncpg.Connection, cmd: Command, pool: PoolRecord
    ) -> tuple[str | None, bool]:
        """Why `cmd` may not change `pool` (None: it may), and whether the refusal is recorded for good."""
        kind = _kind(cmd)
        reason = refusal(pool, kind, cmd.unit, cmd.amount)
        if reason is not None:
            return reason, False
        if kind == "credit":
            buyer = None if pool.owner_type == "user" else await repo.get_user(conn, cmd.user_id)
            if not may_top_up(pool, cmd.user_id, buyer):
                return f"user {cmd.user_id} may not top up pool {pool.id}", False
            if await repo.adjustment_for_purchase(conn, cmd.purchase_id, "debit"):
                return "purchase already compensated; credit refused", True
        elif not await repo.adjustment_for_purchase(conn, cmd.purchase_id, "credit", applied_only=True):
            return "no applied credit for this purchase; nothing taken back", True
        if adjusted_limit(kind, pool.limit, cmd.amount) < 0:
            return f"debit of {cmd.amount} exceeds the pool limit {pool.limit}", False
        return None, False

    @staticmethod
    async def _record(
        conn: asyncpg.Connection,
        cmd: Command,
        pool_id: str,
        new_limit: int,
        reply: Reply,
        *,
        reason: str | None,
    ) -> None:
        """Record the adjustment (applied, or refused for good when `reason` is given) with its reply's id."""
        await repo.insert_adjustment(
            conn,
            adjustment_id=new_id(),
            pool_id=pool_id,
            kind=_kind(cmd),
            amount=cmd.amount,
            purchase_id=cmd.purchase_id,
            step=cmd.step,
            saga_id=cmd.saga_id,
            new_limit=new_limit,
            reply_event_id=reply.event_id,
            applied=reason is None,
            reason=reason,
        )
