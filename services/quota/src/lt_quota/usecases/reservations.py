"""Durable reservations: every open reservation is also in Postgres, so none escapes its charge when Redis
loses its data.

Admission and release only hand the reservation's fields to `record` (no I/O on the hot path); one writer
task writes whatever accumulated in one statement (group commit: it gathers `LT_RESERVATION_RECORD_LINGER_S`
after the first record, and while a write is in flight the next batch gathers; a reservation settled before
its write is dropped from it). The transaction that charges a reservation deletes its record. A release's update waits
`LT_RELEASE_RECORD_DELAY_S` first: the usage event usually settles the reservation within that time, and the
settlement drops the update (`forget`), so most requests cost Postgres one write, not two. Should Redis lose
its data meanwhile, the record still holds what admission reserved (a larger hold, never a smaller one). When Redis is found empty, `recover`
puts the open reservations back (the sweep then charges those never settled) and counters rebuilt from the
ledger start with what the open reservations hold."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from leaky_common.tasks import cancel_and_wait
from lt_quota.adapters import repository as repo
from lt_quota.adapters.metrics import RESERVATIONS_RELEASED
from lt_quota.adapters.repository.reservations import OpenReservation
from lt_quota.domain import legs_of_reservation
from lt_quota.usecases.context import QuotaContext
from lt_quota.usecases.freezes import Freezes

__all__ = ["DurableReservations"]

logger = logging.getLogger(__name__)


def open_record(reservation_id: str, fields: dict[str, str]) -> OpenReservation | None:
    """The durable record of a reservation from its Redis fields (None if it has no legs)."""
    legs = legs_of_reservation(fields)
    if not legs:
        return None
    return OpenReservation(
        reservation_id,
        int(fields.get("expires", "0")),
        legs[0].pool_id,
        [leg.key for leg in legs],
        [leg.reserved for leg in legs],
        fields,
    )


class DurableReservations:
    """The group-commit writer of open reservations, and recovery after Redis lost its data."""

    def __init__(self, ctx: QuotaContext, freezes: Freezes) -> None:
        self.ctx = ctx
        self.freezes = freezes
        self.release_delay_s = ctx.settings.release_record_delay_s
        self.linger_s = ctx.settings.reservation_record_linger_s
        self._pending: dict[str, OpenReservation] = {}
        self._deferred: dict[str, tuple[float, OpenReservation]] = {}  # releases' updates: (due, record)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._recovering = asyncio.Lock()
        # One write at a time: `flush` returns once what was queued before it is committed, also when the
        # writer's own write of it was already in flight (recovery must see those records).
        self._writing = asyncio.Lock()
        self.written = 0  # records written
        self.writes = 0  # statements that wrote them

    def record(self, reservation_id: str, fields: dict[str, str]) -> None:
        """Queue a reservation's current fields for the next write (the latest fields win)."""
        record = open_record(reservation_id, fields)
        if record is not None:
            self._pending[reservation_id] = record
            self._wake.set()

    def record_release(self, reservation_id: str, fields: dict[str, str]) -> None:
        """Queue a released reservation's fields, to be written `release_delay_s` from now unless settled first."""
        record = open_record(reservation_id, fields)
        if record is None:
            return
        if self.release_delay_s <= 0:
            self.record(reservation_id, fields)
            return
        if not self._deferred:
            self._wake.set()  # the writer sleeps until the first due update
        self._deferred[reservation_id] = (asyncio.get_running_loop().time() + self.release_delay_s, record)

    def released(self, reservation_id: str, fields: dict[str, str]) -> None:
        """A reservation was released (shrunk to what its answer used): count it and queue its new fields."""
        RESERVATIONS_RELEASED.inc()
        self.record_release(reservation_id, fields)

    def forget(self, reservation_ids: list[str]) -> None:
        """The reservations were charged: their records and deferred release updates need not be written (the
        write would skip them anyway: their ledger rows exist)."""
        for reservation_id in reservation_ids:
            self._deferred.pop(reservation_id, None)
            self._pending.pop(reservation_id, None)

    def _due(self, everything: bool = False) -> float | None:
        """Move the deferred updates that are due (or all) to the next write; seconds until the next one is due
        (None: none deferred). Deferred in order of their due times (one delay for all): the first not due ends
        the scan."""
        now = asyncio.get_running_loop().time()
        while self._deferred:
            reservation_id, (due, record) = next(iter(self._deferred.items()))
            if due > now and not everything:
                return due - now
            del self._deferred[reservation_id]
            self._pending[reservation_id] = record  # newer than an admission record still queued
        return None

    async def flush(self, *, everything: bool = False) -> None:
        """Write what is queued now (with `everything`, the deferred release updates too); returns once that,
        and a write in flight when called, is committed."""
        async with self._writing:
            self._due(everything)
            batch, self._pending = self._pending, {}
            if not batch:
                return
            try:
                async with self.ctx.db.acquire() as conn:
                    await repo.upsert_open_reservations(conn, list(batch.values()))
            except BaseException:
                for reservation_id, record in batch.items():  # newer fields queued meanwhile win
                    self._pending.setdefault(reservation_id, record)
                raise
            self.written += len(batch)
            self.writes += 1

    async def _run(self) -> None:
        while True:
            wait = self._due()
            if not self._pending:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
            self._wake.clear()
            if self._pending and self.linger_s > 0:
                # Gather: one statement for the admissions of the linger (at one request at a time, one per
                # admission otherwise); those settled meanwhile drop out (`forget`).
                await asyncio.sleep(self.linger_s)
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("writing open reservations failed; will retry")
                self._wake.set()
                await asyncio.sleep(0.5)

    async def start(self) -> None:
        """Start the writer."""
        self._task = asyncio.create_task(self._run(), name="open-reservations")

    async def stop(self) -> None:
        """Stop the writer, writing what is queued."""
        if self._task is not None:
            await cancel_and_wait(self._task)
        with contextlib.suppress(Exception):
            await self.flush(everything=True)

    def _last_admission(self, records: list[repo.OpenReservation]) -> int:
        """The latest admission known (ms): this process's, or any process's still open reservation (admitted
        its TTL before it expires); now if neither is known."""
        now = self.ctx.clock()
        ttl_ms = self.ctx.settings.reservation_ttl_s * 1000
        latest = max([self.ctx.last_admitted_ms, *(r.expires_ms - ttl_ms for r in records)])
        return min(latest, now) if latest > 0 else now

    async def recover(self) -> int:
        """If Redis lost its data: count its rate-limit buckets as full (if anything was charged lately), put
        every open reservation back, then the freezes (which marks Redis as restored). Returns how many
        reservations were put back."""
        async with self._recovering:
            if not await self.ctx.state.was_lost():
                return 0
            await self.flush(everything=True)
            drain_ms = self.ctx.bucket_drain_ms()
            async with self.ctx.db.acquire() as conn:
                records = await repo.open_reservations(conn)
                seen = await repo.seen_redis_prefix(conn, self.ctx.settings.redis_prefix)
                busy = seen and (bool(records) or await repo.charged_within(conn, drain_ms / 1000))
            if busy:
                # Rate-limit buckets went too, and some may have been full: count them as full at the last
                # admission known (buckets only fill by admissions, and drained since) rather than empty. A
                # first start (a prefix never used), or a loss after a quiet spell (nothing open, nothing
                # charged within a bucket's drain time), starts them empty.
                await self.ctx.buckets_lost(self._last_admission(records))
            restored = 0
            for r in records:
                restored += await self.ctx.state.restore_reservation(r.reservation_id, r.expires_ms, r.fields)
            await self.freezes.restore_freezes()
            if restored:
                logger.warning("redis had lost its data: put back %d open reservations", restored)
            return restored
