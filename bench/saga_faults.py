"""Purchase-saga fault injection: many purchases through real processes while things go wrong.

    python bench/saga_faults.py [--purchases 1000] [--instances 2] [--kills 2] [--seed 7]

Starts its own broker, PostgreSQL and Redis on free ports, the real quota service and N purchase-saga
instances as subprocesses, and the fake payment provider in this process. Then it sends purchases with a
random mix of test cards (succeeds, declined, times out, fails at capture) and, in between:

- kills saga instances with SIGKILL (twice by default) while purchases are in flight and restarts them;
- man-in-the-middles both directions of the saga's Kafka traffic (commands to quota, quota's replies) with a
  relay that delays, duplicates, reorders and drops messages (the saga's command and reply topics are
  private topics that the relay forwards to and from quota's real ones);
- repeats some client requests with the same Idempotency-Key, against another instance when one is down.

At the end it checks, from the stores of record (saga and quota databases, the provider's state, the events
topic): every purchase ended COMPLETED, COMPENSATED or FAILED; per purchase, tokens credited (quota's
applied adjustments) == tokens bought iff the payment was captured, else both are zero; no purchase has more
than one charge or any uncaptured hold left; each purchase's terminal event was published. It prints the
figures and exits non-zero on any violation. The integration test `test_faults.py` runs the same code with a
few hundred purchases.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp
import asyncpg
import uvicorn
from aiokafka import AIOKafkaConsumer

from leaky_common.auth import Principal
from leaky_common.db import create_database
from leaky_common.events import Topics, parse_message
from leaky_common.kafka import ensure_topics
from leaky_common.settings import ServiceSettings
from leaky_devinfra.chaos import ChaosRelay
from leaky_devinfra.fakes.payments import create_fakepay_app
from leaky_devinfra.infra import free_port, start_broker, start_postgres, start_redis, wait_for_port
from leaky_devinfra.testing import TEST_KEYS

__all__ = ["FaultConfig", "FaultReport", "Infra", "run_faults"]

TERMINAL = ("COMPLETED", "COMPENSATED", "FAILED")
# Test cards and their weights in the mix.
CARDS = {
    "pm_card_visa": 0.55,
    "pm_card_chargeDeclined": 0.15,
    "pm_card_timeout": 0.10,
    "pm_card_captureFails": 0.20,
}


@dataclass(frozen=True)
class Infra:
    """Where the broker, PostgreSQL (server URL) and Redis are."""

    kafka_bootstrap: str
    postgres_url: str
    redis_url: str


@dataclass(frozen=True)
class FaultConfig:
    purchases: int = 1000
    concurrency: int = 24
    # Purchases started per second (a sustained load rather than one burst); 0: as fast as possible.
    rate_per_s: float = 20.0
    # The saga's reply deadline per step (short, so that some credits time out and are compensated).
    step_deadline_s: float = 8.0
    instances: int = 2
    kills: int = 2
    users: int = 4
    seed: int = 7
    # Chaos on the saga's Kafka traffic, per message.
    duplicate_p: float = 0.15
    delay_p: float = 0.25
    max_delay_s: float = 1.5
    drop_p: float = 0.02
    # Clients repeating a request with the same Idempotency-Key.
    repeat_p: float = 0.05
    fakepay_hang_s: float = 2.0
    settle_timeout_s: float = 120.0


@dataclass
class FaultReport:
    """What happened and what the checks found (`violations` empty means the run passed)."""

    purchases: int = 0
    rate_per_s: float = 0.0
    by_status: Counter[str] = field(default_factory=Counter)
    by_card: dict[str, Counter[str]] = field(default_factory=dict)
    kills: int = 0
    chaos: Counter[str] = field(default_factory=Counter)
    client_retries: int = 0
    client_repeats: int = 0
    steps: Counter[str] = field(default_factory=Counter)
    tokens_bought_completed: int = 0
    tokens_credited_net: int = 0
    cents_captured_net: int = 0
    cents_expected: int = 0
    slowest_stop_s: float = 0.0
    latency_p50_s: float = 0.0
    latency_p99_s: float = 0.0
    elapsed_s: float = 0.0
    violations: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """Human-readable summary."""
        out = [
            f"purchases: {self.purchases} ({self.rate_per_s:g}/s) in {self.elapsed_s:.1f}s; "
            f"statuses {dict(self.by_status)}",
            f"saga instances killed with SIGKILL and restarted: {self.kills}",
            f"chaos on Kafka: {dict(self.chaos)}; client retries {self.client_retries}, "
            f"repeated requests {self.client_repeats}",
        ]
        out += [f"  {card}: {dict(outcomes)}" for card, outcomes in sorted(self.by_card.items())]
        out.append("step log: " + ", ".join(f"{k} {v}" for k, v in sorted(self.steps.items())))
        out += [
            f"tokens bought by COMPLETED purchases {self.tokens_bought_completed}; "
            f"tokens credited net (quota adjustments) {self.tokens_credited_net}",
            f"cents captured net (provider) {self.cents_captured_net}; expected {self.cents_expected}",
            f"purchase latency under faults (request -> terminal): p50 {self.latency_p50_s * 1000:.0f} ms, "
            f"p99 {self.latency_p99_s * 1000:.0f} ms",
            f"slowest graceful stop (SIGTERM -> exit): {self.slowest_stop_s:.1f}s",
            f"violations: {len(self.violations)}",
            *(f"  - {v}" for v in self.violations[:20]),
        ]
        return out


class _Process:
    """One service subprocess (restartable), its output in a log file."""

    def __init__(self, name: str, module: str, env: dict[str, str], log_dir: Path, port: int) -> None:
        self.name, self.module, self.env, self.port = name, module, env, port
        self.log_path = log_dir / f"{name}.log"
        self._log: IO[bytes] | None = None
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            [sys.executable, "-m", self.module],
            env={**os.environ, **self.env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    async def ready(self, timeout: float = 60.0) -> None:
        assert self.popen is not None
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.popen.poll() is not None:
                    raise RuntimeError(
                        f"{self.name} exited with {self.popen.returncode}; see {self.log_path}"
                    )
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with session.get(f"{self.url}/ready") as resp:
                        if resp.status == 200:
                            return
                await asyncio.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready after {timeout}s; see {self.log_path}")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, leases and in-flight work are simply abandoned."""
        assert self.popen is not None
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait()
        self._close_log()

    def stop(self, timeout: float = 20.0) -> float:
        """SIGTERM and wait; returns seconds taken (a hang past `timeout` is killed and raises)."""
        if self.popen is None or self.popen.poll() is not None:
            self._close_log()
            return 0.0
        started = time.monotonic()
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(f"{self.name} did not stop within {timeout}s of SIGTERM") from None
        finally:
            self._close_log()
        return time.monotonic() - started

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


