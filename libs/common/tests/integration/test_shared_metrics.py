"""The shared metrics on real infrastructure: consumer lag and dead letters, the outbox backlog, pool sizes and
the worker's `/metrics` server."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import asyncpg
import httpx
import pytest
from prometheus_client import REGISTRY

from leaky_common.db import create_pool
from leaky_common.events import FreezeChanged, UsageRecorded
from leaky_common.kafka import EventConsumer, EventPublisher, ensure_topics
from leaky_common.metrics_server import MetricsServer
from leaky_common.outbox import OUTBOX_DDL, OutboxRelay, write_outbox
from leaky_common.settings import ServiceSettings
from leaky_devinfra.testing import eventually

pytestmark = pytest.mark.integration


def _value(name: str, labels: dict[str, str]) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


async def test_consumer_lag_is_sampled_and_dead_letters_are_counted_by_source_topic(
    kafka_bootstrap: str,
) -> None:
    topic = f"test.{uuid.uuid4().hex[:8]}"
    group = f"g-{topic}"
    settings = ServiceSettings(service_name="t", kafka_bootstrap=kafka_bootstrap)
    await ensure_topics(settings, [topic])
    publisher = EventPublisher(settings)
    await publisher.start()
    seen: list[str] = []

    async def handler(message: object, _record: object) -> None:
        assert isinstance(message, UsageRecorded)
        seen.append(message.request_id)

    consumer = EventConsumer(settings, group_id=group, topics=[topic], handler=handler, publisher=publisher)
    # Both series exist before anything happened (0, not "no data").
    assert _value("lt_kafka_consumer_lag_messages", {"group": group, "topic": topic}) == 0
    assert _value("lt_kafka_dead_letters_total", {"topic": topic}) == 0
    try:
        for i in range(20):
            await publisher.publish(topic, UsageRecorded(request_id=f"r{i}", model="m", provider="p"))
        await publisher.publish_raw(topic, b"not json", None, [])
        await consumer.start()
        await eventually(lambda: len(seen) == 20, 20, "every message handled")
        await eventually(
            lambda: _value("lt_kafka_dead_letters_total", {"topic": topic}) == 1,
            10,
            "the dead letter counted",
        )
        # The lag was sampled from the fetch's high watermark (caught up: nothing behind).
        assert consumer._lag, "no partition's lag was sampled"
        assert _value("lt_kafka_consumer_lag_messages", {"group": group, "topic": topic}) == 0
    finally:
        await consumer.stop()
        await publisher.stop()


async def test_the_outbox_backlog_and_its_oldest_age(
    make_database: Callable[[str], Awaitable[str]], kafka_bootstrap: str
) -> None:
    url = await make_database("outbox_metrics")
    topic = f"relay.{uuid.uuid4().hex[:8]}"
    settings = ServiceSettings(service_name="t", kafka_bootstrap=kafka_bootstrap)
    await ensure_topics(settings, [topic])
    pool = await asyncpg.create_pool(url, min_size=1, max_size=3)
    publisher = EventPublisher(settings)
    await publisher.start()
    try:
        await pool.execute(OUTBOX_DDL)
        async with pool.acquire() as conn, conn.transaction():
            for key in ("a", "b", "c"):
                change = FreezeChanged(target_type="key", target_id=key, org_id="o", frozen=True, reason="t")
                await write_outbox(conn, topic, change, key=key)
        await pool.execute("UPDATE outbox SET created_at = now() - interval '90 seconds' WHERE key = 'a'")
        relay = OutboxRelay(pool, publisher)
        backlog, age = await relay.sample()
        assert backlog == 3
        assert 89 < age < 3600
        assert _value("lt_outbox_backlog_messages", {}) == 3
        assert _value("lt_outbox_oldest_age_seconds", {}) == age
        assert await relay.relay_once() == 3
        assert await relay.sample() == (0, 0.0)
        assert _value("lt_outbox_backlog_messages", {}) == 0
    finally:
        await publisher.stop()
        await pool.close()


async def test_pool_connections_in_use_idle_and_max(make_database: Callable[[str], Awaitable[str]]) -> None:
    url = await make_database("pool_metrics")
    name = f"p{uuid.uuid4().hex[:6]}"
    pool = await create_pool(url, min_size=1, max_size=4, name=name)
    try:
        assert _value("lt_db_pool_max_connections", {"pool": name}) == 4
        async with pool.acquire():
            assert _value("lt_db_pool_connections", {"pool": name, "state": "in_use"}) == 1
        assert _value("lt_db_pool_connections", {"pool": name, "state": "in_use"}) == 0
        assert _value("lt_db_pool_connections", {"pool": name, "state": "idle"}) == 1
    finally:
        await pool.close()
    assert _value("lt_db_pool_max_connections", {"pool": name}) is None  # a closed pool is not reported


async def test_the_metrics_server_answers_only_the_scrapers_token() -> None:
    server = MetricsServer("127.0.0.1", 0, "s3cret")
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=5) as client:
            ok = await client.get("/metrics", headers={"Authorization": "Bearer s3cret"})
            assert ok.status_code == 200
            assert ok.headers["content-type"].startswith("text/plain")
            assert "lt_kafka_dead_letters_total" in ok.text
            for headers in ({}, {"Authorization": "Bearer wrong"}):
                refused = await client.get("/metrics", headers=headers)
                assert refused.status_code == 404
                assert "lt_" not in refused.text
            assert (await client.get("/health")).status_code == 200
            assert (await client.get("/other", headers={"Authorization": "Bearer s3cret"})).status_code == 404
            assert (
                await client.post("/metrics", headers={"Authorization": "Bearer s3cret"})
            ).status_code == 405
    finally:
        await server.stop()
