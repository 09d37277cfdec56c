"""Authorization rules of quota against real PostgreSQL and Redis (issue 17): keys never widen their owner's
rights, restricted/frozen keys and suspended users manage within bounds, approvals and vacations are bounded
and audited, session freezes and the number of new sessions are per org."""

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from leaky_common.auth import Principal
from leaky_common.db import create_database
from leaky_common.events import FreezeChanged, RequestFreeze, parse_message
from leaky_devinfra.testing import TEST_KEYS
from lt_quota.main import create_app
from lt_quota.settings import QuotaSettings

pytestmark = pytest.mark.integration

ADMIN_KEY = "lt-test-admin-" + uuid.uuid4().hex


def internal_headers(principal_json: str | None = None) -> dict[str, str]:
    """The gateway's signed assertion for quota: a caller's, or a user's with the principal quota authenticated
    (one place, so a change of the internal identity touches only this)."""
    if principal_json is None:
        return TEST_KEYS.headers("quota")
    return TEST_KEYS.headers("quota", Principal.model_validate_json(principal_json))


@dataclass
class Harness:
    client: httpx.AsyncClient
    service: Any

    async def call(self, method: str, path: str, api_key: str = ADMIN_KEY, **kw: Any) -> httpx.Response:
        r = await self.client.post(
            "/internal/authenticate", json={"api_key": api_key}, headers=internal_headers()
        )
        assert r.status_code == 200, r.text
        return await self.client.request(method, path, headers=internal_headers(r.text), **kw)

    async def user(self, quota: int = 100_000, api_key: str = ADMIN_KEY, **extra: Any) -> dict[str, Any]:
        body = {
            "email": f"{uuid.uuid4().hex[:10]}@example.com",
            "name": "U",
            "personal_quota": quota,
            **extra,
        }
        r = await self.call("POST", "/v1/admin/users", api_key, json=body)
        assert r.status_code == 201, r.text
        return dict(r.json())

    async def admit(self, api_key: str, **fields: Any) -> httpx.Response:
        body: dict[str, Any] = {
            "api_key": api_key,
            "request_id": uuid.uuid4().hex,
            "model": "mock-gpt",
            "provider": "mock",
        }
        body.update({"prompt_tokens": 10, **fields})
        return await self.client.post("/internal/admit", json=body, headers=internal_headers())

    async def key(self, api_key: str, **fields: Any) -> httpx.Response:
        return await self.call("POST", "/v1/users/me/keys", api_key, json=fields)


@pytest.fixture(scope="module")
async def database_url(postgres_url: str) -> str:
    return await create_database(postgres_url, f"quota_authz_{uuid.uuid4().hex[:10]}")


@pytest.fixture
def settings(database_url: str, redis_url: str, kafka_bootstrap: str) -> QuotaSettings:
    return QuotaSettings(
        _env_file=None,
        environment="test",
        database_url=database_url,
        redis_url=redis_url,
        kafka_bootstrap=kafka_bootstrap,
        **TEST_KEYS.settings(),
        bootstrap_admin_key=ADMIN_KEY,
        redis_prefix=f"lt:{uuid.uuid4().hex[:8]}:",
        consumer_group=f"quota-{uuid.uuid4().hex[:8]}",
        sweep_interval_s=3600,
        key_cache_ttl_s=0,
        log_json=False,
        status_changes_per_day=3,
        sessions_per_org_per_day=3,
    )


@contextlib.asynccontextmanager
async def running(settings: QuotaSettings) -> AsyncIterator[Harness]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://quota") as client:
            yield Harness(client, app.state.quota)


def code(r: httpx.Response) -> str:
    return str(r.json()["error"]["code"])


async def test_a_key_cannot_grant_the_priority_bypass(settings: QuotaSettings) -> None:
    async with running(settings) as h:
        team = (
            await h.call("POST", "/v1/admin/teams", json={"name": uuid.uuid4().hex[:8], "pool": 1000})
        ).json()
        user = await h.user(quota=10)
        await h.call("POST", f"/v1/admin/teams/{team['id']}/members/{user['id']}", json={"role": "member"})
        # Who may not: a user without the admin-granted right, neither by creating a key nor with one.
        r = await h.key(user["api_key"], allowed_priorities=["critical"])
        assert r.status_code == 403 and code(r) == "priority_not_allowed"
        async with h.service.db.acquire() as conn:  # a key made before the fix (or by a bug) grants nothing
            await conn.execute(
                "UPDATE api_keys SET allowed_priorities = '{critical}' WHERE user_id = $1", user["id"]
            )
        r = await h.admit(user["api_key"], priority="critical", max_output_tokens=50)
        assert r.status_code == 403 and code(r) == "priority_not_allowed"
        # Who may: once an admin grants the right, the key and the team pool work.
        await h.call("PATCH", f"/v1/admin/users/{user['id']}", json={"allow_priority_bypass": True})
        assert (await h.key(user["api_key"], allowed_priorities=["critical"])).status_code == 201
        r = await h.admit(user["api_key"], priority="critical", max_output_tokens=50)
        assert r.status_code == 200 and r.json()["quota_source"] == "priority_bypass"