@contextlib.asynccontextmanager
async def _fakepay(hang_s: float) -> AsyncIterator[tuple[str, Any]]:
    """The fake provider over real HTTP in this event loop; yields its URL and its in-memory store."""
    app = create_fakepay_app(hang_s=hang_s)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", ws="none")
    )
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                raise RuntimeError("fakepay exited")
            await asyncio.sleep(0.02)
        yield f"http://127.0.0.1:{port}", app.state.store
    finally:
        server.should_exit = True
        await task


def _headers(principal: Principal, audience: str = "saga") -> dict[str, str]:
    return TEST_KEYS.headers(audience, principal)


async def _make_users(quota_url: str, admin_key: str, count: int) -> list[Principal]:
    async with aiohttp.ClientSession() as s:
        async with s.post(
            f"{quota_url}/internal/authenticate",
            json={"api_key": admin_key},
            headers=TEST_KEYS.headers("quota"),
        ) as resp:
            assert resp.status == 200, await resp.text()
            admin = Principal.model_validate(await resp.json())
        users = []
        for i in range(count):
            async with s.post(
                f"{quota_url}/v1/admin/users",
                json={"email": f"buyer{i}-{uuid.uuid4().hex[:6]}@example.com", "name": f"Buyer {i}"},
                headers=_headers(admin, "quota"),
            ) as resp:
                assert resp.status == 201, await resp.text()
                body = await resp.json()
            users.append(Principal(user_id=body["id"], org_id=admin.org_id, role="user"))
        return users


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run_faults(infra: Infra, config: FaultConfig, log_dir: Path | None = None) -> FaultReport:
    """Run the whole scenario and return its report (raises only if the set-up itself fails)."""
    rng = random.Random(config.seed)
    report = FaultReport(rate_per_s=config.rate_per_s)
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="lt-saga-faults-"))
    suffix = uuid.uuid4().hex[:8]
    quota_db = await create_database(infra.postgres_url, f"faults_quota_{suffix}")
    saga_db = await create_database(infra.postgres_url, f"faults_saga_{suffix}")
    # The saga talks to private topics; the chaos relay carries them to and from quota's real ones.
    commands_in = f"chaos.quota.commands.{suffix}"
    replies_out = f"chaos.saga.replies.{suffix}"
    events_topic = f"purchase.events.{suffix}"
    await ensure_topics(
        ServiceSettings(kafka_bootstrap=infra.kafka_bootstrap),
        [commands_in, replies_out, events_topic, Topics.QUOTA_COMMANDS, Topics.SAGA_REPLIES],
    )
    admin_key = f"lt-admin-{uuid.uuid4().hex}"
    common = {
        "LT_KAFKA_BOOTSTRAP": infra.kafka_bootstrap,
        "LT_ENVIRONMENT": "test",
        "LT_LOG_LEVEL": "INFO",
        **TEST_KEYS.env(),
    }
    quota = _Process(
        "quota",
        "lt_quota",
        {
            **common,
            "LT_PORT": str(port := free_port()),
            "LT_DATABASE_URL": quota_db,
            "LT_REDIS_URL": infra.redis_url,
            "LT_REDIS_PREFIX": f"faults{suffix}:",
            "LT_BOOTSTRAP_ADMIN_KEY": admin_key,
            "LT_CONSUMER_GROUP": f"quota-{suffix}",
        },
        log_dir,
        port,
    )
    sagas: list[_Process] = []
    chaos = ChaosRelay(
        infra.kafka_bootstrap,
        {commands_in: Topics.QUOTA_COMMANDS, Topics.SAGA_REPLIES: replies_out},
        config,
        rng,
    )
    started = time.monotonic()
    async with _fakepay(config.fakepay_hang_s) as (fakepay_url, store):
        for i in range(config.instances):
            port = free_port()
            saga_env = {
                **common,
                "LT_PORT": str(port),
                "LT_SERVICE_NAME": "purchase-saga",
                "LT_INSTANCE_ID": f"saga-{i}",
                "LT_DATABASE_URL": saga_db,
                "LT_PAYMENT_PROVIDER_URL": fakepay_url,
                "LT_PAYMENT_TIMEOUT_S": "1.0",
                "LT_RETRY_BACKOFF_S": "0.2",
                "LT_STEP_DEADLINE_S": str(config.step_deadline_s),
                "LT_COMMAND_RESEND_S": "2",
                "LT_LEASE_S": "5",
                "LT_RECOVERY_INTERVAL_S": "1",
                "LT_CONSUMER_GROUP": f"saga-{suffix}",
                "LT_QUOTA_COMMANDS_TOPIC": commands_in,
                "LT_SAGA_REPLIES_TOPIC": replies_out,
                "LT_PURCHASE_EVENTS_TOPIC": events_topic,
            }
            sagas.append(_Process(f"saga-{i}", "lt_saga", saga_env, log_dir, port))
        try:
            quota.start()
            for saga in sagas:
                saga.start()
            await chaos.start()
            await quota.ready()
            for saga in sagas:
                await saga.ready()
            users = await _make_users(quota.url, admin_key, config.users)
            ids = await _drive_load(config, rng, sagas, users, report)
            await _wait_terminal(saga_db, ids, config.settle_timeout_s)
            report.elapsed_s = time.monotonic() - started
            await _verify(report, ids, saga_db, quota_db, store, infra.kafka_bootstrap, events_topic)
        finally:
            report.chaos = chaos.stats
            await chaos.stop()
            for process in [*sagas, quota]:
                try:
                    report.slowest_stop_s = max(report.slowest_stop_s, process.stop())
                except RuntimeError as exc:  # a shutdown hang is a finding, not a crash of the harness
                    report.violations.append(str(exc))
    return report


