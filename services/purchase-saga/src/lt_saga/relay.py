"""One outbox relay across all saga instances: a PostgreSQL session advisory lock elects who runs it.

Every instance writes to the same outbox table. Were each to relay it, every row would be published once per
instance (consumers dedupe, but the traffic multiplies) and two relays could interleave rows, so a purchase's
commands might reach quota out of order. The instance holding the lock relays everything; NOTIFY wakes it for
rows any instance commits. When it dies its session ends, the lock is freed, and another instance takes over
within `retry_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg

from leaky_common.kafka import EventPublisher
from leaky_common.outbox import OutboxRelay

__all__ = ["RELAY_LOCK", "ElectedRelay"]

logger = logging.getLogger(__name__)

# Any constant works; it must differ from the migration lock (leaky_common.db).
RELAY_LOCK = 7_311_084


class ElectedRelay:
    """Runs an `OutboxRelay` while this instance holds the relay lock; otherwise waits for it."""

    def __init__(
        self, database_url: str, pool: asyncpg.Pool, publisher: EventPublisher, *, retry_s: float = 1.0
    ) -> None:
        self._database_url = database_url
        self._pool = pool
        self._publisher = publisher
        self._retry_s = retry_s
        self._task: asyncio.Task[None] | None = None
        self.leading = False

    async def start(self) -> None:
        """Start contending for the lock in the background."""
        self._task = asyncio.create_task(self._run(), name="outbox-relay-election")

    async def stop(self) -> None:
        """Stop relaying and give the lock up (closing the session releases it)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self._lead_when_elected()
            except Exception as exc:  # the election must outlive any failure (database restarting...)
                logger.warning("outbox relay election failed (%r); retrying", exc)
                await asyncio.sleep(self._retry_s)

    async def _lead_when_elected(self) -> None:
        conn = await asyncpg.connect(self._database_url)
        try:
            while True:
                if await conn.fetchval("SELECT pg_try_advisory_lock($1)", RELAY_LOCK):
                    break
                await asyncio.sleep(self._retry_s)
            relay = OutboxRelay(self._pool, self._publisher)
            await relay.start()
            self.leading = True
            logger.info("this instance relays the outbox")
            try:
                while True:  # hold the lock while the session that owns it is alive
                    await asyncio.sleep(self._retry_s)
                    await conn.fetchval("SELECT 1", timeout=self._retry_s * 5)
            finally:
                self.leading = False
                await relay.stop()
        finally:
            try:
                await conn.close(timeout=5)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                conn.terminate()
