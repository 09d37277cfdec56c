"""Transactional outbox: write messages in the same transaction as the state change, relay them in order.

Each service that uses it creates the table with `OUTBOX_DDL` in one of its migrations.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg
import orjson

from leaky_common.events import Message
from leaky_common.kafka import EventPublisher, _headers_from_context

__all__ = ["OUTBOX_DDL", "OutboxRelay", "write_outbox"]

logger = logging.getLogger(__name__)

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
        self, pool: asyncpg.Pool, publisher: EventPublisher, *, interval_s: float = 0.5, batch: int = 200
    ) -> None:
        self._pool = pool
        self._publisher = publisher
        self._interval_s = interval_s
        self._batch = batch
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listen_conn: asyncpg.Connection | None = None

    async def start(self) -> None:
        """Listen for NOTIFY and start relaying in the background."""
        self._listen_conn = await self._pool.acquire()
        await self._listen_conn.add_listener("outbox", self._on_notify)
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        """Stop relaying; unpublished rows stay for the next start."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
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

    async def _run(self) -> None:
        while True:
            try:
                while await self.relay_once() == self._batch:
                    pass
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("outbox relay failed; will retry")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._interval_s)