async def _drive_load(
    config: FaultConfig,
    rng: random.Random,
    sagas: list[_Process],
    users: list[Principal],
    report: FaultReport,
) -> dict[str, str]:
    """Send the purchases (killing and restarting instances on the way); returns purchase id -> card."""
    cards, weights = list(CARDS), list(CARDS.values())
    plan = [
        (f"faults-{i}", rng.choice(users), rng.choices(cards, weights)[0], rng.randint(1, 50) * 100)
        for i in range(config.purchases)
    ]
    kill_at = {int(config.purchases * (k + 1) / (config.kills + 1)): k for k in range(config.kills)}
    ids: dict[str, str] = {}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(plan)):
        queue.put_nowait(i)
    kills: list[asyncio.Task[None]] = []

    async def restart(saga: _Process) -> None:
        saga.kill()
        report.kills += 1
        await asyncio.sleep(0.5)
        saga.start()
        await saga.ready()

    async def post(session: aiohttp.ClientSession, index: int) -> None:
        key, user, card, tokens = plan[index]
        body = {"tokens": tokens, "payment_method": card}
        headers = {**_headers(user), "Idempotency-Key": key}
        attempt = 0
        while True:
            saga = sagas[(index + attempt) % len(sagas)]
            try:
                async with session.post(f"{saga.url}/v1/purchases", json=body, headers=headers) as resp:
                    data = await resp.json()
                    if resp.status not in (200, 202):
                        raise RuntimeError(f"purchase {key}: HTTP {resp.status} {data}")
                    ids[data["id"]] = card
                    if rng.random() < config.repeat_p:  # a client retrying a request that succeeded
                        report.client_repeats += 1
                        async with session.post(
                            f"{sagas[(index + 1) % len(sagas)].url}/v1/purchases", json=body, headers=headers
                        ) as again:
                            repeat = await again.json()
                            if again.status == 200 and repeat["id"] != data["id"]:
                                report.violations.append(f"{key}: a repeat made a second purchase")
                    return
            except (aiohttp.ClientError, OSError):
                # That instance is down (killed): retry the same request, same key, on the next one.
                attempt += 1
                report.client_retries += 1
                await asyncio.sleep(0.1)

    began = time.monotonic()

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            index = queue.get_nowait()
            if config.rate_per_s:
                await asyncio.sleep(max(0.0, began + index / config.rate_per_s - time.monotonic()))
            if index in kill_at:
                victim = sagas[kill_at[index] % len(sagas)]
                kills.append(asyncio.create_task(restart(victim)))
            await post(session, index)

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        await asyncio.gather(*(worker(session) for _ in range(config.concurrency)))
        await asyncio.gather(*kills)
    report.purchases = len(ids)
    return ids


