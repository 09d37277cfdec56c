"""The inbox and the elected outbox relay on a real PostgreSQL and broker."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer

from leaky_common.events import FreezeChanged
from leaky_common.inbox import INBOX_DDL, claim
from leaky_common.kafka import EventPublisher, ensure_topics
from leaky_common.outbox import OUTBOX_DDL, ElectedRelay, write_outbox
from leaky_common.settings import ServiceSettings
from leaky_devinfra.testing import eventually

pytestmark = pytest.mark.integration


async def test_an_event_id_is_claimed_once(make_database: Callable[[str], Awaitable[str]]) -> None:
    conn = await asyncpg.connect(await make_database("inbox"))
    try:
        await conn.execute(INBOX_DDL)
        async with conn.transaction():
            assert await claim(conn, "e1") is True
        assert await claim(conn, "e1") is False
        assert await claim(conn, "e2") is True
        # Claimed inside a transaction that rolls back: the event is not handled, so it may be claimed again.
        with pytest.raises(RuntimeError):
            async with conn.transaction():
                assert await claim(conn, "e3") is True
                raise RuntimeError("handler failed")
        assert await claim(conn, "e3") is True
    finally:
        await conn.close()


async def test_one_elected_relay_per_outbox_and_the_follower_takes_over(
    make_database: Callable[[str], Awaitable[str]], kafka_bootstrap: str
) -> None:
    url = await make_database("relay")
    topic = f"relay.{uuid.uuid4().hex[:8]}"
    settings = ServiceSettings(service_name="t", kafka_bootstrap=kafka_bootstrap)
    await ensure_topics(settings, [topic])
    pool = await asyncpg.create_pool(url, min_size=1, max_size=6)
    publisher = EventPublisher(settings)
    await publisher.start()
    relays = [ElectedRelay(url, pool, publisher, retry_s=0.1) for _ in range(2)]
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest")
    seen: list[bytes] = []

    async def write(*keys: str) -> None:
        async with pool.acquire() as conn, conn.transaction():
            for key in keys:
                change = FreezeChanged(target_type="key", target_id=key, org_id="o", frozen=True, reason="t")
                await write_outbox(conn, topic, change, key=key)

    async def received(key: bytes) -> bool:
        batch = await consumer.getmany(timeout_ms=200)
        seen.extend(r.key or b"" for records in batch.values() for r in records)
        return key in seen

    async def all_published() -> bool:
        unpublished: int = await pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        return unpublished == 0

    try:
        await pool.execute(OUTBOX_DDL)
        for relay in relays:
            await relay.start()
        await eventually(lambda: any(r.leading for r in relays), 10, "a leader")
        assert sum(r.leading for r in relays) == 1
        await write(*(f"k{i}" for i in range(5)))
        await consumer.start()
        await eventually(lambda: received(b"k4"), 20, "the rows relayed")
        await eventually(all_published, 10, "every row marked published")
        leader = next(r for r in relays if r.leading)
        await leader.stop()
        follower = next(r for r in relays if r is not leader)
        await eventually(lambda: follower.leading, 10, "the follower takes over")
        await write("k5")
        await eventually(lambda: received(b"k5"), 20, "a row written after the takeover relayed")
        # Each row once: the leader stopped only after every row was marked published.
        assert sorted(seen) == [f"k{i}".encode() for i in range(6)]
    finally:
        await consumer.stop()
        for relay in relays:
            await relay.stop()
        await publisher.stop()
        await pool.close()


async def test_readiness_probes_see_a_live_database_and_broker_and_a_dead_port(
    make_database: Callable[[str], Awaitable[str]], kafka_bootstrap: str
) -> None:
    from leaky_common.db import ping
    from leaky_common.kafka import broker_reachable
    from leaky_devinfra.infra import free_port

    pool = await asyncpg.create_pool(await make_database("probe"), min_size=1, max_size=1)
    try:
        assert await ping(pool) is True
    finally:
        await pool.close()
    assert await ping(pool) is False  # closed: no connection to give
    assert await ping(None) is False
    assert await broker_reachable(kafka_bootstrap) is True
    assert await broker_reachable(f"127.0.0.1:{free_port()}", timeout_s=0.5) is False
    assert await broker_reachable(f"127.0.0.1:{free_port()},{kafka_bootstrap}") is True


async def test_a_malformed_bootstrap_list_is_unreachable_not_an_error() -> None:
    from leaky_common.kafka import broker_reachable

    assert await broker_reachable("127.0.0.1:not-a-port", timeout_s=0.2) is False
    assert await broker_reachable(" , ,", timeout_s=0.2) is False
    assert await broker_reachable(":9092", timeout_s=0.2) is False
