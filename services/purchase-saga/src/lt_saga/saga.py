"""The saga runner: drives each purchase through the step table (see `SagaRunner`).

State is persisted after every step with optimistic locking, so the runner is re-entrant: any instance can
pick an unfinished purchase up from its persisted status. Payment calls carry idempotency keys (purchase id +
step); quota deduplicates re-sent commands on (purchase_id, step) and answers a repeat with the same reply,
which the reply handler's inbox (`lt_saga.replies`) then ignores.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

import asyncpg
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

from leaky_common.events import CreditTokens, DebitTokens
from leaky_common.outbox import write_outbox
from lt_saga import repository as repo
from lt_saga.domain import Action, Status, compensation_plan, next_action
from lt_saga.payments import PaymentClient, PaymentOutcome, PaymentResult
from lt_saga.repository import Purchase, StaleState
from lt_saga.settings import SagaSettings
from lt_saga.transitions import (
    PURCHASES_BY_STATUS,
    WAKEUP_CHANNEL,
    finish_compensation_step,
    log_step,
    new_event_id,
    now,
    start_compensation,
    transition,
    unit_of,
)

__all__ = ["SagaRunner"]

logger = logging.getLogger(__name__)
tracer = trace.get_tracer("lt_saga")


class SagaRunner:
    """Drives the purchases this instance holds a lease on, one task per purchase.

    A task is woken by a reply (locally, or by a NOTIFY from the instance that consumed it) or by its own
    deadlines. A heartbeat renews the leases of running tasks; a recovery loop leases and resumes unfinished
    purchases nobody holds (start-up, a dead instance's expired leases). Every step is idempotent, so two
    instances meeting on one saga (a lease lost during a long pause) cost a repeated call, never a repeated
    effect: the optimistic lock lets one of them persist each step.
    """

    def __init__(self, pool: asyncpg.Pool, payments: PaymentClient, settings: SagaSettings) -> None:
        self._pool = pool
        self._payments = payments
        self._settings = settings
        self.owner = settings.owner_id
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._wakeups: dict[str, asyncio.Event] = {}
        self._background: list[asyncio.Task[None]] = []
        self._listen_conn: asyncpg.Connection | None = None

    async def start_background(self) -> None:
        """Listen for wake-ups from other instances, then start the heartbeat and recovery loops."""
        self._listen_conn = await self._pool.acquire()
        await self._listen_conn.add_listener(WAKEUP_CHANNEL, self._on_notify)
        self._background = [
            asyncio.create_task(self._heartbeat_loop(), name="saga-heartbeat"),
            asyncio.create_task(self._recovery_loop(), name="saga-recovery"),
        ]

    def start(self, purchase_id: str, *, claimed: bool = False) -> bool:
        """Drive `purchase_id` unless this instance already does (False); `claimed`: the lease is ours."""
        if purchase_id in self._tasks:
            return False
        self._wakeups[purchase_id] = asyncio.Event()
        task = asyncio.create_task(self._drive(purchase_id, claimed), name=f"saga:{purchase_id}")
        self._tasks[purchase_id] = task
        task.add_done_callback(lambda _: self._forget(purchase_id))
        return True

    def _forget(self, purchase_id: str) -> None:
        self._tasks.pop(purchase_id, None)
        self._wakeups.pop(purchase_id, None)

    def wake(self, purchase_id: str) -> None:
        """A reply for `purchase_id` was committed: re-read its state now (driving it if nobody does)."""
        if event := self._wakeups.get(purchase_id):
            event.set()
        else:
            self.start(purchase_id)

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        if event := self._wakeups.get(payload):
            event.set()

    @property
    def driving(self) -> int:
        """How many sagas this instance is driving right now."""
        return len(self._tasks)

    async def recover_once(self) -> int:
        """Lease and resume unfinished purchases nobody holds; returns how many were picked up."""
        async with self._pool.acquire() as conn:
            ids = await repo.claim_unowned(
                conn,
                self.owner,
                self._settings.lease_s,
                exclude=list(self._tasks),
                limit=self._settings.claim_batch,
            )
            counts = await repo.count_by_status(conn)
        for status in Status:
            PURCHASES_BY_STATUS.labels(status.value).set(counts.get(status.value, 0))
        resumed = sum(self.start(purchase_id, claimed=True) for purchase_id in ids)
        if resumed:
            logger.info("resumed %d unfinished purchases", resumed)
        return resumed

    async def _recovery_loop(self) -> None:
        while True:
            await asyncio.sleep(self._settings.recovery_interval_s)
            try:
                await self.recover_once()
            except Exception:  # the loop must outlive any failure (database restarting...)
                logger.exception("saga recovery pass failed; will retry")

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self._settings.lease_s / 3)
            ids = list(self._tasks)
            if not ids:
                continue
            try:
                async with self._pool.acquire() as conn:
                    held = await repo.renew_leases(conn, self.owner, ids, self._settings.lease_s)
            except Exception:  # the loop must outlive any failure (database restarting...)
                logger.exception("lease renewal failed; will retry")
                continue
            for purchase_id in set(ids) - held:
                if (task := self._tasks.get(purchase_id)) is not None:
                    logger.warning("lost the lease on %s; another instance drives it now", purchase_id)
                    task.cancel()

    async def stop(self) -> None:
        """Stop the loops and every saga task (their state is persisted) and hand the leases back."""
        for task in self._background:
            task.cancel()
        tasks = [*self._background, *self._tasks.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._listen_conn is not None:
            await self._listen_conn.remove_listener(WAKEUP_CHANNEL, self._on_notify)
            await self._pool.release(self._listen_conn)
            self._listen_conn = None
        try:
            async with self._pool.acquire(timeout=5) as conn:
                await repo.release_leases(conn, self.owner)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            logger.warning("could not release saga leases; they expire in %.0fs", self._settings.lease_s)

    async def _load(self, purchase_id: str) -> Purchase | None:
        async with self._pool.acquire() as conn:
            return await repo.get_purchase(conn, purchase_id)

    async def _drive(self, purchase_id: str, claimed: bool) -> None:
        if not claimed:
            async with self._pool.acquire() as conn:
                if not await repo.claim(conn, purchase_id, self.owner, self._settings.lease_s):
                    return  # another live instance drives it
        wakeup = self._wakeups[purchase_id]
        token: contextvars.Token[otel_context.Context] | None = None
        try:
            while True:
                wakeup.clear()
                try:
                    purchase = await self._load(purchase_id)
                    if purchase is None:
                        return
                    if token is None:
                        # Every step joins the trace of the request that started the purchase.
                        token = otel_context.attach(propagate.extract(purchase.trace_context))
                    action = next_action(purchase.state)
                    if action.kind == "done":
                        return
                    with tracer.start_as_current_span(
                        f"saga {action.kind} {action.step}",
                        attributes={"purchase.id": purchase_id, "saga.status": purchase.status.value},
                    ):
                        await self._perform(purchase, action)
                except StaleState:
                    continue
                except asyncio.CancelledError:
                    raise
                except Exception:
                    # Unexpected (database down...): keep the persisted state and try again shortly.
                    logger.exception("saga step failed for %s; retrying", purchase_id)
                    await asyncio.sleep(self._settings.retry_backoff_s)
        finally:
            if token is not None:
                otel_context.detach(token)

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
            await write_outbox(conn, self._settings.quota_commands_topic, command, key=purchase.id)

    async def _await_reply(self, purchase: Purchase, step: str) -> None:
        """Wait for the reply; re-send the same command now and then; at the deadline, give up or go on."""
        assert purchase.deadline_at is not None
        at = now()
        if purchase.deadline_at > at:
            due = min(purchase.deadline_at, purchase.resend_at or purchase.deadline_at)
            if due > at:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeups[purchase.id].wait(), (due - at).total_seconds())
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
                await write_outbox(conn, self._settings.quota_commands_topic, command, key=purchase.id)
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