async def _wait_terminal(saga_db: str, ids: dict[str, str], timeout: float) -> None:
    conn = await asyncpg.connect(saga_db)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            left = await conn.fetchval(
                "SELECT count(*) FROM purchases WHERE status <> ALL($1::text[])", list(TERMINAL)
            )
            if left == 0:
                return
            await asyncio.sleep(0.25)
    finally:
        await conn.close()


async def _verify(
    report: FaultReport,
    ids: dict[str, str],
    saga_db: str,
    quota_db: str,
    store: Any,
    bootstrap: str,
    events_topic: str,
) -> None:
    violations = report.violations
    conn = await asyncpg.connect(saga_db)
    try:
        purchases = {
            r["id"]: r
            for r in await conn.fetch(
                "SELECT id, status, amount, payment_amount_minor, "
                "extract(epoch FROM updated_at - created_at) AS seconds FROM purchases"
            )
        }
        for r in await conn.fetch(
            "SELECT step || ':' || status AS s, count(*) AS n FROM saga_steps GROUP BY 1"
        ):
            report.steps[r["s"]] = r["n"]
    finally:
        await conn.close()
    conn = await asyncpg.connect(quota_db)
    try:
        credited = {
            r["purchase_id"]: int(r["net"])
            for r in await conn.fetch(
                "SELECT purchase_id, sum(CASE kind WHEN 'credit' THEN amount ELSE -amount END) AS net "
                "FROM adjustments WHERE applied GROUP BY purchase_id"
            )
        }
    finally:
        await conn.close()
    captured: Counter[str] = Counter()
    charges: Counter[str] = Counter()
    intent_purchase = {}
    for intent in store.intents.values():
        purchase_id = intent["metadata"].get("purchase_id", "")
        intent_purchase[intent["id"]] = purchase_id
        captured[purchase_id] += intent["amount_received"]
        charges[purchase_id] += intent["amount_received"] > 0
        if intent["status"] == "requires_capture":
            violations.append(f"{purchase_id}: authorization {intent['id']} left uncaptured and unreleased")
    for refund in store.refunds.values():
        captured[intent_purchase[refund["payment_intent"]]] -= refund["amount"]

    if set(purchases) != set(ids):
        violations.append(
            f"{len(set(ids) ^ set(purchases))} purchases differ between the API and the database"
        )
    latencies = []
    for purchase_id, row in purchases.items():
        status, card = row["status"], ids.get(purchase_id, "?")
        report.by_status[status] += 1
        report.by_card.setdefault(card, Counter())[status] += 1
        tokens, cents = credited.get(purchase_id, 0), captured[purchase_id]
        report.tokens_credited_net += tokens
        report.cents_captured_net += cents
        if charges[purchase_id] > 1:
            violations.append(f"{purchase_id}: charged {charges[purchase_id]} times")
        if status == "COMPLETED":
            report.tokens_bought_completed += row["amount"]
            report.cents_expected += row["payment_amount_minor"]
            latencies.append(float(row["seconds"]))
            if (tokens, cents) != (row["amount"], row["payment_amount_minor"]):
                violations.append(f"{purchase_id}: COMPLETED but credited {tokens} tokens, captured {cents}")
        elif status in ("COMPENSATED", "FAILED"):
            if (tokens, cents) != (0, 0):
                violations.append(f"{purchase_id}: {status} but credited {tokens} tokens, captured {cents}")
        else:
            violations.append(f"{purchase_id}: still {status}")
    report.latency_p50_s = _percentile(latencies, 0.5)
    report.latency_p99_s = _percentile(latencies, 0.99)
    await _verify_events(report, purchases, bootstrap, events_topic)


