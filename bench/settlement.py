"""Settlement benchmark: how many `UsageRecorded` events per second quota settles, through the broker, against
a real quota process, PostgreSQL and Redis (started on free ports and stopped afterwards).

    python bench/settlement.py [--events 20000] [--users 20] [--rate 500] [--steady-events 3000]

1. burst: `--events` reservations (admitted over HTTP, spread over `--users` personal pools); quota is stopped,
   one usage event per reservation is published, quota is started again: a backlog. Prints events/s from the
   first settlement seen until every pool holds `reserved` 0 and `used` == the sum of the events, counting only
   the events settled in that time (so neither the producer's speed nor quota's start-up counts, nor a first
   batch that settled before anything showed).
2. steady: the same with quota running, published at `--rate` events/s (a gateway at full throughput); prints
   the rate reached, how long after the last event `reserved` reached 0 (the target is <= 1 s), and the events
   settled per second from the first publish to the last settlement (what `bench/hotpath.py --event-benches`
   judges the 5,000 events/s target by, run with `--rate 6000 --steady-events 24000`).
3. release: `--releases` calls of the gateway's `QuotaClient.release`, one at a time: p50 and p99.

CPU per event (quota, PostgreSQL with its backends, Redis, broker) is printed with the burst: events/s per
idle core, a figure that holds on a busy machine where wall-clock rates do not.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import uuid
from typing import Any

import aiohttp
import psutil
from redis.asyncio import Redis

from leaky_common.auth import Principal
from leaky_common.db import create_database, database_url_for
from leaky_common.events import Topics, UsageRecorded
from leaky_common.kafka import EventPublisher
from leaky_common.settings import ServiceSettings
from leaky_devinfra.infra import free_port, start_broker, start_postgres, start_redis, stop_pid, wait_for_port
from leaky_devinfra.testing import TEST_KEYS
from lt_gateway.adapters.quota_client import QuotaClient

ADMIN_KEY = "lt-bench-admin-" + uuid.uuid4().hex
PREFIX = "lt:"
LIMITS = {
    "LT_KEY_REQUESTS_PER_PERIOD": "1000000000",
    "LT_KEY_TOKENS_PER_PERIOD": "1000000000000",
    "LT_USER_REQUESTS_PER_PERIOD": "1000000000",
    "LT_USER_TOKENS_PER_PERIOD": "1000000000000",
}


async def admit_all(
    session: aiohttp.ClientSession, url: str, users: list[dict[str, Any]], n: int
) -> list[Any]:
    """`n` reservations spread over the users (16 concurrent admissions)."""
    out: list[tuple[dict[str, Any], dict[str, Any]]] = []
    queue = iter(range(n))

    async def worker() -> None:
        for i in queue:
            user = users[i % len(users)]
            body = {"api_key": user["api_key"], "request_id": uuid.uuid4().hex, "model": "mock-gpt",
                    "provider": "mock", "prompt_tokens": 20, "max_output_tokens": 100}  # fmt: skip
            async with session.post(
                f"{url}/internal/admit", json=body, headers=TEST_KEYS.headers("quota")
            ) as r:
                assert r.status == 200, await r.text()
                out.append((user, await r.json()))

    await asyncio.gather(*(worker() for _ in range(16)))
    return out


def events_for(admitted: list[Any]) -> list[UsageRecorded]:
    return [
        UsageRecorded(
            request_id=uuid.uuid4().hex,
            reservation_id=a["reservation_id"],
            user_id=u["id"],
            key_id=a["principal"]["key_id"],
            pool_id=a["pool_id"],
            quota_source=a["quota_source"],
            model="mock-gpt",
            provider="mock",
            total_tokens=50,
        )
        for u, a in admitted
    ]


# Each pool's counter key: quota prefixes it with its org's hash tag (`lt:{tag}:pool:<id>`, Redis Cluster).
_POOL_KEYS: dict[str, str] = {}


async def pool_key(redis: Redis[str], pool_id: str) -> str:
    """The counter key of `pool_id` (found once by its suffix; it exists once the pool has an admission)."""
    if pool_id not in _POOL_KEYS:
        async for key in redis.scan_iter(match=f"{PREFIX}*pool:{pool_id}"):
            _POOL_KEYS[pool_id] = key
            break
    return _POOL_KEYS.get(pool_id, f"{PREFIX}pool:{pool_id}")


async def pools_state(redis: Redis[str], pool_ids: list[str]) -> tuple[int, int]:
    """(sum of used, sum of reserved) over the pools."""
    keys = [await pool_key(redis, p) for p in pool_ids]
    pipe = redis.pipeline(transaction=False)
    for key in keys:
        pipe.hmget(key, ["used", "reserved"])
    rows = await pipe.execute()
    return sum(int(r[0] or 0) for r in rows), sum(int(r[1] or 0) for r in rows)


async def wait_drained(redis: Redis[str], pool_ids: list[str], used: int) -> None:
    """Poll every 10 ms until the pools hold `used` and nothing reserved."""
    drained = False
    while not drained:
        drained = await pools_state(redis, pool_ids) == (used, 0)
        await asyncio.sleep(0 if drained else 0.01)


async def publish(publisher: EventPublisher, events: list[UsageRecorded], rate: float | None) -> None:
    """Publish the events, as fast as possible (concurrent sends batch in the producer) or at `rate`/s."""
    step = 500 if rate is None else max(1, int(rate / 100))
    t0 = time.perf_counter()
    for i in range(0, len(events), step):
        await asyncio.gather(
            *(publisher.publish(Topics.USAGE, e, key=e.user_id) for e in events[i : i + step])
        )
        if rate is not None:
            ahead = t0 + (i + step) / rate - time.perf_counter()
            if ahead > 0:
                await asyncio.sleep(ahead)


async def setup_users(session: aiohttp.ClientSession, url: str, n: int) -> list[dict[str, Any]]:
    async with session.post(
        f"{url}/internal/authenticate", json={"api_key": ADMIN_KEY}, headers=TEST_KEYS.headers("quota")
    ) as r:
        admin = Principal.model_validate_json(await r.text())  # signed per call: assertions live 30 s
    users = []
    for _ in range(n):
        body = {"email": f"{uuid.uuid4().hex[:10]}@bench.example", "name": "b", "personal_quota": 10**12}
        async with session.post(
            f"{url}/v1/admin/users", json=body, headers=TEST_KEYS.headers("quota", admin)
        ) as r:
            users.append(await r.json())
    return users


async def progress(redis: Redis[str], pool_ids: list[str], before: int) -> float:
    """The moment `used` first moves past `before` (the first settlement of the backlog)."""
    moved = False
    while not moved:
        moved = (await pools_state(redis, pool_ids))[0] != before
        await asyncio.sleep(0 if moved else 0.005)
    return time.perf_counter()


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    """User + system CPU seconds of each process and its children (PostgreSQL's backends)."""
    out: dict[str, float] = {}
    for name, pid in pids.items():
        try:
            proc = psutil.Process(pid)
            procs = [proc, *proc.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        total = 0.0
        for p in procs:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                continue
        out[name] = total
    return out


def cpu_line(before: dict[str, float], after: dict[str, float], events: int) -> str:
    per = {k: 1000 * (after[k] - before.get(k, 0.0)) / events for k in after}
    total = sum(per.values())
    parts = ", ".join(f"{k} {v:.3f}" for k, v in per.items())
    return (
        f"  CPU ms per event: {parts}; total {total:.3f} ms -> {1000 / total:,.0f} events/s per idle core"
        f" (load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)"
    )


async def release_cost(
    session: aiohttp.ClientSession, url: str, user: dict[str, Any], n: int, pids: dict[str, int]
) -> None:
    """Latency of the gateway's release call (its QuotaClient, keep-alive), one at a time: what the release
    adds to an answer at most (the gateway overlaps it with preparing the answer); and its CPU."""
    if n <= 0:
        return
    client = QuotaClient(url, TEST_KEYS.signer(), 5)  # signs as the gateway does
    await client.start()
    took: list[float] = []
    try:
        admitted = await admit_all(session, url, [user], n)
        await asyncio.sleep(0.5)  # the admissions' durable records written
        cpu0, own0 = cpu_seconds(pids), time.process_time()
        for _, a in admitted:
            t0 = time.perf_counter()
            assert await client.release(a["reservation_id"], 30, 0, timeout_s=1)
            took.append(time.perf_counter() - t0)
        await asyncio.sleep(0.5)  # the releases' durable records written
        cpu1, own1 = cpu_seconds(pids), time.process_time()
    finally:
        await client.close()
    took.sort()
    print(
        f"release: {n} calls one at a time, p50 {1000 * took[n // 2]:.3f} ms, p99 {1000 * took[int(n * 0.99)]:.3f} ms"
        " (the gateway's QuotaClient against quota; an upper bound of what it adds to an answer)"
    )
    cpu0["client"], cpu1["client"] = own0, own1
    print(cpu_line(cpu0, cpu1, n).replace("per event", "per release"))


async def bench(
    quota: QuotaProcess, kafka: str, redis_url: str, args: argparse.Namespace, pids: dict[str, int]
) -> None:
    redis: Redis[str] = Redis.from_url(redis_url, decode_responses=True)
    publisher = EventPublisher(ServiceSettings(_env_file=None, kafka_bootstrap=kafka, service_name="bench"))
    await publisher.start()
    try:
        async with aiohttp.ClientSession() as s:
            users = await setup_users(s, quota.url, args.users)
            pool_ids = [u["pool_id"] for u in users]
            events = events_for(await admit_all(s, quota.url, users, args.events))
            quota.stop()
            await publish(publisher, events, None)
            quota.start()
            assert quota.popen is not None
            pids = {"quota": quota.popen.pid, **pids}
            t0 = await progress(redis, pool_ids, 0)
            cpu0 = cpu_seconds(pids)
            # Quota may settle a large share of the backlog in its first batch, before anything shows in Redis:
            # count only what it settles after the first settlement is seen (once, counting from that moment
            # everything, this printed 122,991 events/s).
            settled_then = (await pools_state(redis, pool_ids))[0] // 50
            used = 50 * len(events)
            await wait_drained(redis, pool_ids, used)
            took = time.perf_counter() - t0
            counted = len(events) - settled_then
            print(
                f"burst: {counted} of a backlog of {len(events)} events settled in {took:.2f} s after the first"
                f" settlement was seen = {counted / took:,.0f} events/s; used == sum of usage, reserved == 0"
            )
            print(cpu_line(cpu0, cpu_seconds(pids), counted))
            await wait_ready(quota.url)
            events = events_for(await admit_all(s, quota.url, users, args.steady_events))
            used += 50 * len(events)
            t0 = time.perf_counter()
            await publish(publisher, events, args.rate)
            published = time.perf_counter()
            await wait_drained(redis, pool_ids, used)
            done = time.perf_counter()
            print(
                f"steady: {len(events)} events published at {len(events) / (published - t0):,.0f}/s; reserved == 0"
                f" {1000 * (done - published):.0f} ms after the last one; used == sum of usage;"
                f" {len(events) / (done - t0):,.0f} events/s settled, first publish to last settlement"
            )
            await release_cost(s, quota.url, users[0], args.releases, pids)
    finally:
        await publisher.stop()
        await redis.aclose()  # type: ignore[attr-defined]  # the stubs predate aclose


async def wait_ready(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while True:
            try:
                async with s.get(f"{url}/ready") as r:
                    if r.status == 200 and all((await r.json())["checks"].values()):
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("quota did not become ready")
            await asyncio.sleep(0.2)


class QuotaProcess:
    """One quota process, stopped and started again by the burst run."""

    def __init__(self, env: dict[str, str], port: int) -> None:
        self.env = env
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "lt_quota"], env=self.env, stdout=subprocess.DEVNULL
        )
        wait_for_port(self.port, timeout=60, popen=self.popen)

    def stop(self) -> None:
        if self.popen is not None:
            stop_pid(self.popen.pid, popen=self.popen)
            self.popen = None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--rate", type=float, default=500.0, help="events/s of the steady run")
    parser.add_argument("--steady-events", type=int, default=3_000)
    parser.add_argument("--releases", type=int, default=2_000, help="release calls timed one at a time")
    args = parser.parse_args()

    broker, postgres, redis = start_broker(), start_postgres(), start_redis()
    quota: QuotaProcess | None = None
    try:
        db_url = asyncio.run(create_database(postgres.url, "lt_quota_bench"))
        port = free_port()
        env = {
            **os.environ,
            **LIMITS,
            "LT_PORT": str(port),
            "LT_DATABASE_URL": database_url_for(db_url, "lt_quota_bench"),
            "LT_REDIS_URL": redis.url,
            "LT_REDIS_PREFIX": PREFIX,
            "LT_KAFKA_BOOTSTRAP": broker.url,
            **TEST_KEYS.env(),
            "LT_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
            "LT_ENVIRONMENT": "development",
            "LT_LOG_LEVEL": "WARNING",
        }
        quota = QuotaProcess(env, port)
        quota.start()
        asyncio.run(wait_ready(quota.url))
        pids = {"postgres": postgres.pid, "redis": redis.pid, "broker": broker.pid}
        asyncio.run(bench(quota, broker.url, redis.url, args, pids))
    finally:
        if quota is not None:
            quota.stop()
        for server in (redis, postgres, broker):
            server.stop()


if __name__ == "__main__":
    main()
