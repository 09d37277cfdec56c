"""Governance edges against real PostgreSQL and Redis: thresholds when an admin lowers a limit below the
usage, bucket sizes per team, and a user's primary team (who may set them, who may not, which org)."""

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from leaky_common.auth import Principal
from leaky_common.db import create_database
from leaky_common.events import QuotaThresholdReached, UsageRecorded, parse_message
from leaky_devinfra.testing import TEST_KEYS
from lt_quota.main import create_app
from lt_quota.settings import QuotaSettings

pytestmark = pytest.mark.integration

ADMIN_KEY = "lt-test-admin-" + uuid.uuid4().hex


@dataclass
class Harness:
    client: httpx.AsyncClient
    service: Any

    async def call(self, method: str, path: str, api_key: str = ADMIN_KEY, **kw: Any) -> httpx.Response:
        caller = TEST_KEYS.headers("quota")
        r = await self.client.post("/internal/authenticate", json={"api_key": api_key}, headers=caller)
        assert r.status_code == 200, r.text
        principal = Principal.model_validate_json(r.text)
        return await self.client.request(method, path, headers=TEST_KEYS.headers("quota", principal), **kw)

    async def user(self, quota: int = 100_000, admin_key: str = ADMIN_KEY) -> dict[str, Any]:
        body = {"email": f"{uuid.uuid4().hex[:10]}@example.com", "name": "U", "personal_quota": quota}
        r = await self.call("POST", "/v1/admin/users", admin_key, json=body)
        assert r.status_code == 201, r.text
        return dict(r.json())

    async def team(self, pool: int | None = None, admin_key: str = ADMIN_KEY) -> dict[str, Any]:
        r = await self.call(
            "POST", "/v1/admin/teams", admin_key, json={"name": uuid.uuid4().hex[:10], "pool": pool}
        )
        assert r.status_code == 201, r.text
        return dict(r.json())

    async def join(self, team: dict[str, Any], user: dict[str, Any]) -> None:
        r = await self.call(
            "POST", f"/v1/admin/teams/{team['id']}/members/{user['id']}", json={"role": "member"}
        )
        assert r.status_code in (200, 201), r.text

    async def admit(self, api_key: str, **fields: Any) -> httpx.Response:
        body = {"api_key": api_key, "request_id": uuid.uuid4().hex, "model": "mock-gpt", "provider": "mock"}
        return await self.client.post(
            "/internal/admit",
            json={"prompt_tokens": 10, **body, **fields},
            headers=TEST_KEYS.headers("quota"),
        )

    async def spend(self, user: dict[str, Any], tokens: int) -> None:
        r = await self.admit(
            user["api_key"], prompt_tokens=tokens - 1, max_output_tokens=1, min_output_tokens=1
        )
        assert r.status_code == 200, r.text
        a = r.json()
        await self.service.settlement.settle_usage(
            UsageRecorded(
                request_id=uuid.uuid4().hex, reservation_id=a["reservation_id"], user_id=user["id"],
                key_id=a["principal"]["key_id"], pool_id=a["pool_id"], quota_source=a["quota_source"],
                model="mock-gpt", provider="mock", total_tokens=tokens,
            )
        )  # fmt: skip

    async def thresholds(self, pool_id: str) -> list[tuple[int, int, int]]:
        """(percent, used, limit) of the thresholds announced for a pool, in order."""
        async with self.service.db.acquire() as conn:
            rows = await conn.fetch("SELECT value FROM outbox WHERE topic = 'quota.events' ORDER BY id")
        found = [parse_message(bytes(r["value"])) for r in rows]
        return [
            (m.percent, m.used, m.limit)
            for m in found
            if isinstance(m, QuotaThresholdReached) and m.pool_id == pool_id
        ]

    async def other_org_admin(self) -> str:
        body = {"name": f"org-{uuid.uuid4().hex[:8]}", "admin_email": f"{uuid.uuid4().hex[:8]}@b.example"}
        r = await self.call("POST", "/v1/admin/orgs", json=body)
        assert r.status_code == 201, r.text
        return str(r.json()["admin"]["api_key"])


