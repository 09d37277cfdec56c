"""Topics have the configured partitions, and the consumers of one group share them while each agent's usage
events (keyed by `UsageRecorded.partition_key`) still reach one consumer in the order they were sent."""

import asyncio
import uuid
from collections import defaultdict
from collections.abc import Callable

import pytest
from aiokafka import ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient

from leaky_common.events import AnyMessage, Topics, UsageRecorded
from leaky_common.kafka import EventConsumer, EventPublisher, Handler, client_options, ensure_topics
from leaky_common.settings import ServiceSettings
from leaky_devinfra.testing import eventually

pytestmark = pytest.mark.integration


def one_group(
    settings: ServiceSettings, topic: str, publisher: EventPublisher, handler_for: Callable[[str], Handler]
) -> dict[str, EventConsumer]:
    """Consumers "a" and "b" of one group on `topic`, each with its own handler (not started)."""
    return {
        name: EventConsumer(
            settings, group_id=f"g-{topic}", topics=[topic], handler=handler_for(name), publisher=publisher
        )
        for name in ("a", "b")
    }


def _usage(org: str, session: str | None, key: str | None, seq: int) -> UsageRecorded:
    return UsageRecorded(
        request_id=f"{session or key}-{seq}",
        org_id=org,
        session_id=session,
        key_id=key,
        model="m",
        provider="p",
    )


def test_the_key_is_the_agent_the_detectors_watch() -> None:
    assert _usage("o1", "s1", "k1", 0).partition_key == "o1:s:s1"
    assert _usage("o1", None, "k1", 0).partition_key == "o1:k:k1"
    # The same session id in two orgs is two agents.
    assert _usage("o2", "s1", "k1", 0).partition_key != _usage("o1", "s1", "k1", 0).partition_key
    anonymous = UsageRecorded(request_id="r9", model="m", provider="p")
    assert anonymous.partition_key == "-:r:r9"


async def test_topics_get_the_configured_partitions_and_existing_ones_are_kept(kafka_bootstrap: str) -> None:
    topic = f"test.parts.{uuid.uuid4().hex[:8]}"
    settings = ServiceSettings(service_name="t", kafka_bootstrap=kafka_bootstrap, kafka_partitions=3)
    await ensure_topics(settings, [topic])
    # A second start with another count leaves the topic as it is (keys keep their partition).
    await ensure_topics(settings.model_copy(update={"kafka_partitions": 6}), [topic])
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        described = {
            t["topic"]: len(t["partitions"]) for t in await admin.describe_topics([topic, Topics.dlq(topic)])
        }
    finally:
        await admin.close()
    assert described == {topic: 3, Topics.dlq(topic): 3}


async def test_two_consumers_share_the_partitions_and_each_agent_stays_in_order(kafka_bootstrap: str) -> None:
    topic = f"test.usage.{uuid.uuid4().hex[:8]}"
    settings = ServiceSettings(service_name="t", kafka_bootstrap=kafka_bootstrap, kafka_partitions=4)
    await ensure_topics(settings, [topic])
    publisher = EventPublisher(settings)
    await publisher.start()
    seen: dict[str, list[tuple[str, int]]] = defaultdict(list)  # consumer -> (agent key, seq)

    def handler_for(name: str) -> Handler:
        async def handle(message: AnyMessage, _record: ConsumerRecord[bytes, bytes]) -> None:
            assert isinstance(message, UsageRecorded)
            seen[name].append((message.partition_key, int(message.request_id.rsplit("-", 1)[1])))

        return handle

    consumers = one_group(settings, topic, publisher, handler_for)
    for consumer in consumers.values():
        await consumer.start()
    try:
        # Publish once the group is stable: every partition assigned, to exactly one member.
        def stable() -> bool:
            parts = [tp.partition for c in consumers.values() for tp in c.assignment]
            return sorted(parts) == [0, 1, 2, 3]

        await eventually(stable, timeout=30)
        assert all(c.assignment for c in consumers.values())
        agents = [("o1", f"s{i}", None) for i in range(8)] + [("o2", None, f"k{i}") for i in range(4)]
        for seq in range(10):
            for org, session, key in agents:
                event = _usage(org, session, key, seq)
                await publisher.publish(topic, event, key=event.partition_key)
        await eventually(lambda: sum(len(v) for v in seen.values()) == 10 * len(agents), timeout=30)
    finally:
        for consumer in consumers.values():
            await consumer.stop()
        await publisher.stop()

    by_agent: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for name, rows in seen.items():
        for agent, seq in rows:
            by_agent[agent][name].append(seq)
    assert len(by_agent) == len(agents)
    for agent, per_consumer in by_agent.items():
        assert len(per_consumer) == 1, f"{agent} was split across consumers: {dict(per_consumer)}"
        assert next(iter(per_consumer.values())) == list(range(10)), agent
    # Both members did work: the group spread the agents over them.
    assert set(seen) == {"a", "b"}


async def test_a_partition_taken_away_mid_batch_does_not_stop_the_consumer(kafka_bootstrap: str) -> None:
    """A rebalance while a batch is being handled takes some of its partitions away (a second instance
    starts, a killed one comes back). The consumer finishes the batch, commits only what it still owns, and
    goes on consuming: before, the lag sample of a revoked partition raised and ended the loop for good while
    the group went on giving the dead loop its partitions (the saga's replies then went unread)."""
    topic = f"test.rebalance.{uuid.uuid4().hex[:8]}"
    settings = ServiceSettings(service_name="t", kafka_bootstrap=kafka_bootstrap, kafka_partitions=2)
    await ensure_topics(settings, [topic])
    publisher = EventPublisher(settings)
    await publisher.start()
    seen: dict[str, set[str]] = defaultdict(set)
    gate = asyncio.Event()

    def handler_for(name: str) -> Handler:
        async def handle(message: AnyMessage, _record: ConsumerRecord[bytes, bytes]) -> None:
            assert isinstance(message, UsageRecorded)
            if name == "a":
                await gate.wait()  # "a" is busy with its first batch while the group rebalances
            seen[name].add(message.request_id)

        return handle

    consumers = one_group(settings, topic, publisher, handler_for)
    # Twenty agents: both partitions hold some (all on one of two: 1 chance in 2^19).
    before = [_usage("o1", f"s{i}", None, 0) for i in range(20)]
    for event in before:
        await publisher.publish(topic, event, key=event.partition_key)
    a, b = consumers["a"], consumers["b"]
    try:
        await a.start()
        await eventually(lambda: len(a.assignment) == 2, timeout=30)
        await b.start()
        # The group moved one of a's partitions to b while a was still in its batch.
        await eventually(lambda: len(a.assignment) == 1 and len(b.assignment) == 1, timeout=60)
        gate.set()
        after = [_usage("o1", f"s{i}", None, 1) for i in range(20)]
        for event in after:
            await publisher.publish(topic, event, key=event.partition_key)
        wanted = {e.request_id for e in before + after}
        await eventually(lambda: wanted <= seen["a"] | seen["b"], timeout=30)
        # a still reads the partition it kept: its new messages came to it, not only b's.
        kept = next(iter(a.assignment)).partition
        assert a.running and b.running
        assert any(r.endswith("-1") for r in seen["a"]), (kept, sorted(seen["a"]))
    finally:
        for consumer in consumers.values():
            await consumer.stop()
        await publisher.stop()
