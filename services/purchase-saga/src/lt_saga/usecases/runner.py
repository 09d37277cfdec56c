"""The saga runner: drives each purchase through the step table (see `SagaRunner`).

State is persisted after every step with optimistic locking, so the runner is re-entrant: any instance can
pick an unfinished purchase up from its persisted status. Payment calls carry idempotency keys (purchase id +
step); quota deduplicates re-sent commands on (purchase_id, step) and answers a repeat with the same reply,
which the reply handler's inbox (`lt_saga.usecases.replies`) then ignores. The steps themselves are in
`lt_saga.usecases.steps`.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging

import asyncpg
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

from leaky_common.tasks import cancel_and_wait
from lt_saga.adapters import repository as repo
from lt_saga.adapters.repository import WAKEUP_CHANNEL, StaleState
from lt_saga.domain.purchase import Purchase
from lt_saga.domain.saga import Status, next_action
from lt_saga.settings import SagaSettings
from lt_saga.usecases.steps import SagaSteps
from lt_saga.usecases.transitions import PURCHASES_BY_STATUS

__all__ = ["SagaRunner"]

logger = logging.getLogger(__name__)
tracer = trace.get_tracer("lt_saga")


class _JoinedTrace:
    """The trace of the request that started a purchase: every step of it joins that trace."""

    def __init__(self) -> None:
        self._token: contextvars.Token[otel_context.Context] | None = None

    def join(self, carrier: dict[str, str]) -> None:
        if self._token is None:
            self._token = otel_context.attach(propagate.extract(carrier))

    def leave(self) -> None:
        if self._token is not None:
            otel_context.detach(self._token)
            self._token = None


class SagaRunner:
    """Drives the purchases this instance holds a lease on, one task per purchase.

    A task is woken by a reply (locally, or by a NOTIFY from the instance that consumed it) or by its own
    deadlines. A heartbeat renews the leases of running tasks; a recovery loop leases and resumes unfinished
    purchases nobody holds (start-up, a dead instance's expired leases). Every step is idempotent, so two
    instances meeting on one saga (a lease lost during a long pause) cost a repeated call, never a repeated
    effect: the optimistic lock lets one of them persist each step.
    """

    def __init__(self, pool: asyncpg.Pool, steps: SagaSteps, settings: SagaSettings) -> None:
        self._pool = pool
        self._steps = steps
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
        # cancel_and_wait: a task whose cancellation a library swallowed is cancelled again, not waited for ever.
        await asyncio.gather(*(cancel_and_wait(task) for task in tasks), return_exceptions=True)
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

    async def _claim(self, purchase_id: str) -> bool:
        async with self._pool.acquire() as conn:
            return await repo.claim(conn, purchase_id, self.owner, self._settings.lease_s)

    async def _drive(self, purchase_id: str, claimed: bool) -> None:
        if not claimed and not await self._claim(purchase_id):
            return  # another live instance drives it
        joined = _JoinedTrace()
        try:
            while await self._next_step(purchase_id, joined):
                pass
        finally:
            joined.leave()

    async def _next_step(self, purchase_id: str, joined: _JoinedTrace) -> bool:
        """Re-read the purchase and take its next step; False once it is done (or gone)."""
        wakeup = self._wakeups[purchase_id]
        wakeup.clear()
        try:
            purchase = await self._load(purchase_id)
            if purchase is None:
                return False
            joined.join(purchase.trace_context)
            action = next_action(purchase.state)
            if action.kind == "done":
                return False
            with tracer.start_as_current_span(
                f"saga {action.kind} {action.step}",
                attributes={"purchase.id": purchase_id, "saga.status": purchase.status.value},
            ):
                await self._steps.perform(purchase, action, wakeup)
        except StaleState:
            pass
        except asyncio.CancelledError:
            raise
        except Exception:
            # Unexpected (database down...): keep the persisted state and try again shortly.
            logger.exception("saga step failed for %s; retrying", purchase_id)
            await asyncio.sleep(self._settings.retry_backoff_s)
        return True
