"""Analytics benchmark: how many usage events per second the worker keeps up with, and detection latency.

    python bench/analytics.py [--events 20000] [--rates 500,1000,2000] [--seconds 10]

Starts its own broker (tansu) and PostgreSQL on free ports and the real worker (`python -m lt_analytics.worker`,
faust, detectors on, outbox relay on), and stops them afterwards. Prints:
1. drain throughput: `--events` events published up front, then the events/s recorded from the moment the last
   one is out until all are recorded (what the worker recorded while they were published is not counted);
2. sustained rates: for each rate, events published at that pace for `--seconds`, with the worst lag seen
   (published but not yet recorded, in events and in seconds at that rate) and whether it kept up;
3. detection latency: from publishing the 4th identical prompt of a session to the RequestFreeze command
   appearing on `quota.freeze-requests`, idle and under the highest sustained rate (median and max of 5 tries).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from leaky_common.db import apply_migrations, create_database, create_pool
from leaky_common.events import Topics, UsageRecorded
from leaky_common.kafka import ensure_topics
from leaky_common.settings import ServiceSettings
from leaky_devinfra.infra import start_broker, start_postgres
from leaky_devinfra.testing import eventually
from lt_analytics.adapters.repository import MIGRATIONS

USAGE_TOPIC = "usage.recorded"


def usage(i: int, session: str | None = None, fingerprint: str | None = None) -> bytes:
    event = UsageRecorded(
        request_id=uuid.uuid4().hex,
        user_id=f"user-{i % 200}",
        org_id=f"org-{i % 5}",
        team_id=f"team-{i % 20}",
        key_id=f"key-{i % 400}",
        session_id=session or f"sess-{i % 1000}",
        model="mock-gpt" if i % 3 else "big-model",
        provider="mock",
        prompt_tokens=50,
        completion_tokens=20,
        total_tokens=70,
        cost_usd_micros=35,
        latency_ms=12,
        prompt_fingerprint=fingerprint or uuid.uuid4().hex[:24],
    )
    return event.model_dump_json().encode()


async def recorded(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM request_log"))


async def drain(producer: AIOKafkaProducer, pool: asyncpg.Pool, events: int) -> float:
    base = await recorded(pool)
    t0 = time.monotonic()
    for i in range(events):
        await producer.send(USAGE_TOPIC, usage(i), key=f"user-{i % 200}".encode())
    await producer.flush()
    # The worker consumes while the events are published: count only what it records after they are all out,
    # and poll the count (a scan of the request log) no more than 4 times a second.
    started, at_start = time.monotonic(), await recorded(pool)
    await eventually(lambda: _at_least(pool, base + events), timeout=600, what="drain", interval=0.25)
    print(
        f"drain: published in {started - t0:.2f} s; {base + events - at_start:,} still to record then,"
        f" recorded in {time.monotonic() - started:.2f} s"
    )
    return (base + events - at_start) / (time.monotonic() - started)


def rss_mb(pid: int) -> float:
    """A process's resident set, in MB (Linux)."""
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1000


async def _at_least(pool: asyncpg.Pool, count: int) -> bool:
    return await recorded(pool) >= count


async def sustained(
    producer: AIOKafkaProducer, pool: asyncpg.Pool, rate: int, seconds: float
) -> tuple[int, bool]:
    """Publish at `rate` for `seconds`; returns the worst backlog seen and whether it was gone 2 s after."""
    base = await recorded(pool)
    sent, worst = 0, 0
    started = time.monotonic()
    next_probe = started
    while (elapsed := time.monotonic() - started) < seconds:
        due = int(elapsed * rate)
        while sent < due:
            await producer.send(USAGE_TOPIC, usage(sent), key=f"user-{sent % 200}".encode())
            sent += 1
        if time.monotonic() >= next_probe:
            worst = max(worst, base + sent - await recorded(pool))
            next_probe += 0.5
        await asyncio.sleep(0.005)
    await producer.flush()
    try:
        await eventually(lambda: _at_least(pool, base + sent), timeout=2.0, what="catch-up")
    except AssertionError:
        return worst, False
    return worst, True


