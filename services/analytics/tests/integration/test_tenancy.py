"""Tenancy in analytics against real Postgres (issue 17): sessions are (org, session id) in detectors, freezes
and rollups; requests of no org count for nobody; an admin reads usage only of their own org's users."""

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from leaky_common.auth import Principal
from leaky_common.events import UsageRecorded
from lt_analytics.adapters.thresholds import ThresholdStore
from lt_analytics.domain.thresholds import Thresholds
from lt_analytics.handlers import UsageHandler
from lt_analytics.main import create_app
from lt_analytics.settings import AnalyticsSettings
from lt_analytics.usecases.detect import AnomalyDetector
from lt_analytics.usecases.ingest import Ingest

pytestmark = pytest.mark.integration

TOKEN = "tenancy-internal-token"
SESSION = "agent-7"


def internal_headers(principal: Principal) -> dict[str, str]:
    """The gateway's internal headers (one place, so a change of the internal identity touches only this)."""
    return {"X-LT-Principal": principal.header_value(), "X-LT-Internal-Token": TOKEN}


def as_(user_id: str, org: str, role: str = "user", platform: bool = False) -> dict[str, str]:
    return internal_headers(Principal(user_id=user_id, org_id=org, role=role, platform_admin=platform))


def handler(pool: asyncpg.Pool, **limits: Any) -> UsageHandler:
    store = ThresholdStore(Thresholds(**limits), ttl_s=0)
    return UsageHandler(Ingest(pool, AnomalyDetector(store, baseline_check_interval_s=0)))


def event(org: str | None, user: str | None, fp: str | None = None, **kw: Any) -> UsageRecorded:
    fields: dict[str, Any] = {
        "request_id": uuid.uuid4().hex,
        "user_id": user,
        "org_id": org,
        "key_id": f"key-{user}" if user else None,
        "session_id": SESSION,
        "model": "mock-gpt",
        "provider": "mock",
        "prompt_tokens": 10,
        "completion_tokens": 10,
        "total_tokens": 20,
        "cost_usd_micros": 5,
        "prompt_fingerprint": fp or uuid.uuid4().hex,
    }
    fields.update(kw)
    return UsageRecorded(**fields)


async def feed(h: UsageHandler, *events: UsageRecorded) -> None:
    for e in events:
        await h.handle(e.model_dump_json().encode())


async def freezes(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    rows = await pool.fetch("SELECT value FROM outbox WHERE topic = 'quota.freeze-requests' ORDER BY id")
    return [orjson.loads(bytes(r["value"])) for r in rows]


@pytest.fixture
async def api(db_url: str, pool: asyncpg.Pool) -> AsyncIterator[httpx.AsyncClient]:
    settings = AnalyticsSettings(
        database_url=db_url, internal_token=TOKEN, environment="test", log_json=False
    )
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://analytics") as client,
    ):
        yield client


async def test_unauthenticated_requests_count_for_no_session(pool: asyncpg.Pool) -> None:
    h = handler(pool, rate_max_requests=5, loop_window_count=100, loop_consecutive=100)
    # Six requests of no org (a bad key) naming org-1's session, then one by its owner: nothing fires.
    await feed(h, *(event(None, None) for _ in range(6)), event("org-1", "u1"))
    assert await freezes(pool) == []
    assert await pool.fetchval("SELECT count(*) FROM usage_rollup WHERE scope_type = 'session'") == 3  # 1 x 3
    assert await pool.fetchval("SELECT count(*) FROM anomalies") == 0


async def test_two_orgs_sessions_of_one_id_are_apart(pool: asyncpg.Pool) -> None:
    h = handler(pool, rate_max_requests=5, loop_window_count=100, loop_consecutive=3)
    # org-2 runs a loop on "agent-7": its freeze names org-2; org-1's two requests with the same fingerprint
    # neither extend org-2's streak nor get frozen.
    await feed(h, event("org-1", "u1", fp="same"), *(event("org-2", "u2", fp="same") for _ in range(3)))
    cmds = await freezes(pool)
    assert [(c["target_id"], c["org_id"]) for c in cmds] == [(SESSION, "org-2")]
    # org-1 exceeds the rate: its own freeze; org-2's anomaly of the same session id does not silence it.
    await feed(h, *(event("org-1", "u1") for _ in range(6)))
    assert [c["org_id"] for c in await freezes(pool)] == ["org-2", "org-1"]
    rows = await pool.fetch(
        "SELECT org_id, sum(requests) AS n FROM usage_rollup WHERE scope_type = 'session' AND grain = 'day'"
        " GROUP BY org_id ORDER BY org_id"
    )
    assert [(r["org_id"], r["n"]) for r in rows] == [("org-1", 7), ("org-2", 3)]


async def test_session_series_and_user_usage_stay_in_the_org(
    pool: asyncpg.Pool, api: httpx.AsyncClient
) -> None:
    await feed(handler(pool), event("org-1", "u1"), *(event("org-2", "u2") for _ in range(2)))
    series = await api.get(
        "/v1/analytics/timeseries",
        params={"scope": "session", "id": SESSION},
        headers=as_("a1", "org-1", "admin"),
    )
    assert series.status_code == 200 and sum(p["requests"] for p in series.json()["data"]) == 1
    # Who may: an admin of the user's org, the user themself. Who may not: another org's admin (404, platform
    # admins too), a member of the same org (403).
    for path in ("/v1/analytics/usage", "/api/v1/analytics/usage"):
        ok = await api.get(path, params={"user_id": "u1"}, headers=as_("a1", "org-1", "admin"))
        assert ok.status_code == 200 and ok.json()["total_requests"] == 1, ok.text
        own = await api.get(path, headers=as_("u1", "org-1"))
        assert own.status_code == 200 and own.json()["total_requests"] == 1
        for other in (as_("a2", "org-2", "admin"), as_("p", "org-2", "admin", platform=True)):
            r = await api.get(path, params={"user_id": "u1"}, headers=other)
            assert r.status_code == 404 and r.json()["error"]["code"] == "user_not_found", r.text
        r = await api.get(path, params={"user_id": "u1"}, headers=as_("u3", "org-1"))
        assert r.status_code == 403
