"""Who may read org and team reports, team time series and anomalies, against real Postgres: admins their own
org, managers the teams they manage (`Principal.managed_team_ids`), everyone else a 403; never another org."""

import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest

from leaky_common.auth import Principal
from leaky_common.events import UsageRecorded
from leaky_devinfra.testing import TEST_KEYS
from lt_analytics.adapters.thresholds import ThresholdStore
from lt_analytics.domain.thresholds import Thresholds
from lt_analytics.handlers import UsageHandler
from lt_analytics.main import create_app
from lt_analytics.settings import AnalyticsSettings
from lt_analytics.usecases.detect import AnomalyDetector
from lt_analytics.usecases.ingest import Ingest
from lt_analytics.usecases.reports import Reports

pytestmark = pytest.mark.integration

REPORT_PATHS = ("/v1/analytics/report", "/api/v1/analytics/report")


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


def as_(
    user_id: str, org: str = "org-1", role: str = "user", manages: tuple[str, ...] = ()
) -> dict[str, str]:
    p = Principal(user_id=user_id, org_id=org, role=role, managed_team_ids=manages)
    return TEST_KEYS.headers("analytics", p)


# Functions, not constants: an assertion lives at most 60 s, so each request gets a fresh one.
def MANAGER() -> dict[str, str]:
    return as_("m1", manages=("team-a",))


def MEMBER() -> dict[str, str]:
    return as_("u1")


def ADMIN() -> dict[str, str]:
    return as_("admin-1", role="admin")


def OTHER_ADMIN() -> dict[str, str]:
    return as_("admin-2", org="org-2", role="admin")


def usage(user: str, team: str, org: str = "org-1", tokens: int = 10, fp: str | None = None) -> UsageRecorded:
    return UsageRecorded(
        request_id=uuid.uuid4().hex,
        user_id=user,
        org_id=org,
        team_id=team,
        key_id=f"key-{user}",
        session_id=f"s-{user}",
        model="mock-gpt",
        provider="mock",
        prompt_tokens=tokens,
        completion_tokens=tokens,
        total_tokens=2 * tokens,
        cost_usd_micros=3 * tokens,
        prompt_fingerprint=fp or uuid.uuid4().hex,
    )


@pytest.fixture
async def seeded(pool: asyncpg.Pool) -> None:
    """org-1: team-a (u1 member, m1 manager), team-b (u2); org-2: team-c (u9). u1 and u2 each run a loop."""
    h = UsageHandler(
        Ingest(pool, AnomalyDetector(ThresholdStore(Thresholds(), ttl_s=0), baseline_check_interval_s=0))
    )
    events = [
        *(usage("u1", "team-a", fp="same-a") for _ in range(4)),
        usage("m1", "team-a", tokens=100),
        *(usage("u2", "team-b", fp="same-b") for _ in range(4)),
        usage("u9", "team-c", org="org-2", tokens=1000),
    ]
    for e in events:
        await h.handle(e.model_dump_json().encode())


async def get(api: httpx.AsyncClient, path: str, headers: dict[str, str]) -> httpx.Response:
    return await api.get(path, headers=headers)


def assert_forbidden(r: httpx.Response, code: str) -> None:
    assert r.status_code == 403, r.text
    error = r.json()["error"]
    assert (error["type"], error["code"]) == ("permission_error", code)
    assert error["message"]


@pytest.mark.usefixtures("seeded")
async def test_a_manager_reads_the_reports_of_the_teams_they_manage_only(api: httpx.AsyncClient) -> None:
    for path in REPORT_PATHS:
        r = await get(api, f"{path}?scope=team&id=team-a&days=1", MANAGER())
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["scope"], body["id"], body["totals"]["requests"]) == ("team", "team-a", 5)
        assert body["totals"]["total_tokens"] == 4 * 20 + 200
        assert body["totals"]["cost_usd_micros"] == 4 * 30 + 300
        assert [(u["name"], u["requests"]) for u in body["top_users"]] == [("m1", 1), ("u1", 4)]

        assert_forbidden(await get(api, f"{path}?scope=team&id=team-b", MANAGER()), "not_team_manager")
        assert_forbidden(await get(api, f"{path}?scope=org&id=org-1", MANAGER()), "admin_required")
        # A plain member of the team, and a member of another team, are refused.
        assert_forbidden(await get(api, f"{path}?scope=team&id=team-a", MEMBER()), "not_team_manager")
        assert_forbidden(await get(api, f"{path}?scope=team&id=team-a", as_("u2")), "not_team_manager")
        assert_forbidden(await get(api, f"{path}?scope=org&id=org-1", MEMBER()), "admin_required")


