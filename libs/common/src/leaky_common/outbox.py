"""Transactional outbox: write messages in the same transaction as the state change, relay them in order.

Each service that uses it creates the table with `OUTBOX_DDL` in one of its migrations, and runs one
`ElectedRelay` per instance: a PostgreSQL session advisory lock elects the single instance that relays.
Were every instance to relay, each row would be published once per instance (consumers dedupe, but the
traffic multiplies) and two relays could interleave rows, so one entity's messages might arrive out of order.
The leader relays every instance's rows (NOTIFY wakes it); when it dies its session ends, the lock is freed,
and another instance takes over within `retry_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import asyncpg
import orjson

from leaky_common.events import Message
from leaky_common.kafka import EventPublisher, _headers_from_context
from leaky_common.metrics import OUTBOX_BACKLOG, OUTBOX_OLDEST_AGE
from leaky_common.tasks import cancel_and_wait

__all__ = ["OUTBOX_DDL", "RELAY_LOCK", "ElectedRelay", "OutboxRelay", "write_outbox"]

logger = logging.getLogger(__name__)

# Any constant works; it must differ from the migration lock (leaky_common.db). The lock guards the outbox
# table, and there is one per database: services that share a database (all of them on the settings' default
# URL) also share the table, and then one relay for all of them is right.
RELAY_LOCK = 7_311_084

OUTBOX_DDL = """
CREATE TABLE IF NOT EXISTS outbox (
    id BIGSERIAL PRIMARY KEY,
    topic TEXT NOT NULL,
    key TEXT,
    value BYTEA NOT NULL,
    headers JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    published_at TIMESTAMPTZ
);
CREATE INDEX IF NOT EXISTS outbox_unpublished ON outbox (id) WHERE published_at IS NULL;
"""


async def write_outbox(
    conn: asyncpg.Connection, topic: str, message: Message, key: str | None = None
) -> None:
    """Queue `message` for `topic`; call inside the transaction that makes the change it announces."""
    headers = {k: v.decode() for k, v in _headers_from_context({"type": str(getattr(message, "type", ""))})}
    await conn.execute(
        "INSERT INTO outbox (topic, key, value, headers) VALUES ($1, $2, $3, $4::jsonb)",
        topic,
        key,
        message.model_dump_json().encode(),
        orjson.dumps(headers).decode(),
    )
    await conn.execute("NOTIFY outbox")


class OutboxRelay:
    """Publishes unpublished outbox rows in id order; wakes on NOTIFY or every `interval_s`."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        publisher: EventPublisher,
        *,
        interval_s: float = 0.5,
        batch: int = 200,
        sample_every_s: float = 1.0,
    ) -> None:
        self._pool = pool
        self._publisher = publisher
        self._interval_s = interval_s
        self._batch = batch
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listen_conn: asyncpg.Connection | None = None
        self._sample_every_s = sample_every_s
        self._sampled = -sample_every_s

    async def start(self) -> None:
        """Listen for NOTIFY and start relaying in the background."""
        self._listen_conn = await self._pool.acquire()
        await self._listen_conn.add_listener("outbox", self._on_notify)
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        """Stop relaying; unpublished rows stay for the next start."""
        if self._task is not None:
            await cancel_and_wait(self._task)
        if self._listen_conn is not None:
            # Releasing with a listener attached warns (an error under pytest -W error) and leaks the connection.
            await self._listen_conn.remove_listener("outbox", self._on_notify)
            await self._pool.release(self._listen_conn)
            self._listen_conn = None

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def relay_once(self) -> int:
        """Publish one batch; returns how many rows were published."""
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(
                "SELECT id, topic, key, value, headers FROM outbox WHERE published_at IS NULL ORDER BY id LIMIT $1",
                self._batch,
            )
            for row in rows:
                headers = [(k, str(v).encode()) for k, v in orjson.loads(row["headers"]).items()]
                key = row["key"].encode() if row["key"] else None
                await self._publisher.publish_raw(row["topic"], bytes(row["value"]), key, headers)
                # Marked one by one: a crash between publish and mark re-sends, and consumers dedupe.
                await conn.execute("UPDATE outbox SET published_at = now() WHERE id = $1", row["id"])
            return len(rows)

    async def sample(self) -> tuple[int, float]:
        """Set `lt_outbox_backlog_messages` and `lt_outbox_oldest_age_seconds` from the table; returns them."""
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT count(*) AS n, coalesce(extract(epoch FROM now() - min(created_at)), 0)::float8 AS age"
                " FROM outbox WHERE published_at IS NULL"
            )
        assert row is not None
        backlog, age = int(row["n"]), max(float(row["age"]), 0.0)
        OUTBOX_BACKLOG.set(backlog)
        OUTBOX_OLDEST_AGE.set(age)
        return backlog, age

    async def _sample_now_and_then(self) -> None:
        # At most once per `sample_every_s`: one indexed count of the unpublished rows (the partial index).
        now = time.monotonic()
        if now - self._sampled < self._sample_every_s:
            return
        self._sampled = now
        await self.sample()

    async def _run(self) -> None:
        while True:
            try:
                while await self.relay_once() == self._batch:
                    await self._sample_now_and_then()
                await self._sample_now_and_then()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("outbox relay failed; will retry")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._interval_s)


class ElectedRelay:
    """Runs an `OutboxRelay` while this instance holds the relay lock; otherwise waits for it."""

    def __init__(
        self,
        database_url: str,
        pool: asyncpg.Pool,
        publisher: EventPublisher,
        *,
        retry_s: float = 1.0,
        interval_s: float = 0.5,
    ) -> None:
        self._database_url = database_url
        self._pool = pool
        self._publisher = publisher
        self._retry_s = retry_s
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        self.leading = False

    async def start(self) -> None:
        """Start contending for the lock in the background."""
        self._task = asyncio.create_task(self._run(), name="outbox-relay-election")

    async def stop(self) -> None:
        """Stop relaying and give the lock up (closing the session releases it)."""
        if self._task is not None:
            await cancel_and_wait(self._task)
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
            await self._relay_while_alive(conn)
        finally:
            try:
                await conn.close(timeout=5)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                conn.terminate()

    async def _relay_while_alive(self, conn: asyncpg.Connection) -> None:
        relay = OutboxRelay(self._pool, self._publisher, interval_s=self._interval_s)
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