async def test_a_restricted_key_makes_only_narrower_keys_and_manages_only_itself(
    settings: QuotaSettings,
) -> None:
    async with running(settings) as h:
        user = await h.user()
        free = user["api_key"]
        sibling = (await h.key(free, name="sibling")).json()
        narrow = (
            await h.key(
                free, allowed_models=["mock-*"], max_tokens=1000, expires_in_days=5, cap_period="daily"
            )
        ).json()
        key = narrow["api_key"]
        for wider in (
            {},
            {"allowed_models": ["gpt-4o"], "max_tokens": 10, "expires_in_days": 1, "cap_period": "daily"},
            {"allowed_models": ["mock-*"], "max_tokens": 2000, "expires_in_days": 1, "cap_period": "daily"},
            {"allowed_models": ["mock-*"], "max_tokens": 10, "expires_in_days": 30, "cap_period": "daily"},
            {"allowed_models": ["mock-*"], "max_tokens": 10, "expires_in_days": 1, "cap_period": "monthly"},
        ):
            r = await h.key(key, **wider)
            assert r.status_code == 403 and code(r) == "key_wider_than_caller", (wider, r.text)
        ok = await h.key(
            key, allowed_models=["mock-gpt"], max_tokens=10, expires_in_days=1, cap_period="daily"
        )
        assert ok.status_code == 201, ok.text
        # Siblings are out of reach: no rotate, revoke or change; itself it may rotate.
        for method, path in (
            ("POST", f"/v1/users/me/keys/{sibling['id']}/rotate"),
            ("DELETE", f"/v1/users/me/keys/{sibling['id']}"),
            ("PATCH", f"/v1/users/me/keys/{sibling['id']}"),
        ):
            r = await h.call(method, path, key, **({"json": {}} if method == "PATCH" else {}))
            assert r.status_code == 403 and code(r) == "restricted_key", (method, path, r.text)
        rotated = await h.call("POST", f"/v1/users/me/keys/{narrow['id']}/rotate", key)
        assert rotated.status_code == 201, rotated.text
        # The unrestricted key still manages everything.
        assert (await h.call("DELETE", f"/v1/users/me/keys/{sibling['id']}", free)).status_code == 200


async def test_suspended_users_and_frozen_keys_manage_nothing(settings: QuotaSettings) -> None:
    async with running(settings) as h:
        user = await h.user()
        first = (await h.call("GET", "/v1/users/me/keys", user["api_key"])).json()["data"][0]["id"]
        other = (await h.key(user["api_key"], name="other")).json()
        r = await h.call(
            "POST",
            "/v1/admin/freezes",
            json={"target_type": "key", "target_id": first, "reason": "x"},
        )
        assert r.status_code in (200, 201), r.text
        r = await h.key(user["api_key"])
        assert r.status_code == 403 and code(r) == "key_frozen"
        r = await h.call("POST", f"/v1/users/me/keys/{other['id']}/rotate", user["api_key"])
        assert r.status_code == 403 and code(r) == "key_frozen"
        assert (await h.call("GET", "/v1/users/me/keys", user["api_key"])).status_code == 200  # reads stay
        # The other key is not frozen, so it may still manage; suspending the user stops it too.
        assert (await h.key(other["api_key"])).status_code == 201
        await h.call("PATCH", f"/v1/admin/users/{user['id']}", json={"status": "suspended"})
        r = await h.key(other["api_key"])
        assert r.status_code == 403 and code(r) == "user_suspended"
        r = await h.call("PUT", "/v1/users/me/status", other["api_key"], json={"status": "active"})
        assert r.status_code == 403 and code(r) == "user_suspended"
        # An expired key is not even authenticated: it manages nothing.
        async with h.service.db.acquire() as conn:
            await conn.execute(
                "UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = $1", other["id"]
            )
        r = await h.client.post(
            "/internal/authenticate", json={"api_key": other["api_key"]}, headers=internal_headers()
        )
        assert r.status_code == 401


async def test_restricted_admin_keys_change_no_admin_setting(settings: QuotaSettings) -> None:
    async with running(settings) as h:
        narrow = (await h.key(ADMIN_KEY, allowed_models=["mock-*"])).json()["api_key"]
        assert (await h.call("GET", "/v1/admin/users", narrow)).status_code == 200
        r = await h.call("PATCH", "/v1/admin/org", narrow, json={"vacation_share_percent": 50})
        assert r.status_code == 403 and code(r) == "restricted_key"


