"""Quota admission benchmark: `POST /internal/admit` against a real quota process, PostgreSQL, Redis and broker.

    python bench/quota_admission.py [--requests 4000] [--concurrency 32] [--sequential 500] [--settle 2000]

Starts its own broker, PostgreSQL, Redis and one quota process on free ports and stops them afterwards.
Prints admissions/s and p50/p99 admission latency for: one client (c=1); many users at the given concurrency;
every request on one user's pool (contention on one counter); every request with a session budget, an org
pool and the team pool in the same script (more caps per call). Then it shows exactness (500 concurrent
admissions against a pool that fits 50) and settlement throughput (UsageRecorded events over the broker until
every reservation is settled). Buckets are raised so the run measures governance rather than 429s.
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

from leaky_common.auth import Principal
from leaky_common.db import create_database, database_url_for
from leaky_common.events import Topics, UsageRecorded
from leaky_common.kafka import EventPublisher
from leaky_common.settings import ServiceSettings
from leaky_devinfra.infra import (
    free_port,
    start_broker,
    start_postgres,
    start_redis,
    stop_pid,
    wait_for_port,
)
from leaky_devinfra.testing import TEST_KEYS

ADMIN_KEY = "lt-bench-admin-" + uuid.uuid4().hex
# Signs the caller assertion as the gateway does (one reused for half its life, re-signed after).
SIGNER = TEST_KEYS.signer()
LIMITS = {
    "LT_KEY_REQUESTS_PER_PERIOD": "1000000000",
    "LT_KEY_TOKENS_PER_PERIOD": "1000000000000",
    "LT_USER_REQUESTS_PER_PERIOD": "1000000000",
    "LT_USER_TOKENS_PER_PERIOD": "1000000000000",
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Quota:
    """A tiny client of the quota service's internal and management API."""

    def __init__(self, session: aiohttp.ClientSession, url: str) -> None:
        self.s = session
        self.url = url

    async def headers(self, api_key: str) -> dict[str, str]:
        async with self.s.post(
            f"{self.url}/internal/authenticate", json={"api_key": api_key}, headers=TEST_KEYS.headers("quota")
        ) as r:
            return TEST_KEYS.headers("quota", Principal.model_validate_json(await r.text()))

    async def call(self, method: str, path: str, api_key: str = ADMIN_KEY, **kw: Any) -> Any:
        async with self.s.request(
            method, f"{self.url}{path}", headers=await self.headers(api_key), **kw
        ) as r:
            body = await r.json()
            assert r.status < 300, body
            return body

    async def user(self, quota: int, team_id: str | None = None) -> dict[str, Any]:
        body = {"email": f"{uuid.uuid4().hex[:10]}@bench", "name": "bench", "personal_quota": quota}
        if team_id:
            body["team_id"] = team_id
        return dict(await self.call("POST", "/v1/admin/users", json=body))

    async def admit(self, api_key: str, **extra: Any) -> tuple[int, dict[str, Any], float]:
        body = {
            "api_key": api_key,
            "request_id": uuid.uuid4().hex,
            "model": "mock-gpt",
            "provider": "mock",
            "prompt_tokens": 20,
            "max_output_tokens": 64,
            **extra,
        }
        t0 = time.perf_counter()
        async with self.s.post(f"{self.url}/internal/admit", json=body, headers=SIGNER.headers("quota")) as r:
            data = await r.json()
            return r.status, data, time.perf_counter() - t0


async def run(
    q: Quota, keys: list[str], requests: int, concurrency: int, **extra: Any
) -> tuple[list[float], float, int]:
    latencies: list[float] = []
    denied = 0
    todo = iter(range(requests))

    async def worker(i: int) -> None:
        nonlocal denied
        for n in todo:
            status, _, took = await q.admit(keys[(i + n) % len(keys)], **extra)
            latencies.append(took)
            denied += status != 200

    start = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return latencies, requests / (time.perf_counter() - start), denied


def row(name: str, lat: list[float], rps: float, denied: int) -> None:
    print(
        f"{name:44} {rps:9.0f}/s  p50 {percentile(lat, 0.5) * 1000:6.2f} ms  p99 {percentile(lat, 0.99) * 1000:6.2f} ms"
        + (f"  ({denied} denied)" if denied else "")
    )


