"""The saga runner (drives each purchase through the step table) and the handler of quota's replies.

State is persisted after every step with optimistic locking, so the runner is re-entrant: after a crash
`resume_all` picks every unfinished purchase up from its persisted status. Payment calls carry idempotency
keys (purchase id + step) and quota deduplicates re-sent commands on (purchase_id, step).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta

import asyncpg
from aiokafka import ConsumerRecord
from prometheus_client import Counter

from leaky_common.events import (
    AnyMessage,
    CreditTokens,
    DebitTokens,
    PurchaseCompensated,
    PurchaseCompleted,
    PurchaseFailed,
    TokensCredited,
    TokensDebited,
)
from leaky_common.outbox import write_outbox
from lt_saga import repository as repo
from lt_saga.domain import (
    Action,
    Status,
    check_transition,
    compensation_plan,
    next_action,
    outcome_of,
)
from lt_saga.payments import PaymentClient, PaymentOutcome, PaymentResult
from lt_saga.repository import Purchase, StaleState
from lt_saga.settings import SagaSettings

__all__ = ["PURCHASES_TOTAL", "ReplyHandler", "SagaRunner"]

logger = logging.getLogger(__name__)

PURCHASES_TOTAL = Counter("lt_saga_purchases_total", "Purchases that reached a terminal status", ["status"])

_EVENTS = {
    Status.COMPLETED: PurchaseCompleted,
    Status.FAILED: PurchaseFailed,
    Status.COMPENSATED: PurchaseCompensated,
}


def _now() -> datetime:
    return datetime.now(UTC)


async def _transition(
    conn: asyncpg.Connection, purchase: Purchase, settings: SagaSettings, **changes: object
) -> Purchase:
    """Persist a change of saga state; on a terminal status also announce it through the outbox."""
    new_status = changes.get("status", purchase.status)
    assert isinstance(new_status, Status)
    check_transition(purchase.status, new_status)
    updated = await repo.update_purchase(conn, purchase, **changes)
    if new_status != purchase.status and new_status in _EVENTS:
        event = _EVENTS[new_status](
            purchase_id=updated.id,
            user_id=updated.user_id,
            org_id=updated.org_id,
            amount=updated.amount,
            unit="usd" if updated.unit == "usd" else "tokens",
            price_usd_micros=updated.price_usd_micros,
            reason=updated.reason,
            producer=settings.service_name,
            correlation_id=updated.id,
        )
        await write_outbox(conn, settings.purchase_events_topic, event, key=updated.id)
        await repo.add_step(conn, updated.id, "saga", new_status.value.lower(), updated.reason)
        # Terminal transitions are the last statement of their transaction; the optimistic lock makes
        # each one happen once.
        PURCHASES_TOTAL.labels(new_status.value).inc()
    return updated


async def _start_compensation(
    conn: asyncpg.Connection,
    purchase: Purchase,
    settings: SagaSettings,
    plan: tuple[str, ...],
    reason: str,
) -> Purchase:
    """Record the compensations before running any of them, then enter COMPENSATING (or end FAILED)."""
    for name in plan:
        await repo.add_step(conn, purchase.id, name, "scheduled", reason)
    if not plan:
        return await _transition(
            conn, purchase, settings, status=Status.FAILED, reason=reason, deadline_at=None, compensations=()
        )
    return await _transition(
        conn,
        purchase,
        settings,
        status=Status.COMPENSATING,
        compensations=plan,
        deadline_at=None,
        reason=reason,
    )


def _unit(purchase: Purchase) -> str:
    return "usd" if purchase.unit == "usd" else "tokens"


class SagaRunner:
    """Drives purchases in background tasks, one per purchase; woken by replies or by its deadlines."""

    def __init__(self, pool: asyncpg.Pool, payments: PaymentClient, settings: SagaSettings) -> None:
        self._pool = pool
        self._payments = payments
        self._settings = settings
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._wakeups: dict[str, asyncio.Event] = {}

    def start(self, purchase_id: str) -> None:
        """Drive `purchase_id` unless it is already being driven."""
        if purchase_id in self._tasks:
            return
        task = asyncio.create_task(self._drive(purchase_id), name=f"saga:{purchase_id}")
        self._tasks[purchase_id] = task
        task.add_done_callback(lambda _: self._forget(purchase_id))

    def _forget(self, purchase_id: str) -> None:
        self._tasks.pop(purchase_id, None)
        self._wakeups.pop(purchase_id, None)

    def wake(self, purchase_id: str) -> None:
        """A reply for `purchase_id` was committed: re-read its state now."""
        if event := self._wakeups.get(purchase_id):
            event.set()
        else:
            self.start(purchase_id)

    async def resume_all(self) -> int:
        """Pick up every unfinished purchase (start-up recovery); returns how many."""
        async with self._pool.acquire() as conn:
            ids = await repo.unfinished_ids(conn)
        for purchase_id in ids:
            self.start(purchase_id)
        if ids:
            logger.info("resumed %d unfinished purchases", len(ids))
        return len(ids)

    async def stop(self) -> None:
        """Cancel every running saga task; their state is already persisted."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _load(self, purchase_id: str) -> Purchase | None:
        async with self._pool.acquire() as conn:
            return await repo.get_purchase(conn, purchase_id)

    async def _drive(self, purchase_id: str) -> None:
        self._wakeups[purchase_id] = asyncio.Event()
        while True:
            purchase = await self._load(purchase_id)
            if purchase is None:
                return
            action = next_action(purchase.state)
            if action.kind == "done":
                return
            try:
                await self._perform(purchase, action)
            except StaleState:
                continue
            except asyncio.CancelledError:
                raise
            except Exception:
                # Unexpected (database down...): keep the persisted state and try again shortly.
                logger.exception("saga step failed for %s; retrying", purchase_id)
                await asyncio.sleep(self._settings.retry_backoff_s)

    async def _perform(self, purchase: Purchase, action: Action) -> None:
        if action.kind == "send":
            await self._send(purchase, action.step or "")
        elif action.kind == "await":
            await self._await_reply(purchase, action.step or "")
        elif action.step == "authorize_payment":
            await self._authorize(purchase)
        elif action.step == "capture_payment":
            await self._capture(purchase)
        elif action.step == "void_payment":
            await self._void(purchase)
        else:  # pragma: no cover - the step table and this dispatch must agree
            raise RuntimeError(f"no handler for {action}")

    # -- forward steps -------------------------------------------------------------------------------

    async def _authorize(self, purchase: Purchase) -> None:
        async with self._pool.acquire() as conn:
            await repo.add_step(conn, purchase.id, "authorize_payment", "started")
        result = await self._call_authorize(purchase)
        async with self._pool.acquire() as conn, conn.transaction():
            if result.outcome == PaymentOutcome.OK:
                await repo.add_step(conn, purchase.id, "authorize_payment", "succeeded", result.detail)
                await _transition(
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
                await repo.add_step(conn, purchase.id, "authorize_payment", "failed", result.detail)
                plan = compensation_plan("authorize_payment", uncertain=uncertain)
                await _start_compensation(conn, purchase, self._settings, plan, reason)

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

    async def _send(self, purchase: Purchase, step: str) -> None:
        """Send a command to quota through the outbox and start its reply deadline, in one transaction."""
        command_type = CreditTokens if step == "credit_tokens" else DebitTokens
        command = command_type(
            saga_id=purchase.id,
            step=step,
            purchase_id=purchase.id,
            user_id=purchase.user_id,
            pool_id=purchase.pool_id,
            amount=purchase.amount,
            unit="usd" if purchase.unit == "usd" else "tokens",
            producer=self._settings.service_name,
            correlation_id=purchase.id,
        )
        deadline = _now() + timedelta(seconds=self._settings.step_deadline_s)
        new_status = Status.CREDITING if step == "credit_tokens" else purchase.status
        async with self._pool.acquire() as conn, conn.transaction():
            await repo.add_step(conn, purchase.id, step, "started", f"command {command.event_id}")
            await _transition(conn, purchase, self._settings, status=new_status, deadline_at=deadline)
            await write_outbox(conn, self._settings.quota_commands_topic, command, key=purchase.id)

    async def _await_reply(self, purchase: Purchase, step: str) -> None:
        assert purchase.deadline_at is not None
        wakeup = self._wakeups[purchase.id]
        remaining = (purchase.deadline_at - _now()).total_seconds()
        if remaining > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wakeup.wait(), timeout=remaining)
            wakeup.clear()
            return  # re-read the state: a reply may have moved it on
        async with self._pool.acquire() as conn, conn.transaction():
            await repo.add_step(conn, purchase.id, step, "timed_out", "no reply before the step deadline")
            if step == "credit_tokens":
                # The credit may have happened: undo it as well as the authorization.
                plan = compensation_plan("credit_tokens", uncertain=True)
                await _start_compensation(conn, purchase, self._settings, plan, "quota did not reply in time")
            else:
                # Compensations must finish: send the command again (quota deduplicates on purchase and step).
                await _transition(conn, purchase, self._settings, deadline_at=None)

    async def _capture(self, purchase: Purchase) -> None:
        if purchase.status == Status.CREDITED:
            async with self._pool.acquire() as conn, conn.transaction():
                await repo.add_step(conn, purchase.id, "capture_payment", "started")
                await _transition(conn, purchase, self._settings, status=Status.CAPTURING)
            return
        assert purchase.payment_intent_id is not None
        result = await self._payments.capture(purchase.payment_intent_id, f"{purchase.id}:capture_payment")
        for _ in range(self._settings.capture_attempts - 1):
            if result.outcome != PaymentOutcome.UNCERTAIN:
                break
            await asyncio.sleep(self._settings.retry_backoff_s)
            result = await self._payments.capture(
                purchase.payment_intent_id, f"{purchase.id}:capture_payment"
            )
        async with self._pool.acquire() as conn, conn.transaction():
            if result.outcome == PaymentOutcome.OK:
                await repo.add_step(conn, purchase.id, "capture_payment", "succeeded", result.detail)
                await _transition(conn, purchase, self._settings, status=Status.COMPLETED)
            else:
                await repo.add_step(conn, purchase.id, "capture_payment", "failed", result.detail)
                plan = compensation_plan("capture_payment", uncertain=False)
                reason = f"payment capture failed: {result.code or result.message}"
                await _start_compensation(conn, purchase, self._settings, plan, reason)

    # -- compensations -------------------------------------------------------------------------------

    async def _void(self, purchase: Purchase) -> None:
        """Release the authorization (cancel), or refund it if it was captured after all."""
        async with self._pool.acquire() as conn:
            await repo.add_step(conn, purchase.id, "void_payment", "started")
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
            await repo.add_step(conn, purchase.id, step, "retrying", result.detail)
        await asyncio.sleep(self._settings.retry_backoff_s)

    async def _compensation_done(self, purchase: Purchase, step: str, detail: str) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            await repo.add_step(conn, purchase.id, step, "succeeded", detail)
            await _finish_compensation_step(conn, purchase, self._settings)