@pytest.fixture(scope="module")
async def database_url(postgres_url: str) -> str:
    return await create_database(postgres_url, f"quota_edges_{uuid.uuid4().hex[:10]}")


@pytest.fixture
def settings(database_url: str, redis_url: str, kafka_bootstrap: str) -> QuotaSettings:
    return QuotaSettings(
        _env_file=None, environment="test", database_url=database_url, redis_url=redis_url,
        kafka_bootstrap=kafka_bootstrap, bootstrap_admin_key=ADMIN_KEY,
        redis_prefix=f"lt:{uuid.uuid4().hex[:8]}:", consumer_group=f"quota-{uuid.uuid4().hex[:8]}",
        sweep_interval_s=3600, key_cache_ttl_s=0, log_json=False, **TEST_KEYS.settings(),
    )  # fmt: skip


@contextlib.asynccontextmanager
async def running(settings: QuotaSettings) -> AsyncIterator[Harness]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://quota") as client:
            yield Harness(client, app.state.quota)


async def test_lowering_a_limit_below_the_usage_announces_the_thresholds_it_now_reaches(
    settings: QuotaSettings,
) -> None:
    async with running(settings) as h:
        user = await h.user(quota=1000)
        pool = f"/v1/admin/pools/{user['pool_id']}"
        await h.spend(user, 500)
        assert await h.thresholds(user["pool_id"]) == []
        assert (await h.call("PATCH", pool, json={"limit": 2000})).status_code == 200  # raised: nothing
        assert await h.thresholds(user["pool_id"]) == []
        assert (await h.call("PATCH", pool, json={"limit": 600})).status_code == 200  # 83 %
        assert await h.thresholds(user["pool_id"]) == [(80, 500, 600)]
        assert (await h.call("PATCH", pool, json={"limit": 500})).status_code == 200  # 100 %
        assert await h.thresholds(user["pool_id"]) == [(80, 500, 600), (90, 500, 500), (100, 500, 500)]
        # Once per threshold and period, whether a charge or a limit change reached it.
        assert (await h.call("PATCH", pool, json={"limit": 400})).status_code == 200
        assert len(await h.thresholds(user["pool_id"])) == 3


async def test_team_bucket_sizes_override_the_org_and_only_admins_of_the_org_set_them(
    settings: QuotaSettings,
) -> None:
    async with running(settings) as h:
        team, user, outsider = await h.team(), await h.user(), await h.user()
        await h.join(team, user)
        path = f"/v1/admin/teams/{team['id']}/buckets"
        default = (await h.admit(user["api_key"])).json()["ratelimit"]["limit_requests"]
        r = await h.call("PATCH", path, json={"key_requests_per_period": 3, "user_tokens_per_period": 99_000})
        assert r.status_code == 200, r.text
        assert (r.json()["key_requests_per_period"], r.json()["key_tokens_per_period"]) == (3, None)
        assert (await h.admit(user["api_key"])).json()["ratelimit"]["limit_requests"] == 3
        assert (await h.admit(outsider["api_key"])).json()["ratelimit"]["limit_requests"] == default
        # A key owner may not exceed the team's size for their keys.
        keys = (await h.call("GET", "/v1/users/me/keys", user["api_key"])).json()["data"]
        r = await h.call(
            "PATCH",
            f"/v1/users/me/keys/{keys[0]['id']}",
            user["api_key"],
            json={"rate_limit_requests_per_period": 4},
        )
        assert r.status_code == 400 and r.json()["error"]["code"] == "rate_limit_above_org_limit"
        # Bad sizes are 400s; null goes back to the org's.
        for bad in ({"key_requests_per_period": 0}, {"key_tokens_per_period": "many"}, {"burst": 3}):
            assert (await h.call("PATCH", path, json=bad)).status_code == 400
        assert (await h.call("PATCH", path, json={"key_requests_per_period": None})).status_code == 200
        assert (await h.admit(user["api_key"])).json()["ratelimit"]["limit_requests"] == default
        # Who may not: a member (403), an admin of another org (404, as if it did not exist).
        r = await h.call("PATCH", path, user["api_key"], json={"key_requests_per_period": 1000})
        assert r.status_code == 403
        r = await h.call("PATCH", path, await h.other_org_admin(), json={"key_requests_per_period": 1000})
        assert r.status_code == 404 and r.json()["error"]["code"] == "team_not_found"