async def detection(producer: AIOKafkaProducer, freezes: AIOKafkaConsumer) -> float:
    """Seconds from the 4th identical prompt of a fresh session to its RequestFreeze on quota.freeze-requests."""
    session = f"loop-{uuid.uuid4().hex[:8]}"
    for _ in range(3):
        await producer.send(USAGE_TOPIC, usage(0, session, "same-prompt"), key=b"user-0")
    await producer.flush()
    await asyncio.sleep(0.3)
    await producer.send_and_wait(USAGE_TOPIC, usage(0, session, "same-prompt"), key=b"user-0")
    sent = time.monotonic()
    while True:
        batch = await freezes.getmany(timeout_ms=100)
        for records in batch.values():
            for r in records:
                body = orjson.loads(r.value or b"{}")
                if body.get("type") == "RequestFreeze.v1" and body.get("target_id") == session:
                    return time.monotonic() - sent
        if time.monotonic() - sent > 30:
            return float("inf")


async def run(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="lt-bench-analytics-"))
    broker = start_broker(log_path=work / "broker.log")
    pg = start_postgres(work / "pg", log_path=work / "postgres.log")
    worker: asyncio.subprocess.Process | None = None
    try:
        url = await create_database(pg.url, "bench_analytics")
        pool = await create_pool(url, max_size=2)
        await apply_migrations(pool, MIGRATIONS)
        settings = ServiceSettings(kafka_bootstrap=broker.url)
        await ensure_topics(settings, [USAGE_TOPIC, Topics.ALERTS, Topics.FREEZE_REQUESTS])
        env = {
            **os.environ,
            "LT_KAFKA_BOOTSTRAP": broker.url,
            "LT_DATABASE_URL": url,
            "LT_FAUST_DATADIR": str(work / "faust"),
            "LT_LOG_LEVEL": "WARNING",
            "LT_WORKER_METRICS_PORT": "0",  # any free port: 8087 may belong to a running stack's worker
        }
        with (work / "worker.log").open("wb") as log:
            worker = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "lt_analytics.worker", env=env, stdout=log, stderr=subprocess.STDOUT
            )
        producer = AIOKafkaProducer(bootstrap_servers=broker.url, linger_ms=5, acks="all")
        await producer.start()
        freezes = AIOKafkaConsumer(
            Topics.FREEZE_REQUESTS, bootstrap_servers=broker.url, group_id=None, auto_offset_reset="earliest"
        )
        await freezes.start()
        try:
            # Warm-up: wait until the worker has joined and records events.
            await producer.send_and_wait(USAGE_TOPIC, usage(0), key=b"user-0")
            await eventually(lambda: _at_least(pool, 1), timeout=120, what="worker start")
            print(f"worker ready; logs in {work}")

            idle = [await detection(producer, freezes) for _ in range(5)]
            print(
                f"detection latency idle: median {statistics.median(idle) * 1000:.0f} ms, max {max(idle) * 1000:.0f} ms"
            )

            rate_eps = await drain(producer, pool, args.events)
            print(f"drain: {args.events} events recorded at {rate_eps:,.0f} events/s")
            print(f"worker RSS after the drain: {rss_mb(worker.pid):.0f} MB")

            for rate in [int(r) for r in args.rates.split(",")]:
                worst, kept_up = await sustained(producer, pool, rate, args.seconds)
                print(
                    f"sustained {rate:,} events/s for {args.seconds:.0f}s: worst backlog {worst:,} events"
                    f" (~{worst / rate:.2f}s), {'kept up' if kept_up else 'FELL BEHIND'}"
                )

            top = max(int(r) for r in args.rates.split(","))
            load = asyncio.create_task(sustained(producer, pool, top, args.seconds))
            await asyncio.sleep(1)
            loaded = [await detection(producer, freezes) for _ in range(3)]
            await load
            print(
                f"detection latency at {top:,} events/s: median {statistics.median(loaded) * 1000:.0f} ms,"
                f" max {max(loaded) * 1000:.0f} ms"
            )
        finally:
            await freezes.stop()
            await producer.stop()
            await pool.close()
    finally:
        if worker is not None and worker.returncode is None:
            worker.terminate()
            try:
                await asyncio.wait_for(worker.wait(), timeout=30)
            except TimeoutError:
                worker.kill()
                await worker.wait()
        pg.stop()
        broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rates", default="500,1000,2000")
    parser.add_argument("--seconds", type=float, default=10.0)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
