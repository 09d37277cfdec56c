"""Anomaly detectors against real Postgres: what they detect, what they freeze, and that replays detect nothing."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from leaky_common.auth import Principal
from leaky_common.events import UsageRecorded
from leaky_devinfra.testing import TEST_KEYS
from lt_analytics.adapters.thresholds import ThresholdStore, set_threshold_overrides
from lt_analytics.domain.thresholds import ThresholdOverrides, Thresholds
from lt_analytics.handlers import Outcome, UsageHandler
from lt_analytics.main import create_app
from lt_analytics.settings import AnalyticsSettings
from lt_analytics.usecases.detect import AnomalyDetector
from lt_analytics.usecases.ingest import Ingest

pytestmark = pytest.mark.integration


def handler(pool: asyncpg.Pool, **defaults: Any) -> UsageHandler:
    store = ThresholdStore(Thresholds(**defaults), ttl_s=0)
    return UsageHandler(Ingest(pool, AnomalyDetector(store, baseline_check_interval_s=0)))


def event(session: str | None = "s1", fp: str | None = "fp-a", **kw: Any) -> UsageRecorded:
    fields: dict[str, Any] = {
        "request_id": uuid.uuid4().hex,
        "user_id": "u1",
        "org_id": "org-1",
        "team_id": "team-1",
        "key_id": "key-1",
        "session_id": session,
        "model": "mock-gpt",
        "provider": "mock",
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "total_tokens": 15,
        "cost_usd_micros": 20,
        "prompt_fingerprint": fp,
    }
    fields.update(kw)
    return UsageRecorded(**fields)


async def feed(h: UsageHandler, *events: UsageRecorded) -> list[Outcome]:
    return [await h.handle(e.model_dump_json().encode()) for e in events]


async def outbox(pool: asyncpg.Pool) -> list[tuple[str, dict[str, Any]]]:
    rows = await pool.fetch("SELECT topic, value FROM outbox ORDER BY id")
    return [(r["topic"], orjson.loads(bytes(r["value"]))) for r in rows]


async def test_loop_freezes_the_session_at_the_configured_count_and_rearms(pool: asyncpg.Pool) -> None:
    h = handler(pool)
    # Three identical, one different (the run restarts), then four identical: one loop.
    await feed(h, *(event() for _ in range(3)), event(fp="fp-b"))
    assert await outbox(pool) == []
    blocked = event(status="blocked", http_status=403)
    await feed(h, event(), event(), blocked, event())
    assert await outbox(pool) == []  # a refused request is not part of the run
    await feed(h, event())
    sent = await outbox(pool)
    assert [t for t, _ in sent] == ["alerts", "quota.freeze-requests"]
    alert, freeze = sent[0][1], sent[1][1]
    assert alert["type"] == "AnomalyDetected.v1"
    assert (alert["kind"], alert["severity"], alert["session_id"], alert["frozen"]) == (
        "loop",
        "error",
        "s1",
        True,
    )
    assert (alert["value"], alert["threshold"]) == (4.0, 4.0)
    assert (alert["org_id"], alert["team_id"], alert["user_id"], alert["key_id"]) == (
        "org-1",
        "team-1",
        "u1",
        "key-1",
    )
    assert freeze["type"] == "RequestFreeze.v1"
    assert (freeze["target_type"], freeze["target_id"], freeze["duration_s"]) == ("session", "s1", 300)
    assert freeze["reason"].startswith("Loop detected")
    assert freeze["causation_id"] == alert["event_id"]

    # The run starts again after a detection: three more are fine, the fourth freezes again.
    await feed(h, event(), event(), event())
    assert len(await outbox(pool)) == 2
    await feed(h, event())
    assert len(await outbox(pool)) == 4
    listed = await pool.fetch("SELECT kind, target_type, target_id, frozen FROM anomalies")
    assert [tuple(r) for r in listed] == [("loop", "session", "s1", True)] * 2


async def test_without_session_the_key_is_watched_and_org_overrides_apply(pool: asyncpg.Pool) -> None:
    await set_threshold_overrides(
        pool, "org-strict", ThresholdOverrides(loop_consecutive=2, freeze_duration_s=60)
    )
    await set_threshold_overrides(pool, "*", ThresholdOverrides(freeze_on=frozenset()))
    h = handler(pool)
    await feed(h, *(event(session=None, org_id="org-lax") for _ in range(3)))
    assert await outbox(pool) == []
    await feed(h, event(session=None, org_id="org-strict", key_id="key-9"))
    await feed(h, event(session=None, org_id="org-strict", key_id="key-9"))
    sent = await outbox(pool)
    # The global row turned freezing off; the org row lowered the count.
    assert [t for t, _ in sent] == ["alerts"]
    assert (sent[0][1]["key_id"], sent[0][1]["frozen"], sent[0][1]["session_id"]) == ("key-9", False, None)


async def test_a_loop_that_only_alerts_alerts_once_per_window(pool: asyncpg.Pool) -> None:
    # Freezing off: a loop that keeps running is one alert per loop window, not one every fourth request.
    h = handler(pool, freeze_on=frozenset(), loop_window_s=60)
    await feed(h, *(event() for _ in range(12)))
    sent = await outbox(pool)
    assert [(t, m["kind"], m["frozen"]) for t, m in sent] == [("alerts", "loop", False)]
    # Another session's loop is its own alert.
    await feed(h, *(event(session="s2") for _ in range(4)))
    assert [m["session_id"] for _, m in await outbox(pool)] == ["s1", "s2"]
    # Once the window has passed, the same loop alerts again.
    await pool.execute("UPDATE anomalies SET detected_at = detected_at - interval '61 seconds'")
    await feed(h, *(event() for _ in range(4)))
    assert [m["session_id"] for _, m in await outbox(pool)] == ["s1", "s2", "s1"]


async def test_loop_within_a_window_even_when_interleaved(pool: asyncpg.Pool) -> None:
    h = handler(pool, loop_window_count=5, loop_window_s=60)
    now = datetime.now(UTC)
    events = [
        event(fp="fp-x" if i % 2 else "fp-y", occurred_at=now + timedelta(seconds=i)) for i in range(10)
    ]
    await feed(h, *events)
    kinds = [(t, m.get("kind")) for t, m in await outbox(pool)]
    assert kinds == [("alerts", "loop"), ("quota.freeze-requests", None)]
    await feed(h, event(fp="fp-x", occurred_at=now + timedelta(seconds=11)))
    assert len(await outbox(pool)) == 2  # cooling down: one alert per window, not one per request


async def test_request_rate_and_spend_velocity(pool: asyncpg.Pool) -> None:
    h = handler(pool, rate_max_requests=5, spend_max_usd_micros_per_minute=1_000_000)
    now = datetime.now(UTC)
    # Distinct prompts (no loop); six within a minute -> rate; an old one outside the window does not count.
    await feed(h, event(fp="old", occurred_at=now - timedelta(seconds=90)))
    await feed(h, *(event(fp=f"p{i}", occurred_at=now + timedelta(seconds=i)) for i in range(5)))
    assert await outbox(pool) == []
    await feed(h, event(fp="p5", occurred_at=now + timedelta(seconds=5)))
    first = await outbox(pool)
    assert [m.get("kind") for _, m in first] == ["request_rate", None]
    assert first[0][1]["severity"] == "warning" and first[0][1]["value"] == 6.0

    spend = handler(pool, spend_max_usd_micros_per_minute=1_000_000)
    await feed(spend, event(session="s-spend", fp="a", cost_usd_micros=600_000))
    assert len(await outbox(pool)) == 2
    await feed(spend, event(session="s-spend", fp="b", cost_usd_micros=400_000))
    assert len(await outbox(pool)) == 2  # exactly 1 USD is not more than 1 USD
    await feed(spend, event(session="s-spend", fp="c", cost_usd_micros=1))
    sent = await outbox(pool)
    assert [(t, m.get("kind"), m.get("target_id")) for t, m in sent[2:]] == [
        ("alerts", "spend_velocity", None),
        ("quota.freeze-requests", None, "s-spend"),
    ]
    assert (sent[2][1]["severity"], sent[2][1]["value"]) == ("critical", 1_000_001.0)


async def test_baseline_ratio_alerts_without_freezing(pool: asyncpg.Pool) -> None:
    h = handler(pool, baseline_window_minutes=1, baseline_windows=2, baseline_min_tokens=0)
    now = datetime.now(UTC)
    await feed(
        h,
        event(
            session=None,
            key_id=None,
            org_id="org-b",
            total_tokens=100,
            occurred_at=now - timedelta(seconds=100),
        ),
        event(
            session=None,
            key_id=None,
            org_id="org-b",
            total_tokens=100,
            occurred_at=now - timedelta(seconds=70),
        ),
    )
    await pool.execute("DELETE FROM outbox")
    await pool.execute("DELETE FROM anomalies")
    await feed(h, event(session=None, key_id=None, org_id="org-b", total_tokens=500))
    sent = await outbox(pool)
    assert [(t, m["kind"], m["frozen"]) for t, m in sent] == [("alerts", "baseline_ratio", False)]
    assert sent[0][1]["value"] == 5.0


async def test_replaying_changes_nothing(pool: asyncpg.Pool) -> None:
    h = handler(pool, rate_max_requests=3)
    events = [event(session="s-r", fp="same") for _ in range(5)]
    assert await feed(h, *events) == [Outcome.RECORDED] * 5

    async def snapshot() -> dict[str, Any]:
        tables = (
            "request_log",
            "usage_rollup",
            "usage_daily",
            "org_usage_minute",
            "loop_streaks",
            "anomalies",
        )
        out: dict[str, Any] = {}
        for t in tables:
            out[t] = sorted(tuple(str(v) for v in r.values()) for r in await pool.fetch(f"SELECT * FROM {t}"))
        out["outbox"] = await pool.fetchval("SELECT count(*) FROM outbox")
        return out

    before = await snapshot()
    assert before["outbox"] == 4  # one loop and one rate detection, each an alert and a freeze
    assert await feed(h, *events) == [Outcome.DUPLICATE] * 5
    assert await snapshot() == before


def principal(user_id: str, role: str = "user", org: str = "org-1") -> dict[str, str]:
    p = Principal(user_id=user_id, org_id=org, role=role)
    return TEST_KEYS.headers("analytics", p)


@pytest.fixture
async def api(db_url: str, pool: asyncpg.Pool) -> AsyncIterator[httpx.AsyncClient]:
    settings = AnalyticsSettings(
        database_url=db_url, **TEST_KEYS.settings(), environment="test", log_json=False
    )
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://analytics") as client,
    ):
        yield client


async def test_api_anomalies_thresholds_leaderboard_report(
    pool: asyncpg.Pool, api: httpx.AsyncClient
) -> None:
    h = handler(pool)
    await feed(h, *(event(user_id="u1") for _ in range(4)))
    await feed(
        h,
        event(user_id="u2", fp="z1", prompt_tokens=10, completion_tokens=30, total_tokens=40),
        event(
            user_id="u2",
            fp="z2",
            prompt_tokens=10,
            completion_tokens=10,
            total_tokens=20,
            model="big",
            provider="p2",
        ),
        event(
            user_id="u3", fp="z3", org_id="org-2", prompt_tokens=1, completion_tokens=100, total_tokens=101
        ),
    )

    usage = (await api.get("/v1/analytics/usage?days=1", headers=principal("u2"))).json()
    assert (usage["total_requests"], usage["average_efficiency"]) == (2, 2.0)
    assert [m["model"] for m in usage["by_model"]] == ["mock-gpt", "big"]
    own = (await api.get("/v1/analytics/anomalies", headers=principal("u1"))).json()["data"]
    assert [(a["kind"], a["user_id"], a["frozen"]) for a in own] == [("loop", "u1", True)]
    assert (await api.get("/api/v1/analytics/anomalies", headers=principal("u2"))).json()["data"] == []
    everyone = await api.get(
        "/v1/analytics/anomalies?org_id=org-1&kind=loop", headers=principal("a", "admin")
    )
    assert len(everyone.json()["data"]) == 1
    assert (await api.get("/v1/analytics/anomalies?kind=nope", headers=principal("u1"))).status_code == 400

    board = (await api.get("/v1/analytics/leaderboard?period=daily", headers=principal("u1"))).json()
    # u2: (3.0 + 1.0) / 2 = 2.0; u1: 0.5; u3 is in another org.
    assert [(e["rank"], e["user_id"], e["average_efficiency"]) for e in board["data"]] == [
        (1, "u2", 2.0),
        (2, "u1", 0.5),
    ]
    for period in ("weekly", "monthly"):
        assert (
            len(
                (await api.get(f"/v1/analytics/leaderboard?period={period}", headers=principal("u1"))).json()[
                    "data"
                ]
            )
            == 2
        )
    bad = await api.get("/v1/analytics/leaderboard?period=yearly", headers=principal("u1"))
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "period"

    assert (await api.get("/v1/analytics/report?id=org-1", headers=principal("u1"))).status_code == 403
    rep = (
        await api.get("/api/v1/analytics/report?id=org-1&scope=org", headers=principal("a", "admin"))
    ).json()
    assert rep["totals"]["requests"] == 6 and rep["totals"]["total_tokens"] == 4 * 15 + 60
    assert [(m["name"], m["requests"]) for m in rep["by_model"]] == [("mock-gpt", 5), ("big", 1)]
    assert [p["name"] for p in rep["by_provider"]] == ["mock", "p2"]
    assert [u["name"] for u in rep["top_users"]] == ["u1", "u2"]
    team = (
        await api.get("/v1/analytics/report?id=team-1&scope=team&days=1", headers=principal("a", "admin"))
    ).json()
    # u3's event also names team-1 but was recorded under org-2: it counts only for org-2 (rollups are per org).
    assert team["totals"]["requests"] == 6

    assert (await api.get("/v1/analytics/thresholds", headers=principal("u1"))).status_code == 403
    put = await api.put(
        "/v1/analytics/thresholds?org_id=org-1", json={"loop_consecutive": 3}, headers=principal("a", "admin")
    )
    assert put.status_code == 200
    assert put.json()["overrides"] == {"loop_consecutive": 3}
    assert put.json()["effective"]["loop_consecutive"] == 3
    assert put.json()["effective"]["rate_max_requests"] == 100
    bad_put = await api.put(
        "/v1/analytics/thresholds", json={"loop_consecutive": 1}, headers=principal("a", "admin")
    )
    assert bad_put.status_code == 400
    unknown = await api.put("/v1/analytics/thresholds", json={"nope": 1}, headers=principal("a", "admin"))
    assert unknown.status_code == 400
    cleared = await api.put("/v1/analytics/thresholds?org_id=org-1", json={}, headers=principal("a", "admin"))
    assert cleared.json()["effective"]["loop_consecutive"] == 4

    series = await api.get("/v1/analytics/timeseries?grain=minute", headers=principal("u2"))
    assert series.status_code == 200, series.text
    points = series.json()["data"]
    assert sum(p["requests"] for p in points) == 2 and sum(p["total_tokens"] for p in points) == 60
    only_big = await api.get("/v1/analytics/timeseries?grain=day&model=big", headers=principal("u2"))
    assert [p["total_tokens"] for p in only_big.json()["data"]] == [20]
    hourly_org = await api.get(
        "/v1/analytics/timeseries?scope=org&id=org-1&grain=hour", headers=principal("a", "admin")
    )
    assert sum(p["requests"] for p in hourly_org.json()["data"]) == 6
    assert (
        await api.get("/v1/analytics/timeseries?scope=org&id=org-1", headers=principal("u2"))
    ).status_code == 403
    assert (
        await api.get("/v1/analytics/timeseries?scope=user&id=u1", headers=principal("u2"))
    ).status_code == 403
    assert (
        await api.get("/v1/analytics/timeseries?scope=team", headers=principal("a", "admin"))
    ).status_code == 400
    assert (await api.get("/v1/analytics/timeseries?grain=week", headers=principal("u2"))).status_code == 400
    for path in (
        "/v1/analytics/report?id=%00",
        "/v1/analytics/anomalies?org_id=a%00",
        "/v1/analytics/usage?user_id=%01",
    ):
        assert (await api.get(path, headers=principal("a", "admin"))).status_code == 400, path
    base = (await api.get("/v1/analytics/baseline?window_minutes=5", headers=principal("u1"))).json()
    assert (base["org_id"], base["current_tokens"], base["anomaly"]) == ("org-1", 4 * 15 + 60, False)


async def test_a_batch_records_and_detects_like_single_events(pool: asyncpg.Pool) -> None:
    h = handler(pool)
    loop = [event(session="s-batch") for _ in range(4)]
    # Same key id in two orgs within one batch: one rollup row per org (rows are per org; no double-update
    # conflict).
    other_org = event(session=None, key_id="key-shared", org_id="org-x", fp="q")
    same_key = event(session=None, key_id="key-shared", org_id="org-y", fp="r")
    raws = [e.model_dump_json().encode() for e in (*loop[:2], loop[0], *loop[2:], other_org, same_key)]
    outcomes = await h.handle_batch([*raws, b"not json"])
    assert outcomes == [
        Outcome.RECORDED,
        Outcome.RECORDED,
        Outcome.DUPLICATE,
        Outcome.RECORDED,
        Outcome.RECORDED,
        Outcome.RECORDED,
        Outcome.RECORDED,
        Outcome.INVALID,
    ]
    sent = await outbox(pool)
    assert [(t, m.get("kind"), m.get("target_id")) for t, m in sent] == [
        ("alerts", "loop", None),
        ("quota.freeze-requests", None, "s-batch"),
    ]
    key_rows = await pool.fetch(
        "SELECT org_id, requests FROM usage_rollup"
        " WHERE scope_type = 'key' AND scope_id = 'key-shared' AND grain = 'day' ORDER BY org_id"
    )
    assert [(r["org_id"], r["requests"]) for r in key_rows] == [("org-x", 1), ("org-y", 1)]
    assert await h.handle_batch(raws[:2]) == [Outcome.DUPLICATE, Outcome.DUPLICATE]


async def test_an_event_the_database_refuses_is_isolated_not_blocking(pool: asyncpg.Pool) -> None:
    h = handler(pool)
    good = [event(session="s-ok", fp=f"f{i}") for i in range(2)]
    poison = event(session="s-ok", fp="big", prompt_tokens=2**70, total_tokens=2**70)
    raws = [e.model_dump_json().encode() for e in (good[0], poison, good[1])]
    assert await h.handle_batch(raws) == [Outcome.RECORDED, Outcome.INVALID, Outcome.RECORDED]
    assert await pool.fetchval("SELECT count(*) FROM request_log") == 2


async def test_a_redelivered_event_in_a_batch_keeps_stream_order(pool: asyncpg.Pool) -> None:
    h = handler(pool)
    a = event(session="s-order", fp="x")
    ys = [event(session="s-order", fp="y") for _ in range(4)]
    batch = [a, ys[0], ys[1], a, ys[2], ys[3]]
    outcomes = await h.handle_batch([e.model_dump_json().encode() for e in batch])
    assert outcomes.count(Outcome.DUPLICATE) == 1
    # x, then y four times in a row: a loop, however the duplicate of x sat in the batch.
    assert [m.get("kind") for _, m in await outbox(pool)] == ["loop", None]


async def test_outcomes_when_a_refused_event_splits_a_batch_with_redeliveries(pool: asyncpg.Pool) -> None:
    h = handler(pool)
    good = event(session="s-split", fp="g")
    poison = event(session="s-split", fp="p", cost_usd_micros=2**64)
    raws = [e.model_dump_json().encode() for e in (good, poison, good)]
    assert await h.handle_batch(raws) == [Outcome.RECORDED, Outcome.INVALID, Outcome.DUPLICATE]


async def test_two_workers_at_once_raise_an_org_anomaly_once_and_do_not_deadlock(pool: asyncpg.Pool) -> None:
    """Two workers (an org's sessions sit on different partitions) record batches of one org at the same time
    and both find its baseline ratio exceeded: one alert. First with batches that share no rollup row (only the
    detector's advisory lock serialises their cooldown checks; whether they overlap depends on timing), then
    with batches adding to the same rows in opposite orders (no deadlock, every event recorded)."""
    org = f"org-{uuid.uuid4().hex[:6]}"
    limits = {"baseline_window_minutes": 2, "baseline_windows": 3, "baseline_min_tokens": 0}
    workers = [handler(pool, **limits), handler(pool, **limits)]
    now = datetime.now(UTC)
    old = [now - timedelta(seconds=s) for s in (130, 250, 370)]  # one in each of the 3 windows before
    await feed(workers[0], *(event(session=None, key_id=None, org_id=org, occurred_at=t) for t in old))
    # Both in the current (2-minute) window, in different minutes, models and users: no row in common.
    this_minute = now.replace(second=0, microsecond=0)
    apart = [(now, "model-a", "a"), (this_minute - timedelta(seconds=1), "model-b", "b")]

    def batch(users: list[str], model: str, at: datetime) -> list[bytes]:
        session = uuid.uuid4().hex
        return [
            event(session=session, fp=f"{session}-{u}", org_id=org, user_id=u, model=model, occurred_at=at)
            .model_dump_json()
            .encode()
            for u in users
        ]

    users = [f"u-{i}" for i in range(6)]
    for shared in (False, True, True):
        outcomes = await asyncio.gather(
            *(
                w.handle_batch(batch(users if shared else [f"{tag}-{u}" for u in users], model, at))
                for w, (at, model, tag) in zip(workers, apart, strict=True)
            )
        )
        assert {o for batch_outcomes in outcomes for o in batch_outcomes} == {Outcome.RECORDED}
        users.reverse()
    raised = await pool.fetchval(
        "SELECT count(*) FROM anomalies WHERE kind = 'baseline_ratio' AND org_id = $1", org
    )
    assert raised == 1
