"""The saga's steps: payment calls (authorize, capture, void or refund) and quota commands with their reply
deadlines, each persisting its outcome, log entry and any message in one transaction.

Payment calls carry idempotency keys (purchase id + step); quota deduplicates re-sent commands on
(purchase_id, step) and answers a repeat with the same reply.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import timedelta

import asyncpg

from leaky_common.events import CreditTokens, DebitTokens
from leaky_common.outbox import write_outbox
from lt_saga.adapters.payments import PaymentClient
from lt_saga.domain.payment import PaymentOutcome, PaymentResult
from lt_saga.domain.purchase import Purchase, unit_of
from lt_saga.domain.saga import Action, Status, compensation_plan
from lt_saga.settings import SagaSettings
from lt_saga.usecases.transitions import (
    finish_compensation_step,
    log_step,
    new_event_id,
    now,
    start_compensation,
    transition,
)

__all__ = ["SagaSteps"]


class SagaSteps:
    """Performs one action of one purchase's saga (see `lt_saga.domain.saga.next_action`)."""

    def __init__(self, pool: asyncpg.Pool, payments: PaymentClient, settings: SagaSettings) -> None:
        self._pool = pool
        self._payments = payments
        self._settings = settings

    async def perform(self, purchase: Purchase, action: Action, wakeup: asyncio.Event) -> None:
        """Run `action` for `purchase`; `wakeup` is set when a reply for it is committed."""
        if action.kind == "send":
            await self._send(purchase, action.step or "")
        elif action.kind == "await":
            await self._await_reply(purchase, action.step or "", wakeup)
        elif action.step == "authorize_payment":
            await self._authorize(purchase)
        elif action.step == "capture_payment":
            await self._capture(purchase)
        elif action.step == "void_payment":
            await self._void(purchase)
        else:  # pragma: no cover - the step table and this dispatch must agree
            raise RuntimeError(f"no handler for {action}")

    async def _with_retries(self, call: Callable[[], Awaitable[PaymentResult]]) -> PaymentResult:
        """Call the provider, again (same idempotency key) while its answer is unknown, up to the attempts."""
        result = await call()
        for _ in range(self._settings.payment_attempts - 1):
            if result.outcome != PaymentOutcome.UNCERTAIN:
                break
            await asyncio.sleep(self._settings.retry_backoff_s)
            result = await call()
        return result

    # -- forward steps -------------------------------------------------------------------------------

    async def _authorize(self, purchase: Purchase) -> None:
        async with self._pool.acquire() as conn:
            await log_step(conn, purchase.id, "authorize_payment", "started")
        result = await self._with_retries(lambda: self._call_authorize(purchase))
        async with self._pool.acquire() as conn, conn.transaction():
            if result.outcome == PaymentOutcome.OK:
                await log_step(conn, purchase.id, "authorize_payment", "succeeded", result.detail)
                await transition(
                    conn,
                    purchase,
                    self._settings,
                    status=Status.AUTHORIZED,
                    payment_intent_id=result.intent_id,
                )
            else:
                uncertain = result.outcome == PaymentOutcome.UNCERTAIN
                reason = (
                    f"payment {'timed out' if uncertain else 'declined'}: {result.code or result.message}"
                )
                await log_step(conn, purchase.id, "authorize_payment", "failed", result.detail)
                plan = compensation_plan("authorize_payment", uncertain=uncertain)
                await start_compensation(conn, purchase, self._settings, plan, reason)

    async def _call_authorize(self, purchase: Purchase) -> PaymentResult:
        # Also used by void_payment when the authorization's outcome is unknown: the same idempotency key
        # replays the original answer instead of creating a second authorization.
        return await self._payments.authorize(
            amount=purchase.payment_amount_minor,
            currency=purchase.currency,
            payment_method=purchase.payment_method,
            purchase_id=purchase.id,
            idempotency_key=f"{purchase.id}:authorize_payment",
        )

    def _command(self, purchase: Purchase, step: str, event_id: str) -> CreditTokens | DebitTokens:
        command_type = CreditTokens if step == "credit_tokens" else DebitTokens
        return command_type(
            event_id=event_id,
            saga_id=purchase.id,
            step=step,
            purchase_id=purchase.id,
            user_id=purchase.user_id,
            pool_id=purchase.pool_id,
            amount=purchase.amount,
            unit=unit_of(purchase),
            producer=self._settings.service_name,
            correlation_id=purchase.id,
        )

    async def _send(self, purchase: Purchase, step: str) -> None:
        """Send a command to quota through the outbox and start its reply deadline, in one transaction."""
        command = self._command(purchase, step, new_event_id())
        at = now()
        new_status = Status.CREDITING if step == "credit_tokens" else purchase.status
        async with self._pool.acquire() as conn, conn.transaction():
            await log_step(conn, purchase.id, step, "started", f"command {command.event_id}")
            await transition(
                conn,
                purchase,
                self._settings,
                status=new_status,
                deadline_at=at + timedelta(seconds=self._settings.step_deadline_s),
                command_id=command.event_id,
                resend_at=at + timedelta(seconds=self._settings.command_resend_s),
                resends=0,
            )
            await write_outbox(conn, self._settings.quota_commands_topic, command, key=command.partition_key)

    async def _await_reply(self, purchase: Purchase, step: str, wakeup: asyncio.Event) -> None:
        """Wait for the reply; re-send the same command now and then; at the deadline, give up or go on."""
        assert purchase.deadline_at is not None
        at = now()
        if purchase.deadline_at > at:
            due = min(purchase.deadline_at, purchase.resend_at or purchase.deadline_at)
            if due > at:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wakeup.wait(), (due - at).total_seconds())
                return  # re-read the state: a reply may have moved it on
            # No reply yet: the command or its reply may be lost. Quota answers a repeat with the same reply.
            # The gap doubles (resend_s, 2x, 4x..., at most the step deadline) so a backlogged quota is not
            # flooded with copies of commands it has queued already.
            gap = min(
                self._settings.command_resend_s * 2 ** (purchase.resends + 1),
                max(self._settings.step_deadline_s, self._settings.command_resend_s),
            )
            async with self._pool.acquire() as conn, conn.transaction():
                await log_step(conn, purchase.id, step, "resent", f"command {purchase.command_id}")
                await transition(
                    conn,
                    purchase,
                    self._settings,
                    resend_at=at + timedelta(seconds=gap),
                    resends=purchase.resends + 1,
                )
                command = self._command(purchase, step, purchase.command_id or new_event_id())
                await write_outbox(
                    conn, self._settings.quota_commands_topic, command, key=command.partition_key
                )
            return
        async with self._pool.acquire() as conn, conn.transaction():
            await log_step(conn, purchase.id, step, "timed_out", "no reply before the step deadline")
            if step == "credit_tokens":
                # The credit may have happened: undo it as well as the authorization.
                plan = compensation_plan("credit_tokens", uncertain=True)
                await start_compensation(conn, purchase, self._settings, plan, "quota did not reply in time")
            else:
                # Compensations must finish: keep re-sending (quota deduplicates on purchase and step).
                await transition(
                    conn,
                    purchase,
                    self._settings,
                    deadline_at=at + timedelta(seconds=self._settings.step_deadline_s),
                )

    async def _capture(self, purchase: Purchase) -> None:
        if purchase.status == Status.CREDITED:
            async with self._pool.acquire() as conn, conn.transaction():
                await log_step(conn, purchase.id, "capture_payment", "started")
                await transition(conn, purchase, self._settings, status=Status.CAPTURING)
            return
        intent_id = purchase.payment_intent_id
        assert intent_id is not None
        result = await self._with_retries(
            lambda: self._payments.capture(intent_id, f"{purchase.id}:capture_payment")
        )
        async with self._pool.acquire() as conn, conn.transaction():
            if result.outcome == PaymentOutcome.OK:
                await log_step(conn, purchase.id, "capture_payment", "succeeded", result.detail)
                await transition(conn, purchase, self._settings, status=Status.COMPLETED)
            else:
                await log_step(conn, purchase.id, "capture_payment", "failed", result.detail)
                plan = compensation_plan("capture_payment", uncertain=False)
                reason = f"payment capture failed: {result.code or result.message}"
                await start_compensation(conn, purchase, self._settings, plan, reason)

    # -- compensations -------------------------------------------------------------------------------

    async def _void(self, purchase: Purchase) -> None:
        """Release the authorization (cancel), or refund it if it was captured after all."""
        async with self._pool.acquire() as conn:
            await log_step(conn, purchase.id, "void_payment", "started")
        intent_id = purchase.payment_intent_id
        if intent_id is None:
            replay = await self._call_authorize(purchase)
            if replay.outcome == PaymentOutcome.REFUSED and replay.intent_id is None:
                await self._compensation_done(purchase, "void_payment", "no authorization was made")
                return
            if replay.intent_id is None:
                await self._retry_later(purchase, "void_payment", replay)
                return
            intent_id = replay.intent_id
        result = await self._payments.cancel(intent_id, f"{purchase.id}:void_payment")
        if result.outcome == PaymentOutcome.REFUSED and result.status == "succeeded":
            result = await self._payments.refund(intent_id, f"{purchase.id}:refund_payment")
        if result.outcome == PaymentOutcome.OK or result.status == "canceled":
            await self._compensation_done(purchase, "void_payment", result.detail)
        else:
            await self._retry_later(purchase, "void_payment", result)

    async def _retry_later(self, purchase: Purchase, step: str, result: PaymentResult) -> None:
        async with self._pool.acquire() as conn:
            await log_step(conn, purchase.id, step, "retrying", result.detail)
        await asyncio.sleep(self._settings.retry_backoff_s)

    async def _compensation_done(self, purchase: Purchase, step: str, detail: str) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await log_step(conn, purchase.id, step, "succeeded", detail)
            await finish_compensation_step(conn, purchase, self._settings)
