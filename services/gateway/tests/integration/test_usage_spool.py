"""Usage events survive a broker outage and a gateway restart: spooled to disk, delivered later, none lost."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from leaky_common.events import Topics, UsageRecorded, parse_message
from leaky_common.kafka import EventPublisher, ensure_topics
from leaky_devinfra.infra import free_port, start_broker
from leaky_devinfra.proxy import FaultyProxy
from leaky_devinfra.testing import eventually
from lt_gateway.adapters.usage_sink import UsageSink
from lt_gateway.adapters.usage_spool import UsageSpool
from lt_gateway.settings import GatewaySettings

pytestmark = pytest.mark.integration


def event(i: int, run: str) -> UsageRecorded:
    return UsageRecorded(
        producer="gateway",
        request_id=f"{run}-{i}",
        reservation_id=f"res-{run}-{i}",
        user_id="u1",
        model="mock-gpt",
        provider="mock",
        prompt_tokens=10,
        completion_tokens=i,
        total_tokens=10 + i,
    )


async def test_events_recorded_while_the_broker_is_down_are_delivered_after_a_restart(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex
    spool_path = tmp_path / "spool.sqlite"
    events = [event(i, run) for i in range(20)]

    # 1. The broker is unreachable: every event lands in the durable spool, none waits in memory only.
    down = GatewaySettings(kafka_bootstrap=f"127.0.0.1:{free_port()}")
    sink = UsageSink(EventPublisher(down), 1000, spool_path=spool_path)
    await sink.start()
    for e in events[:10]:
        sink.record(e)
    assert sink.degraded
    assert sink.in_memory == 0 and sink.pending == 10
    # 2. The gateway stops (or crashes) before the broker comes back.
    await sink.stop(drain_timeout=0.2)
    spool = UsageSpool(spool_path)
    assert spool.count == 10
    spool.close()

    # 3. A new gateway process with the broker reachable delivers the spool, then serves from memory.
    up = GatewaySettings(kafka_bootstrap=kafka_bootstrap)
    await ensure_topics(up, [Topics.USAGE])
    sink = UsageSink(EventPublisher(up), 1000, spool_path=spool_path)
    await sink.start()
    assert await sink.drain(30)
    assert sink.pending == 0 and not sink.degraded
    for e in events[10:]:
        sink.record(e)
    assert await sink.drain(30)
    await sink.stop()
    spool = UsageSpool(spool_path)
    assert spool.count == 0
    spool.close()

    seen = await delivered(kafka_bootstrap, run, len(events))
    assert set(seen) == {e.event_id for e in events}
    assert all(n == 1 for n in seen.values())


async def delivered(bootstrap: str, run: str, expected: int) -> dict[str, int]:
    """How many times each event of `run` is on the usage topic (waits until `expected` distinct ones)."""
    consumer = AIOKafkaConsumer(
        Topics.USAGE, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    seen: dict[str, int] = {}
    try:

        async def all_delivered() -> bool:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for record in records:
                    msg = parse_message(record.value or b"")
                    if isinstance(msg, UsageRecorded) and msg.request_id.startswith(run):
                        seen[msg.event_id] = seen.get(msg.event_id, 0) + 1
            return len(seen) >= expected

        await eventually(all_delivered, 30, "every usage event on the topic")
    finally:
        await consumer.stop()
    return seen


def test_spool_keeps_an_event_once_and_returns_oldest_first(tmp_path: Path) -> None:
    spool = UsageSpool(tmp_path / "s.sqlite")
    a, b = event(1, "x"), event(2, "x")
    spool.append([(a, {}), (b, {})])
    spool.append([(a, {})])
    assert spool.count == 2
    rows = spool.oldest(10)
    assert [e.event_id for _, (e, _) in rows] == [a.event_id, b.event_id]
    spool.remove([rows[0][0]])
    assert spool.count == 1 and spool.oldest(10)[0][1] == (b, {})
    spool.close()


TRACE = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}


def test_spool_keeps_each_events_trace_headers_across_reopening(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    spool = UsageSpool(path)
    spool.append([(event(1, "t"), TRACE), (event(2, "t"), {})])
    spool.close()
    again = UsageSpool(path)
    assert [t for _, (_, t) in again.oldest(10)] == [TRACE, {}]
    again.close()


def test_a_spool_from_before_trace_headers_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path)
    old.execute(
        "CREATE TABLE usage_spool (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
        " event_id TEXT NOT NULL UNIQUE, body BLOB NOT NULL)"
    )
    left = event(1, "old")
    old.execute(
        "INSERT INTO usage_spool (event_id, body) VALUES (?, ?)", (left.event_id, left.model_dump_json())
    )
    old.commit()
    old.close()
    spool = UsageSpool(path)
    new = event(2, "old")
    spool.append([(new, TRACE)])
    assert [(e.event_id, t) for _, (e, t) in spool.oldest(10)] == [(left.event_id, {}), (new.event_id, TRACE)]
    spool.close()


async def test_broker_dying_mid_run_spools_events_until_it_is_back(tmp_path: Path) -> None:
    # The broker behind a proxy that resets every connection and refuses new ones, as a crashed broker would:
    # tansu keeps nothing across a restart, and a producer's retried batch racing the topic's re-creation
    # on a restarted one fails there for ever (offset 0 "already exists"), which would test tansu, not us.
    run = uuid.uuid4().hex
    proxy_port = free_port()
    broker = start_broker(advertised_port=proxy_port)  # clients learn the proxy's address, not the broker's
    proxy = FaultyProxy(proxy_port, "127.0.0.1", broker.port)
    serving = asyncio.create_task(proxy.serve(tmp_path / "proxy.sock"))
    await eventually((tmp_path / "proxy.sock").exists, 10, "proxy listening")
    settings = GatewaySettings(kafka_bootstrap=broker.url)
    await ensure_topics(settings, [Topics.USAGE])
    sink = UsageSink(
        EventPublisher(settings), 1000, spool_path=tmp_path / "spool.sqlite", publish_timeout_s=1.0
    )
    await sink.start()
    events = [event(i, run) for i in range(12)]
    try:
        sink.record(events[0])
        assert await sink.drain(30)
        assert not sink.degraded

        proxy.set_fault("drop", 3600)  # the broker is gone
        for e in events[1:6]:
            sink.record(e)
        # The failed publish moves the events to the durable spool; later events go there directly.
        await eventually(lambda: sink.degraded, 30, "sink degraded")
        for e in events[6:]:
            sink.record(e)
        assert sink.pending == 11 and sink.in_memory == 0

        proxy.set_fault("none", 0)  # back
        assert await sink.drain(60)
        assert not sink.degraded and sink.pending == 0
        seen = await delivered(broker.url, run, 12)
        # Everything recorded while the broker was gone reached it (a timed-out publish may have been
        # delivered as well as spooled: at-least-once, same event_id).
        assert {e.event_id for e in events} <= set(seen)
    finally:
        await sink.stop()
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        broker.stop()


def test_spool_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    spool = UsageSpool(path)
    spool.append([(event(1, "y"), {})])
    spool.close()
    again = UsageSpool(path)
    assert again.count == 1
    again.close()


def test_the_spool_and_its_wal_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite"
    path.write_bytes(b"")
    path.chmod(0o644)  # left world-readable by an older gateway: tightened at start
    spool = UsageSpool(path)
    try:
        spool.append([(event(1, "mode"), {})])
        files = [p for p in tmp_path.iterdir() if p.name.startswith("spool.sqlite")]
        assert {p.name for p in files} >= {"spool.sqlite", "spool.sqlite-wal"}
        assert {p.name: p.stat().st_mode & 0o777 for p in files} == {p.name: 0o600 for p in files}
    finally:
        spool.close()