async def bench(url: str, kafka: str, args: argparse.Namespace) -> None:
    connector = aiohttp.TCPConnector(limit=args.concurrency * 2)
    async with aiohttp.ClientSession(connector=connector) as session:
        q = Quota(session, url)
        team = await q.call(
            "POST", "/v1/admin/teams", json={"name": "bench-" + uuid.uuid4().hex[:6], "pool": 10**12}
        )
        users = [await q.user(10**12, team["id"]) for _ in range(args.concurrency)]
        keys = [u["api_key"] for u in users]
        await run(q, keys, 300, 8)  # warm-up
        print(f"\n{'scenario':44} {'admissions':>11}  latency")
        row("one client (c=1)", *await run(q, keys[:1], args.sequential, 1))
        row(f"{len(keys)} users, c={args.concurrency}", *await run(q, keys, args.requests, args.concurrency))
        row(
            f"one user's pool, c={args.concurrency}", *await run(q, keys[:1], args.requests, args.concurrency)
        )
        await q.call(
            "POST",
            "/v1/admin/pools",
            json={"owner_type": "org", "unit": "tokens", "limit": 10**13, "model": "mock-*"},
        )
        prices = {"input_usd_micros_per_mtok": 150_000, "output_usd_micros_per_mtok": 600_000}
        row(
            f"+ org pool + session budget, c={args.concurrency}",
            *await run(
                q, keys, args.requests, args.concurrency, session_id="bench-" + uuid.uuid4().hex, **prices
            ),
        )

        tight = await q.user(50 * 84)  # 50 requests of 20 prompt + 64 output tokens
        results = await asyncio.gather(*(q.admit(tight["api_key"], min_output_tokens=64) for _ in range(500)))
        admitted = [data for status, data, _ in results if status == 200]
        print(f"\nexactness: 500 concurrent admissions against a pool for 50 -> {len(admitted)} admitted")

        # Settlement: one UsageRecorded per reservation through the broker; time until all are settled.
        target = await q.user(10**12)
        reservations: list[dict[str, Any]] = []
        for chunk in range(0, args.settle, 200):
            got = await asyncio.gather(
                *(q.admit(target["api_key"]) for _ in range(min(200, args.settle - chunk)))
            )
            reservations.extend(data for status, data, _ in got if status == 200)
        publisher = EventPublisher(
            ServiceSettings(_env_file=None, kafka_bootstrap=kafka, service_name="bench")
        )
        await publisher.start()
        try:
            events = [
                UsageRecorded(
                    request_id=uuid.uuid4().hex,
                    reservation_id=a["reservation_id"],
                    user_id=target["id"],
                    key_id=a["principal"]["key_id"],
                    pool_id=a["pool_id"],
                    quota_source=a["quota_source"],
                    model="mock-gpt",
                    provider="mock",
                    total_tokens=50,
                )
                for a in reservations
            ]
            t0 = time.perf_counter()
            for chunk in range(0, len(events), 500):  # concurrent sends batch in the producer
                await asyncio.gather(
                    *(
                        publisher.publish(Topics.USAGE, e, key=target["id"])
                        for e in events[chunk : chunk + 500]
                    )
                )
            published = time.perf_counter() - t0
            while True:
                quota = await q.call("GET", "/v1/users/me/quota", target["api_key"])
                if quota["reserved_tokens"] == 0:
                    break
                await asyncio.sleep(0.05)
            took = time.perf_counter() - t0
        finally:
            await publisher.stop()
        assert quota["used_tokens"] == 50 * len(reservations), quota
        print(
            f"settlement: {len(reservations)} UsageRecorded events settled in {took:.2f} s "
            f"({len(reservations) / took:.0f}/s; publishing took {published:.2f} s); used == sum of usage"
        )


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--sequential", type=int, default=500)
    parser.add_argument("--settle", type=int, default=2000)
    args = parser.parse_args()

    broker, postgres, redis = start_broker(), start_postgres(), start_redis()
    quota: subprocess.Popen[bytes] | None = None
    try:
        db_url = asyncio.run(create_database(postgres.url, "lt_quota_bench"))
        port = free_port()
        env = {
            **os.environ,
            **LIMITS,
            "LT_PORT": str(port),
            "LT_DATABASE_URL": database_url_for(db_url, "lt_quota_bench"),
            "LT_REDIS_URL": redis.url,
            "LT_KAFKA_BOOTSTRAP": broker.url,
            **TEST_KEYS.env(),
            "LT_BOOTSTRAP_ADMIN_KEY": ADMIN_KEY,
            "LT_ENVIRONMENT": "development",
            "LT_LOG_LEVEL": "WARNING",
        }
        quota = subprocess.Popen([sys.executable, "-m", "lt_quota"], env=env, stdout=subprocess.DEVNULL)
        wait_for_port(port, timeout=60, popen=quota)
        url = f"http://127.0.0.1:{port}"
        asyncio.run(wait_ready(url))
        asyncio.run(bench(url, broker.url, args))
    finally:
        if quota is not None:
            stop_pid(quota.pid, popen=quota)
        for server in (redis, postgres, broker):
            server.stop()


if __name__ == "__main__":
    main()
