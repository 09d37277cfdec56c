"""Quota's replies (TokensCredited/TokensDebited) applied to their saga: inbox, state change, wake-up."""

from __future__ import annotations

import asyncpg

from leaky_common.events import TokensCredited, TokensDebited
from leaky_common.inbox import claim
from lt_saga.adapters import repository as repo
from lt_saga.adapters.repository import StaleState
from lt_saga.domain.purchase import Purchase
from lt_saga.domain.saga import Status, compensation_plan
from lt_saga.settings import SagaSettings
from lt_saga.usecases.runner import SagaRunner
from lt_saga.usecases.transitions import finish_compensation_step, log_step, start_compensation, transition

__all__ = ["Replies"]


class Replies:
    """Applies TokensCredited/TokensDebited from quota: inbox, state change and wake-up of the runner."""

    def __init__(self, pool: asyncpg.Pool, runner: SagaRunner, settings: SagaSettings) -> None:
        self._pool = pool
        self._runner = runner
        self._settings = settings

    async def apply(self, message: TokensCredited | TokensDebited) -> None:
        """Apply one reply; a duplicate (same event_id) is a no-op."""
        while True:
            try:
                async with self._pool.acquire() as conn, conn.transaction():
                    if not await claim(conn, message.event_id):
                        return
                    # Correlated by saga id (and, in _apply, by step and the saga's current position).
                    purchase = await repo.get_purchase(conn, message.saga_id)
                    if purchase is None or purchase.id != message.purchase_id:
                        return
                    await self._apply(conn, purchase, message)
                    # Delivered on commit to every instance; the one driving this purchase re-reads it.
                    await repo.notify_wakeup(conn, purchase.id)
                break
            except StaleState:
                continue  # the runner moved the saga meanwhile (a re-send): decide again on fresh state
        # Outside the transaction: the runner must read the committed state.
        self._runner.wake(purchase.id)

    async def _apply(
        self, conn: asyncpg.Connection, purchase: Purchase, reply: TokensCredited | TokensDebited
    ) -> None:
        expected = (
            isinstance(reply, TokensCredited)
            and reply.step == "credit_tokens"
            and (purchase.status == Status.CREDITING)
        )
        compensating = (
            isinstance(reply, TokensDebited)
            and reply.step == "debit_tokens"
            and purchase.status == Status.COMPENSATING
            and purchase.compensations[:1] == ("debit_tokens",)
            and purchase.deadline_at is not None
        )
        detail = f"reply {reply.event_id}" + (f": {reply.reason}" if reply.reason else "")
        if reply.new_limit is not None:
            detail += f"; new limit {reply.new_limit}"
        if expected:
            if reply.success:
                await log_step(conn, purchase.id, "credit_tokens", "succeeded", detail)
                await transition(
                    conn,
                    purchase,
                    self._settings,
                    status=Status.CREDITED,
                    deadline_at=None,
                    command_id=None,
                    resend_at=None,
                )
            else:
                await log_step(conn, purchase.id, "credit_tokens", "failed", detail)
                plan = compensation_plan("credit_tokens", uncertain=False)
                reason = f"quota refused the credit: {reply.reason or 'no reason given'}"
                await start_compensation(conn, purchase, self._settings, plan, reason)
        elif compensating:
            # success=false means there was nothing to take back (the credit never landed): done either way.
            await log_step(conn, purchase.id, "debit_tokens", "succeeded", detail)
            await finish_compensation_step(conn, purchase, self._settings)
        else:
            await log_step(
                conn, purchase.id, reply.step, "reply_ignored", f"{detail}; status {purchase.status}"
            )