async def test_approvals_grant_at_most_what_was_asked_and_the_manager_limit(settings: QuotaSettings) -> None:
    async with running(settings) as h:
        team = (await h.call("POST", "/v1/admin/teams", json={"name": uuid.uuid4().hex[:8]})).json()
        member, manager = await h.user(), await h.user()
        for u, role in ((member, "member"), (manager, "manager")):
            await h.call("POST", f"/v1/admin/teams/{team['id']}/members/{u['id']}", json={"role": role})
        ask = await h.call("POST", "/v1/approvals", member["api_key"], json={"requested_credits": 1})
        r = await h.call(
            "POST",
            f"/v1/approvals/{ask.json()['id']}/approve",
            manager["api_key"],
            json={"approved_credits": 10**15},
        )
        assert r.status_code == 400 and code(r) == "above_requested"
        await h.call("PATCH", "/v1/admin/org", json={"manager_approval_limit": 500})
        big = await h.call("POST", "/v1/approvals", member["api_key"], json={"requested_credits": 1000})
        r = await h.call("POST", f"/v1/approvals/{big.json()['id']}/approve", manager["api_key"])
        assert r.status_code == 400 and code(r) == "above_manager_limit"
        r = await h.call(
            "POST",
            f"/v1/approvals/{big.json()['id']}/approve",
            manager["api_key"],
            json={"approved_credits": 500},
        )
        assert r.status_code == 200 and r.json()["approved_credits"] == 500
        # An admin is bounded only by the request.
        ask = await h.call("POST", "/v1/approvals", member["api_key"], json={"requested_credits": 800})
        r = await h.call("POST", f"/v1/approvals/{ask.json()['id']}/approve")
        assert r.status_code == 200 and r.json()["approved_credits"] == 800
        async with h.service.db.acquire() as conn:
            audited = await conn.fetchval(
                "SELECT count(*) FROM audit_log WHERE action = 'approval' AND org_id = $1", member["org_id"]
            )
        assert audited == 2


async def test_self_set_vacations_end_are_limited_and_audited(settings: QuotaSettings) -> None:
    async with running(settings) as h:
        user = await h.user()
        far = (datetime.now(UTC) + timedelta(days=400)).isoformat()
        r = await h.call(
            "PUT", "/v1/users/me/status", user["api_key"], json={"status": "on_vacation", "until": far}
        )
        assert r.status_code == 400 and code(r) == "vacation_too_long"
        r = await h.call("PUT", "/v1/users/me/status", user["api_key"], json={"status": "on_vacation"})
        assert r.status_code == 200, r.text
        until = datetime.fromisoformat(r.json()["vacation_until"])
        assert timedelta(days=29) < until - datetime.now(UTC) <= timedelta(days=30)
        for status in ("active", "on_vacation"):
            assert (
                await h.call("PUT", "/v1/users/me/status", user["api_key"], json={"status": status})
            ).status_code == 200
        r = await h.call("PUT", "/v1/users/me/status", user["api_key"], json={"status": "active"})
        assert r.status_code == 400 and code(r) == "too_many_status_changes"
        async with h.service.db.acquire() as conn:
            rows = await conn.fetch("SELECT detail FROM audit_log WHERE actor_user_id = $1", user["id"])
        assert len(rows) == 3


async def test_session_freezes_and_new_sessions_are_per_org(settings: QuotaSettings) -> None:
    async with running(settings) as h:
        user = await h.user()
        session = "shared-" + uuid.uuid4().hex[:6]
        # A detector freeze naming no org belongs to nobody: dropped, nobody's session is blocked.
        await h.service.freezes.freeze(
            RequestFreeze(
                producer="analytics", target_type="session", target_id=session, reason="loop", duration_s=60
            )
        )
        assert (await h.admit(user["api_key"], session_id=session)).status_code == 200
        # Another org's freeze of the same session id neither blocks nor is listed or lifted by this org.
        other = await h.call(
            "POST", "/v1/admin/orgs", json={"name": uuid.uuid4().hex[:8], "admin_email": "a@b.example"}
        )
        other_admin = other.json()["admin"]["api_key"]
        await h.service.freezes.freeze(
            RequestFreeze(
                producer="analytics",
                target_type="session",
                target_id=session,
                org_id=other.json()["id"],
                reason="loop",
                duration_s=60,
            )
        )
        assert (await h.admit(user["api_key"], session_id=session)).status_code == 200
        listed = (await h.call("GET", "/v1/admin/freezes", ADMIN_KEY)).json()["data"]
        assert session not in [f["target_id"] for f in listed]
        mine = (await h.call("GET", "/v1/admin/freezes", other_admin)).json()["data"]
        assert [f["target_id"] for f in mine] == [session]
        # Its announcement names the org, so that org's channels hear "Session frozen".
        async with h.service.db.acquire() as conn:
            rows = await conn.fetch("SELECT value FROM outbox WHERE topic = 'quota.events' ORDER BY id")
        announced = [parse_message(bytes(r["value"])) for r in rows]
        frozen = [m for m in announced if isinstance(m, FreezeChanged) and m.target_id == session]
        assert [(m.org_id, m.frozen) for m in frozen] == [(other.json()["id"], True)]
        # New sessions per org and day are bounded (3 in these settings): the 4th new id is a 429, old ones work.
        for i in range(2):
            assert (await h.admit(user["api_key"], session_id=f"{session}-{i}")).status_code == 200
        r = await h.admit(user["api_key"], session_id=f"{session}-new")
        assert r.status_code == 429 and code(r) == "too_many_sessions"
        assert (await h.admit(user["api_key"], session_id=session)).status_code == 200
        # The other org still has room.
        assert (await h.admit(other_admin, session_id=f"{session}-x")).status_code == 200