async def test_the_primary_team_set_by_an_admin_is_charged_and_shown_in_users_me(
    settings: QuotaSettings,
) -> None:
    async with running(settings) as h:
        first, second, elsewhere = await h.team(pool=1000), await h.team(pool=1000), await h.team()
        user = await h.user(quota=10)
        await h.join(first, user)
        await h.join(second, user)
        await h.call("PATCH", f"/v1/admin/users/{user['id']}", json={"allow_priority_bypass": True})
        me = (await h.call("GET", "/v1/users/me", user["api_key"])).json()
        assert (me["team_id"], me["primary_team_id"]) == (first["id"], None)

        path = f"/v1/admin/users/{user['id']}/primary-team"
        r = await h.call("PUT", path, json={"team_id": second["id"]})
        assert r.status_code == 200 and r.json()["team_id"] == second["id"]
        me = (await h.call("GET", "/v1/users/me", user["api_key"])).json()
        assert (me["team_id"], me["primary_team_id"]) == (second["id"], second["id"])
        a = (await h.admit(user["api_key"], priority="critical", max_output_tokens=50)).json()
        assert (a["principal"]["team_id"], a["quota_source"], a["pool_id"]) == (
            second["id"], "priority_bypass", second["pool_id"],
        )  # fmt: skip

        # Only a team the user is in; null goes back to the team joined first.
        r = await h.call("PUT", path, json={"team_id": elsewhere["id"]})
        assert r.status_code == 400 and r.json()["error"]["code"] == "not_team_member"
        assert (await h.call("PUT", path, json={})).status_code == 400
        assert (await h.call("PUT", path, json={"team_id": None})).json()["team_id"] == first["id"]

        # Who may not: the user themselves (403); another org's admin, for this user or with their own team.
        assert (await h.call("PUT", path, user["api_key"], json={"team_id": second["id"]})).status_code == 403
        other = await h.other_org_admin()
        r = await h.call("PUT", path, other, json={"team_id": second["id"]})
        assert r.status_code == 404 and r.json()["error"]["code"] == "user_not_found"
        their_team = await h.team(admin_key=other)
        r = await h.call("PUT", path, json={"team_id": their_team["id"]})
        assert r.status_code == 404 and r.json()["error"]["code"] == "team_not_found"


async def test_consume_settles_a_zero_usd_leg_of_a_key_with_a_usd_cap(settings: QuotaSettings) -> None:
    """A charge priced at 0 micro-dollars against a usd cap reserves 0 on that leg; settling it once sent Redis
    `HINCRBY reserved -0` (Lua's negative zero), which Redis refuses as "not an integer": a 500 (found by the
    OpenAPI fuzzing after another case had given a key a usd cap)."""
    async with running(settings) as h:
        user = await h.user(quota=1000)
        r = await h.call("POST", "/v1/users/me/keys", user["api_key"], json={"max_usd_micros": 5_000_000})
        assert r.status_code == 201, r.text
        key = r.json()["api_key"]
        r = await h.call("POST", "/api/v1/tokens/consume", key, json={"tokens": 7})
        assert r.status_code == 200, r.text
        r = await h.call("POST", "/api/v1/tokens/consume", key, json={"tokens": 3})
        assert r.status_code == 200, r.text
        assert r.json()["remaining"] == 990
        r = await h.call("POST", "/api/v1/tokens/consume", key, json={"tokens": 1.5})
        assert r.status_code == 400, r.text
