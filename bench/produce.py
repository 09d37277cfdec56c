"""The gateway's usage-event produce: one `send` per event against one record batch per partition.

    python bench/produce.py [--events 40000] [--batch 256] [--rounds 3]

Starts its own broker (tansu) on a free port and stops it afterwards. Publishes `--events` usage events in
batches of `--batch` (the usage sink's batch) both ways, alternating, `--rounds` times, and prints the
publishing process's CPU per event (user + system, which is what the gateway pays) and the wall time:
- sends: one `publish_raw` (aiokafka `send_and_wait`) per event, gathered, as the sink did before;
- batch: `EventPublisher.publish_batch`, one record batch per partition.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid

from leaky_common.events import Topics, UsageRecorded
from leaky_common.kafka import EventPublisher, RawMessage, ensure_topics
from leaky_common.settings import ServiceSettings
from leaky_devinfra.infra import start_broker

HEADERS = [("type", b"UsageRecorded.v1"), ("traceparent", b"00-" + b"a" * 32 + b"-" + b"b" * 16 + b"-00")]


def messages(count: int) -> list[RawMessage]:
    out: list[RawMessage] = []
    for i in range(count):
        event = UsageRecorded(
            request_id=uuid.uuid4().hex,
            reservation_id=uuid.uuid4().hex,
            user_id=f"user-{i % 200}",
            org_id=f"org-{i % 5}",
            key_id=f"key-{i % 400}",
            model="mock-gpt",
            provider="mock",
            prompt_tokens=50,
            completion_tokens=20,
            total_tokens=70,
        )
        out.append((event.model_dump_json().encode(), event.partition_key.encode(), HEADERS))
    return out


async def by_sends(publisher: EventPublisher, batch: list[RawMessage]) -> None:
    results = await asyncio.gather(
        *(publisher.publish_raw(Topics.USAGE, v, k, h) for v, k, h in batch), return_exceptions=True
    )
    assert not any(isinstance(r, BaseException) for r in results), results


async def by_batch(publisher: EventPublisher, batch: list[RawMessage]) -> None:
    errors = await publisher.publish_batch(Topics.USAGE, batch)
    assert not any(errors), errors


async def run(args: argparse.Namespace) -> None:
    broker = start_broker()
    try:
        settings = ServiceSettings(_env_file=None, kafka_bootstrap=broker.url.removeprefix("tcp://"))
        await ensure_topics(settings, [Topics.USAGE])
        publisher = EventPublisher(settings)
        await publisher.start()
        try:
            events = messages(args.events)
            ways = {"sends": by_sends, "batch": by_batch}
            await by_sends(publisher, events[: args.batch])  # metadata, connections
            figures: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
            for _ in range(args.rounds):
                for name, way in ways.items():
                    cpu0, wall0 = os.times(), time.monotonic()
                    for start in range(0, len(events), args.batch):
                        await way(publisher, events[start : start + args.batch])
                    cpu1, wall = os.times(), time.monotonic() - wall0
                    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
                    figures[name].append((cpu / len(events) * 1e6, len(events) / wall))
            for name, runs in figures.items():
                cpu_us = statistics.median(r[0] for r in runs)
                rate = statistics.median(r[1] for r in runs)
                print(
                    f"{name}: {cpu_us:.1f} us CPU per event (runs: {', '.join(f'{r[0]:.1f}' for r in runs)}),"
                    f" {rate:,.0f} events/s"
                )
        finally:
            await publisher.stop()
    finally:
        broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