async def _finish_compensation_step(
    conn: asyncpg.Connection, purchase: Purchase, settings: SagaSettings
) -> Purchase:
    """Pop the finished compensation; after the last one, end COMPENSATED or FAILED."""
    remaining = purchase.compensations[1:]
    if remaining:
        return await _transition(conn, purchase, settings, compensations=remaining, deadline_at=None)
    plan = await _original_plan(conn, purchase)
    return await _transition(
        conn, purchase, settings, status=outcome_of(plan), compensations=(), deadline_at=None
    )


async def _original_plan(conn: asyncpg.Connection, purchase: Purchase) -> tuple[str, ...]:
    steps = await repo.list_steps(conn, purchase.id)
    return tuple(s.step for s in steps if s.status == "scheduled")


class ReplyHandler:
    """Handles TokensCredited/TokensDebited from quota: inbox, state change and wake-up of the runner."""

    def __init__(self, pool: asyncpg.Pool, runner: SagaRunner, settings: SagaSettings) -> None:
        self._pool = pool
        self._runner = runner
        self._settings = settings

    async def __call__(self, message: AnyMessage, _record: ConsumerRecord[bytes, bytes]) -> None:
        """Apply one reply; a duplicate (same event_id) is a no-op."""
        if not isinstance(message, TokensCredited | TokensDebited):
            return
        async with self._pool.acquire() as conn, conn.transaction():
            if not await repo.claim_event(conn, message.event_id):
                return
            purchase = await repo.get_purchase(conn, message.purchase_id)
            if purchase is None:
                return
            await self._apply(conn, purchase, message)
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
                await repo.add_step(conn, purchase.id, "credit_tokens", "succeeded", detail)
                await _transition(conn, purchase, self._settings, status=Status.CREDITED, deadline_at=None)
            else:
                await repo.add_step(conn, purchase.id, "credit_tokens", "failed", detail)
                plan = compensation_plan("credit_tokens", uncertain=False)
                reason = f"quota refused the credit: {reply.reason or 'no reason given'}"
                await _start_compensation(conn, purchase, self._settings, plan, reason)
        elif compensating:
            # success=false means there was nothing to take back (the credit never landed): done either way.
            await repo.add_step(conn, purchase.id, "debit_tokens", "succeeded", detail)
            await _finish_compensation_step(conn, purchase, self._settings)
        else:
            await repo.add_step(
                conn, purchase.id, reply.step, "reply_ignored", f"{detail}; status {purchase.status}"
            )
