import uuid

import pytest
from aiokafka import AIOKafkaConsumer

from leaky_common.events import AnyMessage, Topics, UsageRecorded
from leaky_common.kafka import EventPublisher, ensure_topics
from leaky_common.kafka_batch import BatchEventConsumer
from leaky_common.settings import ServiceSettings
from leaky_devinfra.testing import eventually as wait_until

pytestmark = pytest.mark.integration


async def test_batches_are_handled_at_once_and_a_poisoned_batch_one_by_one(kafka_bootstrap: str) -> None:
    topic = f"test.{uuid.uuid4().hex[:8]}"
    settings = ServiceSettings(service_name="t", kafka_bootstrap=kafka_bootstrap)
    await ensure_topics(settings, [topic])
    publisher = EventPublisher(settings)
    await publisher.start()
    batches: list[list[str]] = []
    one_by_one: list[str] = []

    async def batch_handler(messages: list[AnyMessage]) -> None:
        ids = [m.request_id for m in messages if isinstance(m, UsageRecorded)]
        if "poison" in ids:
            raise ValueError("boom")
        batches.append(ids)

    async def handler(message: AnyMessage, _record: object) -> None:
        assert isinstance(message, UsageRecorded)
        if message.request_id == "poison":
            raise ValueError("boom")
        one_by_one.append(message.request_id)

    consumer = BatchEventConsumer(
        settings,
        group_id=f"g-{topic}",
        topics=[topic],
        handler=handler,
        batch_handler=batch_handler,
        publisher=publisher,
    )
    try:
        # One key: one partition, so the batches keep the order the events were sent in.
        for i in range(30):  # waiting before the consumer starts: fetched as batches
            await publisher.publish(
                topic, UsageRecorded(request_id=f"r{i}", model="m", provider="p"), key="agent"
            )
        await consumer.start()
        await wait_until(lambda: sum(map(len, batches)) == 30, what="30 handled in batches")
        assert [i for b in batches for i in b] == [f"r{i}" for i in range(30)]
        assert max(map(len, batches)) > 1 and one_by_one == []

        for request_id in ("a", "poison", "b"):
            await publisher.publish(
                topic, UsageRecorded(request_id=request_id, model="m", provider="p"), key="agent"
            )
        await publisher.publish_raw(topic, b"not json", None, [])
        await wait_until(lambda: {"a", "b"} <= set(one_by_one) | {i for b in batches for i in b})
        assert "poison" not in one_by_one

        dlq = AIOKafkaConsumer(
            Topics.dlq(topic), bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest", group_id=None
        )
        await dlq.start()
        try:
            got: list[bytes] = []

            async def dead_lettered() -> bool:
                batch = await dlq.getmany(timeout_ms=200)
                got.extend(r.value or b"" for rs in batch.values() for r in rs)
                return len(got) >= 2

            await wait_until(dead_lettered, what="the poison and the junk dead-lettered")
            assert b"not json" in got and any(b"poison" in g for g in got)
        finally:
            await dlq.stop()
    finally:
        await consumer.stop()
        await publisher.stop()
