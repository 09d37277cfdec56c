"""Durable reservations: every open reservation is also in Postgres, so none escapes its charge when Redis
loses its data.

Admission and release only hand the reservation's fields to `record` (no I/O on the hot path); one writer
task writes whatever accumulated in one statement (group commit: while a write is in flight the next batch
gathers). The transaction that charges a reservation deletes its record. When Redis is found empty, `recover`
puts the open reservations back (the sweep then charges those never settled) and counters rebuilt from the
ledger start with what the open reservations hold."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from lt_quota.adapters import repository as repo
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
        self._pending: dict[str, OpenReservation] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._recovering = asyncio.Lock()
        self.written = 0

    def record(self, reservation_id: str, fields: dict[str, str]) -> None:
        """Queue a reservation's current fields for the next write (the latest fields win)."""
        record = open_record(reservation_id, fields)
        if record is not None:
            self._pending[reservation_id] = record
            self._wake.set()

    async def flush(self) -> None:
        """Write what is queued now."""
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

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
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
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            await self.flush()

    async def recover(self) -> int:
        """If Redis lost its data: put every open reservation back, then the freezes (which marks Redis as
        restored). Returns how many reservations were put back."""
        async with self._recovering:
            if not await self.ctx.state.was_lost():
                return 0
            await self.flush()
            async with self.ctx.db.acquire() as conn:
                records = await repo.open_reservations(conn)
            restored = 0
            for r in records:
                restored += await self.ctx.state.restore_reservation(r.reservation_id, r.expires_ms, r.fields)
            await self.freezes.restore_freezes()
            if restored:
                logger.warning("redis had lost its data: put back %d open reservations", restored)
            return restored