@pytest.mark.usefixtures("seeded")
async def test_admins_read_their_own_org_and_its_teams_never_another_org(api: httpx.AsyncClient) -> None:
    for path in REPORT_PATHS:
        org = (await get(api, f"{path}?scope=org&id=org-1", ADMIN())).json()
        assert org["totals"]["requests"] == 9 and org["totals"]["total_tokens"] == 8 * 20 + 200
        assert {u["name"] for u in org["top_users"]} == {"u1", "u2", "m1"}
        team_b = await get(api, f"{path}?scope=team&id=team-b", ADMIN())
        assert team_b.status_code == 200 and team_b.json()["totals"]["requests"] == 4

        # Org isolation, both ways, for org and team reports.
        assert_forbidden(await get(api, f"{path}?scope=org&id=org-2", ADMIN()), "other_org")
        assert_forbidden(await get(api, f"{path}?scope=team&id=team-c", ADMIN()), "other_org")
        assert_forbidden(await get(api, f"{path}?scope=org&id=org-1", OTHER_ADMIN()), "other_org")
        assert_forbidden(await get(api, f"{path}?scope=team&id=team-a", OTHER_ADMIN()), "other_org")
        own = (await get(api, f"{path}?scope=team&id=team-c", OTHER_ADMIN())).json()
        assert own["totals"]["total_tokens"] == 2000 and [u["name"] for u in own["top_users"]] == ["u9"]
        # A principal naming a team of another org as managed still sees nothing of it.
        forged = as_("m9", org="org-2", manages=("team-a",))
        assert_forbidden(await get(api, f"{path}?scope=team&id=team-a", forged), "other_org")

    # A team without usage yet is an empty report, not an error.
    empty = (await get(api, "/v1/analytics/report?scope=team&id=team-new", ADMIN())).json()
    assert empty["totals"]["requests"] == 0 and empty["top_users"] == []


@pytest.mark.usefixtures("seeded")
async def test_managers_see_their_teams_anomalies_and_time_series(api: httpx.AsyncClient) -> None:
    async def anomaly_users(headers: dict[str, str]) -> list[str | None]:
        r = await get(api, "/v1/analytics/anomalies", headers)
        assert r.status_code == 200, r.text
        return sorted(a["user_id"] for a in r.json()["data"])

    assert await anomaly_users(MANAGER()) == ["u1"]  # team-a's loop; team-b's is not theirs
    assert await anomaly_users(MEMBER()) == ["u1"]
    assert await anomaly_users(as_("u2")) == ["u2"]
    assert await anomaly_users(as_("m1")) == []  # the same user without the manager role
    assert await anomaly_users(as_("m9", org="org-2", manages=("team-a",))) == []  # never another org's
    alias = await get(api, "/api/v1/analytics/anomalies?kind=loop", MANAGER())
    assert [a["team_id"] for a in alias.json()["data"]] == ["team-a"]

    series = await get(api, "/v1/analytics/timeseries?scope=team&id=team-a&grain=day", MANAGER())
    assert series.status_code == 200 and sum(p["requests"] for p in series.json()["data"]) == 5
    refused = await get(api, "/v1/analytics/timeseries?scope=team&id=team-b&grain=day", MANAGER())
    assert_forbidden(refused, "admin_required")


def PLATFORM_ADMIN() -> dict[str, str]:
    return TEST_KEYS.headers(
        "analytics", Principal(user_id="root", org_id="org-1", role="admin", platform_admin=True)
    )


@pytest.mark.usefixtures("seeded")
async def test_admins_read_only_their_own_orgs_leaderboard_baseline_anomalies_and_series(
    api: httpx.AsyncClient,
) -> None:
    async def ok(path: str, headers: dict[str, str]) -> Any:
        r = await get(api, path, headers)
        assert r.status_code == 200, r.text
        return r.json()

    board = await ok("/v1/analytics/leaderboard?period=daily", OTHER_ADMIN())
    assert (board["org_id"], [e["user_id"] for e in board["data"]]) == ("org-2", ["u9"])
    assert (await ok("/v1/analytics/leaderboard?org_id=org-1", ADMIN()))["org_id"] == "org-1"
    base = await ok("/v1/analytics/baseline?window_minutes=5", OTHER_ADMIN())
    assert (base["org_id"], base["current_tokens"]) == ("org-2", 2000)
    # The admin anomaly list holds their org's detections only (org-1 has two loops, org-2 none).
    assert sorted(a["user_id"] for a in (await ok("/v1/analytics/anomalies", ADMIN()))["data"]) == [
        "u1",
        "u2",
    ]
    assert (await ok("/v1/analytics/anomalies", OTHER_ADMIN()))["data"] == []
    assert (await ok("/v1/analytics/anomalies?org_id=org-2", OTHER_ADMIN()))["data"] == []
    series = await ok("/v1/analytics/timeseries?scope=org&id=org-2&grain=day", OTHER_ADMIN())
    assert sum(p["total_tokens"] for p in series["data"]) == 2000
    # Usage recorded under org-1 is invisible to org-2's admin even when they name its user, key or team.
    for scope, id_ in (("user", "u1"), ("key", "key-u1"), ("team", "team-a")):
        other = await ok(f"/v1/analytics/timeseries?scope={scope}&id={id_}&grain=day", OTHER_ADMIN())
        assert other["data"] == [], scope
    mine = await ok("/v1/analytics/timeseries?scope=team&id=team-a&grain=day", ADMIN())
    assert sum(p["requests"] for p in mine["data"]) == 5

    # Naming another org is refused, platform admins included.
    for headers, org in ((OTHER_ADMIN(), "org-1"), (ADMIN(), "org-2"), (PLATFORM_ADMIN(), "org-2")):
        for path in (
            f"/v1/analytics/leaderboard?org_id={org}",
            f"/v1/analytics/baseline?org_id={org}",
            f"/v1/analytics/anomalies?org_id={org}",
            f"/api/v1/analytics/anomalies?org_id={org}",
            f"/v1/analytics/timeseries?scope=org&id={org}",
            f"/v1/analytics/thresholds?org_id={org}",
        ):
            assert_forbidden(await get(api, path, headers), "other_org")
    # A plain user naming another org is refused too rather than silently served their own.
    assert_forbidden(await get(api, "/v1/analytics/leaderboard?org_id=org-2", MEMBER()), "other_org")


