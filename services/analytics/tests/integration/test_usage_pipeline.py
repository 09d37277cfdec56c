"""The real worker process (faust) on the real broker feeding real Postgres, read back through the API."""

import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from leaky_common.auth import Principal
from leaky_common.db import create_database
from leaky_common.events import UsageRecorded
from leaky_common.kafka import EventPublisher, ensure_topics
from leaky_devinfra.testing import TEST_KEYS, InternalKeys
from leaky_devinfra.testing import eventually as wait_for
from lt_analytics.main import create_app
from lt_analytics.settings import AnalyticsSettings

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def worker_process(
    settings: AnalyticsSettings, group: str
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`python -m lt_analytics.worker` with its own consumer group; stopped by the PID started here."""
    datadir = Path(tempfile.mkdtemp(prefix="lt-analytics-test-"))
    log_path = datadir / "worker.log"
    env = {
        **os.environ,
        "LT_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "LT_DATABASE_URL": settings.database_url,
        "LT_USAGE_TOPIC": settings.usage_topic,
        "LT_CONSUMER_GROUP": group,
        "LT_FAUST_DATADIR": str(datadir),
        "LT_SERVICE_NAME": "analytics-worker",
        "LT_LOG_JSON": "false",
        "LT_WORKER_METRICS_PORT": "0",  # any free port: 8087 may be another worker's (xdist, a running stack)
    }
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "lt_analytics.worker", env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), timeout=30)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if os.environ.get("LT_TEST_SHOW_WORKER_LOG"):
            print(log_path.read_text())


def principal(user_id: str, role: str = "user", org: str = "org-test") -> dict[str, str]:
    p = Principal(user_id=user_id, org_id=org, role=role)
    return TEST_KEYS.headers("analytics", p)


@pytest.fixture(scope="module")
async def settings(postgres_url: str, kafka_bootstrap: str) -> AnalyticsSettings:
    url = await create_database(postgres_url, f"analytics_{uuid.uuid4().hex[:10]}")
    s = AnalyticsSettings(
        database_url=url,
        kafka_bootstrap=kafka_bootstrap,
        usage_topic=f"usage.test.{uuid.uuid4().hex[:8]}",
        **TEST_KEYS.settings(),
        environment="test",
        log_json=False,
    )
    await ensure_topics(s, [s.usage_topic])
    return s


@pytest.fixture(scope="module")
async def api(settings: AnalyticsSettings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://analytics") as client,
    ):
        yield client


def usage(
    user: str, org: str, model: str, prompt: int, completion: int, cost: int, **kw: Any
) -> UsageRecorded:
    return UsageRecorded(
        request_id=uuid.uuid4().hex,
        user_id=user,
        org_id=org,
        key_id=f"key-{user}",
        model=model,
        provider="mock",
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        cost_usd_micros=cost,
        latency_ms=12,
        **kw,
    )


async def aggregates(settings: AnalyticsSettings) -> dict[str, list[tuple[Any, ...]]]:
    conn = await asyncpg.connect(settings.database_url)
    try:
        daily = await conn.fetch("SELECT * FROM usage_daily ORDER BY user_id, day, model")
        minute = await conn.fetch("SELECT * FROM org_usage_minute ORDER BY org_id, minute")
        log = await conn.fetch("SELECT event_id FROM request_log WHERE user_id IS NOT NULL ORDER BY event_id")
        rollup = await conn.fetch("SELECT * FROM usage_rollup ORDER BY 1, 2, 3, 4, 5, 6")
        streaks = await conn.fetch("SELECT * FROM loop_streaks ORDER BY 1, 2")
        anomalies = await conn.fetch("SELECT * FROM anomalies ORDER BY id")
        outbox = await conn.fetch("SELECT id, topic, key, value FROM outbox ORDER BY id")
        return {
            "daily": [tuple(r) for r in daily],
            "minute": [tuple(r) for r in minute],
            "log": [tuple(r) for r in log],
            "rollup": [tuple(r) for r in rollup],
            "streaks": [tuple(r) for r in streaks],
            "anomalies": [tuple(r) for r in anomalies],
            "outbox": [tuple(r) for r in outbox],
        }
    finally:
        await conn.close()


async def logged(settings: AnalyticsSettings, event_id: str) -> bool:
    conn = await asyncpg.connect(settings.database_url)
    try:
        return bool(await conn.fetchval("SELECT 1 FROM request_log WHERE event_id = $1", event_id))
    finally:
        await conn.close()


async def test_totals_exact_with_duplicates_replay_and_isolation(
    settings: AnalyticsSettings, api: httpx.AsyncClient
) -> None:
    alice, bob, org = f"alice-{uuid.uuid4().hex[:6]}", f"bob-{uuid.uuid4().hex[:6]}", "org-a"
    now = datetime.now(UTC)
    yesterday = now - timedelta(days=1)
    long_ago = now - timedelta(days=20)
    alice_events = [
        usage(alice, org, "mock-gpt", 10, 20, 30),
        usage(alice, org, "mock-gpt", 5, 7, 11, stream=True),
        usage(alice, org, "big-model", 100, 50, 1_500, occurred_at=yesterday),
        usage(alice, org, "mock-gpt", 3, 0, 1, status="error", http_status=502),
        usage(alice, org, "mock-gpt", 1_000, 1_000, 9_999, occurred_at=long_ago),
    ]
    bob_events = [usage(bob, "org-b", "mock-gpt", 40, 2, 5), usage(bob, "org-b", "mock-gpt", 1, 1, 1)]
    # An agent in a loop: four identical prompts in one session -> one detection (alert + freeze command).
    carol = f"carol-{uuid.uuid4().hex[:6]}"
    carol_events = [
        usage(carol, "org-c", "mock-gpt", 5, 5, 2, session_id="loop-session", prompt_fingerprint="same")
        for _ in range(4)
    ]

    publisher = EventPublisher(settings)
    await publisher.start()
    try:
        for event in alice_events + bob_events + carol_events:
            await publisher.publish(settings.usage_topic, event, key=event.user_id)
        # Redeliveries: the same event ids again, and a message nobody can parse (goes to the DLQ).
        for event in (alice_events[0], alice_events[2], bob_events[1]):
            await publisher.publish(settings.usage_topic, event, key=event.user_id)
        await publisher.publish_raw(settings.usage_topic, b'{"type": "nonsense"}', None, [])

        async with worker_process(settings, group=f"analytics-{uuid.uuid4().hex[:6]}"):

            async def alice_week() -> dict[str, Any] | None:
                body = (await api.get("/v1/analytics/usage", headers=principal(alice))).json()
                return body if body.get("total_requests") == 4 else None

            week = await wait_for(alice_week)
            await wait_for(lambda: logged(settings, bob_events[1].event_id))
            await wait_for(lambda: logged(settings, carol_events[-1].event_id))

        recent = alice_events[:4]
        assert week["user_id"] == alice
        assert week["days"] == 7
        assert week["prompt_tokens"] == sum(e.prompt_tokens for e in recent) == 118
        assert week["completion_tokens"] == sum(e.completion_tokens for e in recent) == 77
        assert week["total_tokens"] == 195
        assert week["cost_usd_micros"] == 30 + 11 + 1_500 + 1
        assert week["by_model"] == [
            {"model": "big-model", "requests": 1, "total_tokens": 150, "cost_usd_micros": 1_500},
            {"model": "mock-gpt", "requests": 3, "total_tokens": 45, "cost_usd_micros": 42},
        ]
        assert [d["date"] for d in week["by_day"]] == [yesterday.date().isoformat(), now.date().isoformat()]
        assert [d["requests"] for d in week["by_day"]] == [1, 3]

        month = (await api.get("/api/v1/analytics/usage?days=30", headers=principal(alice))).json()
        assert month["total_requests"] == 5
        assert month["total_tokens"] == 195 + 2_000
        assert month["cost_usd_micros"] == 1_542 + 9_999

        # Each user sees only their own usage; admins may ask for anyone's.
        bob_view = (await api.get("/v1/analytics/usage", headers=principal(bob))).json()
        assert (bob_view["user_id"], bob_view["total_requests"], bob_view["total_tokens"]) == (bob, 2, 44)
        denied = await api.get(f"/v1/analytics/usage?user_id={alice}", headers=principal(bob))
        assert denied.status_code == 403
        assert denied.json()["error"]["type"] == "permission_error"
        # Admins read their own org's users; another org's user is a 404 (issue 17, finding 5).
        as_admin = await api.get(
            f"/v1/analytics/usage?user_id={bob}", headers=principal("root", "admin", "org-b")
        )
        assert as_admin.status_code == 200
        assert as_admin.json()["total_tokens"] == 44
        elsewhere = await api.get(f"/v1/analytics/usage?user_id={bob}", headers=principal("root", "admin"))
        assert elsewhere.status_code == 404

        before = await aggregates(settings)
        assert len(before["log"]) == 11
        assert sum(r[2] for r in before["minute"]) == 11
        assert sum(r[3] for r in before["daily"]) == 11
        assert [(a[1], a[4]) for a in before["anomalies"]] == [("loop", "loop-session")]
        assert [o[1] for o in before["outbox"]] == ["alerts", "quota.freeze-requests"]

        # Replay the whole topic with a fresh consumer group: nothing may change.
        sentinel = UsageRecorded(request_id="sentinel", model="m", provider="p")  # no user/org: no aggregate
        async with worker_process(settings, group=f"analytics-replay-{uuid.uuid4().hex[:6]}"):
            await publisher.publish(settings.usage_topic, sentinel)
            await wait_for(lambda: logged(settings, sentinel.event_id))
        assert await aggregates(settings) == before
        again = (await api.get("/v1/analytics/usage", headers=principal(alice))).json()
        assert again == week

        # The unparseable message went to the dead-letter topic (once per consumer group that saw it).
        dlq = AIOKafkaConsumer(
            f"{settings.usage_topic}.dlq",
            bootstrap_servers=settings.kafka_bootstrap,
            auto_offset_reset="earliest",
            group_id=None,
        )
        await dlq.start()
        try:
            dead: list[bytes] = []
            deadline = asyncio.get_running_loop().time() + 20
            while len(dead) < 2 and asyncio.get_running_loop().time() < deadline:
                batch = await dlq.getmany(timeout_ms=500)
                dead.extend(r.value or b"" for rs in batch.values() for r in rs)
            assert dead == [b'{"type": "nonsense"}'] * 2
        finally:
            await dlq.stop()
    finally:
        await publisher.stop()


async def test_bad_input_and_credentials_are_4xx(api: httpx.AsyncClient) -> None:
    for days in ("0", "367", "x"):
        resp = await api.get(f"/v1/analytics/usage?days={days}", headers=principal("u"))
        assert resp.status_code == 400, days
        assert resp.json()["error"]["param"] == "days"
    assert (await api.get("/v1/analytics/usage")).status_code == 401
    wrong = InternalKeys.generate().headers("analytics", user_id="u", org_id="org-test")
    assert (await api.get("/v1/analytics/usage", headers=wrong)).status_code == 401
    empty = (await api.get("/v1/analytics/usage?days=366", headers=principal("never-used"))).json()
    assert (empty["days"], empty["total_requests"], empty["by_model"]) == (366, 0, [])


async def test_ready_checks_postgres(api: httpx.AsyncClient) -> None:
    resp = await api.get("/ready")
    assert resp.status_code == 200
    assert resp.json()["checks"] == {"postgres": True}


async def test_the_worker_commits_its_offsets_once_the_events_are_recorded(
    settings: AnalyticsSettings,
) -> None:
    """The worker holds each event of a batch until the batch's transaction is committed (it takes the next
    batch meanwhile), then acks it: the group's committed offsets reach the end of the topic, so a restarted
    worker does not record the same events again."""
    group = f"analytics-commits-{uuid.uuid4().hex[:6]}"
    publisher = EventPublisher(settings)
    await publisher.start()
    try:
        events = [usage(f"u{i % 7}", "org-c", "mock-gpt", 10, 5, 3) for i in range(300)]
        for event in events:
            await publisher.publish(settings.usage_topic, event, key=event.user_id)
    finally:
        await publisher.stop()
    probe = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=group, enable_auto_commit=False
    )
    await probe.start()
    try:
        tps = [
            TopicPartition(settings.usage_topic, p)
            for p in probe.partitions_for_topic(settings.usage_topic) or []
        ]
        assert tps
        ends = await probe.end_offsets(tps)
        async with worker_process(settings, group=group):

            async def last_logged() -> bool:
                try:
                    return await logged(settings, events[-1].event_id)
                except asyncpg.UndefinedTableError:  # the worker has not created its tables yet
                    return False

            await wait_for(last_logged, timeout=60)

            async def committed_to_the_end() -> bool:
                return all([(await probe.committed(tp) or 0) >= ends[tp] for tp in tps])

            await wait_for(committed_to_the_end, timeout=30)
        for event in events:
            assert await logged(settings, event.event_id)
    finally:
        await probe.stop()