async def _verify_events(
    report: FaultReport, purchases: dict[str, Any], bootstrap: str, topic: str, timeout: float = 30.0
) -> None:
    """Every purchase's terminal event is on the topic, of the type matching its final status."""
    expected = {
        pid: f"Purchase{row['status'].title()}.v1"
        for pid, row in purchases.items()
        if row["status"] in TERMINAL
    }
    seen: dict[str, set[str]] = {}
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not all(pid in seen for pid in expected):
            for records in (await consumer.getmany(timeout_ms=300)).values():
                for record in records:
                    message = parse_message(record.value or b"")
                    seen.setdefault(getattr(message, "purchase_id", ""), set()).add(message.type)
    finally:
        await consumer.stop()
    for pid, event_type in expected.items():
        if seen.get(pid) != {event_type}:
            report.violations.append(f"{pid}: expected event {event_type}, saw {sorted(seen.get(pid, ()))}")


async def _main(args: argparse.Namespace) -> int:
    log_dir = Path(tempfile.mkdtemp(prefix="lt-saga-faults-"))
    broker, postgres, redis = start_broker(), start_postgres(), start_redis()
    try:
        wait_for_port(broker.port)
        config = FaultConfig(
            purchases=args.purchases,
            instances=args.instances,
            kills=args.kills,
            seed=args.seed,
            concurrency=args.concurrency,
            rate_per_s=args.rate,
            step_deadline_s=args.step_deadline,
        )
        report = await run_faults(Infra(broker.url, postgres.url, redis.url), config, log_dir)
    finally:
        for server in (broker, redis, postgres):
            server.stop()
        if postgres.data_dir is not None:
            shutil.rmtree(postgres.data_dir, ignore_errors=True)
    print("\n".join(report.lines()))
    print(f"logs: {log_dir}")
    return 1 if report.violations else 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--purchases", type=int, default=1000)
    parser.add_argument("--instances", type=int, default=2)
    parser.add_argument("--kills", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=24)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rate", type=float, default=20.0, help="purchases started per second (0: burst)")
    parser.add_argument("--step-deadline", type=float, default=8.0, help="LT_STEP_DEADLINE_S of the sagas")
    sys.exit(asyncio.run(_main(parser.parse_args())))


if __name__ == "__main__":
    main()
