import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import NodeNotReadyError

from leaky_common.events import AnyMessage, Topics, UsageRecorded
from leaky_common.kafka import EventConsumer, EventPublisher, RawMessage, ensure_topics
from leaky_common.settings import ServiceSettings
from leaky_devinfra.testing import eventually as wait_until

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def fresh_topic(kafka_bootstrap: str) -> AsyncIterator[tuple[str, ServiceSettings, EventPublisher]]:
    """A topic of its own and a started publisher (stopped at the end)."""
    topic = f"test.{uuid.uuid4().hex[:8]}"
    settings = ServiceSettings(service_name="t", kafka_bootstrap=kafka_bootstrap)
    await ensure_topics(settings, [topic])
    publisher = EventPublisher(settings)
    await publisher.start()
    try:
        yield topic, settings, publisher
    finally:
        await publisher.stop()


async def test_publish_consume_commit_and_dlq(kafka_bootstrap: str) -> None:
    async with fresh_topic(kafka_bootstrap) as (topic, settings, publisher):
        seen: list[str] = []

        async def handler(message: AnyMessage, _record: object) -> None:
            assert isinstance(message, UsageRecorded)
            if message.model == "poison":
                raise ValueError("boom")
            seen.append(message.request_id)

        consumer = EventConsumer(
            settings,
            group_id=f"g-{topic}",
            topics=[topic],
            handler=handler,
            publisher=publisher,
            max_attempts=2,
            retry_backoff_s=0.01,
        )
        await consumer.start()
        try:
            for i in range(5):
                await publisher.publish(
                    topic, UsageRecorded(request_id=f"r{i}", model="m", provider="p"), key="k"
                )
            await publisher.publish(topic, UsageRecorded(request_id="bad", model="poison", provider="p"))
            await publisher.publish_raw(topic, b"not json", None, [])
            await wait_until(lambda: len(seen) == 5)
            assert seen == [f"r{i}" for i in range(5)]

            dlq = AIOKafkaConsumer(
                Topics.dlq(topic),
                bootstrap_servers=kafka_bootstrap,
                auto_offset_reset="earliest",
                group_id=None,
            )
            await dlq.start()
            try:
                got: list[bytes] = []
                deadline = asyncio.get_running_loop().time() + 20
                while len(got) < 2 and asyncio.get_running_loop().time() < deadline:
                    batch = await dlq.getmany(timeout_ms=500)
                    got.extend(r.value or b"" for rs in batch.values() for r in rs)
                assert len(got) == 2
                assert b"not json" in got
            finally:
                await dlq.stop()
        finally:
            await consumer.stop()

        # A second consumer in the same group resumes after the committed offsets: nothing is redelivered.
        again: list[str] = []

        async def handler2(message: AnyMessage, _record: object) -> None:
            assert isinstance(message, UsageRecorded)
            again.append(message.request_id)

        consumer2 = EventConsumer(
            settings, group_id=f"g-{topic}", topics=[topic], handler=handler2, publisher=publisher
        )
        await consumer2.start()
        try:
            await publisher.publish(topic, UsageRecorded(request_id="after", model="m", provider="p"))
            await wait_until(lambda: "after" in again)
            assert again == ["after"]
        finally:
            await consumer2.stop()


async def test_infrastructure_errors_are_retried_not_dead_lettered(kafka_bootstrap: str) -> None:
    async with fresh_topic(kafka_bootstrap) as (topic, settings, publisher):
        calls: list[str] = []

        async def flaky(message: AnyMessage, _record: object) -> None:
            assert isinstance(message, UsageRecorded)
            calls.append(message.request_id)
            if len(calls) <= 4:  # more failures than max_attempts: a database outage, say
                raise ConnectionRefusedError("postgres is down")

        consumer = EventConsumer(
            settings,
            group_id=f"g-{topic}",
            topics=[topic],
            handler=flaky,
            publisher=publisher,
            max_attempts=2,
            retry_backoff_s=0.01,
        )
        await consumer.start()
        try:
            await publisher.publish(topic, UsageRecorded(request_id="settle-me", model="m", provider="p"))
            await wait_until(lambda: consumer.processed == 1)
            assert calls == ["settle-me"] * 5
            dlq = AIOKafkaConsumer(
                Topics.dlq(topic),
                bootstrap_servers=kafka_bootstrap,
                auto_offset_reset="earliest",
                group_id=None,
            )
            await dlq.start()
            try:
                batch = await dlq.getmany(timeout_ms=1000)
                assert not any(batch.values())
            finally:
                await dlq.stop()
        finally:
            await consumer.stop()