async def test_org_admins_set_their_own_thresholds_and_only_platform_admins_the_global_ones(
    api: httpx.AsyncClient,
) -> None:
    async def put(path: str, body: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
        return await api.put(path, json=body, headers=headers)

    r = await put("/v1/analytics/thresholds?org_id=org-2", {"loop_consecutive": 6}, OTHER_ADMIN())
    assert r.status_code == 200, r.text
    assert (r.json()["org_id"], r.json()["overrides"]) == ("org-2", {"loop_consecutive": 6})
    # Another org's admin can neither change nor read org-2's overrides, nor touch the global row.
    assert_forbidden(await put("/v1/analytics/thresholds?org_id=org-2", {}, ADMIN()), "other_org")
    assert_forbidden(await get(api, "/v1/analytics/thresholds?org_id=org-2", ADMIN()), "other_org")
    refused = await put("/v1/analytics/thresholds", {"loop_consecutive": 9}, ADMIN())
    assert_forbidden(refused, "platform_admin_required")
    assert refused.json()["error"]["param"] == "org_id"
    assert (await get(api, "/v1/analytics/thresholds", ADMIN())).json()["overrides"] == {}

    # The platform admin changes the global row; org-2's own override still wins for org-2.
    r = await put(
        "/v1/analytics/thresholds", {"loop_consecutive": 9, "rate_max_requests": 50}, PLATFORM_ADMIN()
    )
    assert r.status_code == 200, r.text
    assert r.json()["overrides"] == {"loop_consecutive": 9, "rate_max_requests": 50}
    own = (await get(api, "/v1/analytics/thresholds?org_id=org-2", OTHER_ADMIN())).json()
    assert (own["effective"]["loop_consecutive"], own["effective"]["rate_max_requests"]) == (6, 50)
    assert (await get(api, "/v1/analytics/thresholds", OTHER_ADMIN())).json()["effective"][
        "loop_consecutive"
    ] == 9
    assert_forbidden(await put("/v1/analytics/thresholds?org_id=org-2", {}, PLATFORM_ADMIN()), "other_org")


async def test_a_report_counts_the_same_requests_in_its_totals_and_its_top_users(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch the worker commits between the report's two queries (the rollup, then the request log) shows in
    neither: the report reads one snapshot. Read as two separate statements, the totals said one request while
    the top users named two people (a CI failure of the team-report end-to-end test)."""
    h = UsageHandler(Ingest(pool))
    await h.handle(usage("u1", "team-a").model_dump_json().encode())
    fetch = asyncpg.connection.Connection.fetch
    written = False

    async def fetch_then_write(self: asyncpg.Connection, query: str, *args: Any, **kwargs: Any) -> Any:
        nonlocal written
        rows = await fetch(self, query, *args, **kwargs)
        if "FROM usage_rollup" in query and not written:
            written = True  # before the write: the ingest's own reads must not write again
            await h.handle(usage("u2", "team-a").model_dump_json().encode())
        return rows

    monkeypatch.setattr(asyncpg.connection.Connection, "fetch", fetch_then_write)
    reports = Reports(pool, Thresholds())
    manager = Principal(user_id="m1", org_id="org-1", role="user", managed_team_ids=("team-a",))
    first = await reports.report(manager, "team", "team-a", 1)
    assert written
    assert first["totals"]["requests"] == 1 and [u["name"] for u in first["top_users"]] == ["u1"]
    second = await reports.report(manager, "team", "team-a", 1)
    assert second["totals"]["requests"] == 2 and [u["requests"] for u in second["top_users"]] == [1, 1]