async def test_a_wedged_consumer_is_reopened_and_consumes_on(kafka_bootstrap: str) -> None:
    """The state a broker outage left quota's command consumer in (aiokafka#1038 under uvloop): the client's
    metadata task dead and the coordinator unknown, so a commit waits for ever. The commit times out, the
    consumer is replaced, the batch in hand is redelivered (the idempotent handler absorbs it) and later
    messages are consumed."""
    async with fresh_topic(kafka_bootstrap) as (topic, settings, publisher):
        seen: list[str] = []
        wedge = asyncio.Event()

        async def handler(message: AnyMessage, _record: object) -> None:
            assert isinstance(message, UsageRecorded)
            seen.append(message.request_id)
            if message.request_id == "wedge" and not wedge.is_set():
                wedge.set()
                inner = consumer._consumer
                assert inner is not None
                inner._client._sync_task.cancel()  # the task aiokafka#1038 kills
                inner._client.coordinator_lookup = _broker_unreachable  # as during the outage
                inner._coordinator.coordinator_dead()

        async def _broker_unreachable(*_args: object) -> int:
            raise NodeNotReadyError("test: the broker is unreachable")

        consumer = EventConsumer(
            settings,
            group_id=f"g-{topic}",
            topics=[topic],
            handler=handler,
            publisher=publisher,
            commit_timeout_s=1.0,
        )
        await consumer.start()
        wedged = consumer._consumer
        try:
            await publisher.publish(topic, UsageRecorded(request_id="wedge", model="m", provider="p"))
            await wait_until(lambda: seen.count("wedge") == 2, timeout=30)  # redelivered by the new consumer
            assert wedged is not None and consumer._consumer is not wedged
            # Nothing of the old consumer lives on (its heartbeats would keep a dead member in the group).
            group = [
                getattr(wedged._coordinator, f"_{n}_task", None) for n in ("heartbeat", "commit_refresh")
            ]
            await wait_until(lambda: all(t is None or t.done() for t in group), timeout=10)
            await publisher.publish(topic, UsageRecorded(request_id="after", model="m", provider="p"))
            await wait_until(lambda: "after" in seen, timeout=30)
            assert consumer.running
        finally:
            await consumer.stop()


async def test_a_failure_in_the_loop_itself_reopens_the_consumer(kafka_bootstrap: str) -> None:
    """Whatever goes wrong between the handler and the commit (a bug; the handler's own errors are retried or
    dead-lettered) must not end the loop while the group still gives it partitions: the consumer is re-opened
    from the committed offsets, so the batch in hand comes again and later messages are consumed."""
    async with fresh_topic(kafka_bootstrap) as (topic, settings, publisher):
        seen: list[str] = []

        async def handler(message: AnyMessage, _record: object) -> None:
            assert isinstance(message, UsageRecorded)
            seen.append(message.request_id)

        consumer = EventConsumer(
            settings, group_id=f"g-{topic}", topics=[topic], handler=handler, publisher=publisher
        )
        sample = consumer._sample_lag
        failures: list[object] = []

        def broken_once(tp: TopicPartition, position: int) -> None:
            if not failures:
                failures.append(tp)
                raise RuntimeError("test: a bug after the handler")
            sample(tp, position)

        consumer._sample_lag = broken_once  # type: ignore[method-assign]
        await consumer.start()
        first = consumer._consumer
        try:
            await publisher.publish(topic, UsageRecorded(request_id="first", model="m", provider="p"))
            await wait_until(lambda: seen.count("first") == 2, timeout=30)  # not committed: delivered again
            assert consumer._consumer is not first
            await publisher.publish(topic, UsageRecorded(request_id="after", model="m", provider="p"))
            await wait_until(lambda: "after" in seen, timeout=30)
            assert consumer.running and seen.count("first") == 2
        finally:
            await consumer.stop()


async def test_a_published_batch_lands_as_single_sends_would(kafka_bootstrap: str) -> None:
    """publish_batch: each key on the partition `send` puts it on, in order within it, with its headers; a
    message too large for a record batch fails alone."""
    async with fresh_topic(kafka_bootstrap) as (topic, _settings, publisher):
        partitions = sorted(await publisher._ready_producer().partitions_for(topic))
        assert len(partitions) > 1
        keys = [f"user-{i % 7}".encode() for i in range(300)]  # more than one record batch per partition
        messages = [
            (f"{i}:".encode() + b"x" * 300, key, [("n", str(i).encode())]) for i, key in enumerate(keys)
        ]
        huge: RawMessage = (b"x" * 2_000_000, b"user-0", [])
        errors = await publisher.publish_batch(topic, [*messages[:150], huge, *messages[150:]])
        assert errors[150] is not None and errors[:150] + errors[151:] == [None] * 300
        expected = {}  # where one send of each key lands
        for key in sorted(set(keys)):
            sent = await publisher._ready_producer().send_and_wait(topic, b"probe", key=key)
            expected[key] = sent.partition

        consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest")
        await consumer.start()
        try:
            got: list[tuple[int, bytes, bytes, dict[str, bytes]]] = []
            deadline = asyncio.get_running_loop().time() + 20
            while len(got) < 307 and asyncio.get_running_loop().time() < deadline:
                batch = await consumer.getmany(timeout_ms=500)
                got.extend(
                    (r.partition, r.key or b"", r.value or b"", dict(r.headers))
                    for rs in batch.values()
                    for r in rs
                )
        finally:
            await consumer.stop()
        batched = [g for g in got if g[2] != b"probe"]
        assert len(batched) == 300 and len(got) == 307
        for partition, key, value, headers in batched:
            assert partition == expected[key]
            assert headers == {"n": value.split(b":")[0]}
        for key in expected:  # in the order published, per key (and so per partition)
            order = [int(v.split(b":")[0]) for _, k, v, _ in batched if k == key]
            assert order == sorted(order) and len(order) == keys.count(key)
