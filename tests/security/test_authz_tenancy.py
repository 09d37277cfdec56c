"""Authorization and tenancy against a live local stack (issue 17, findings 2, 3, 5, 7, 8 and "unbounded
sessions per org"). Every test here failed on the code before the fix (see docs/security.md).

The stack is started here (free ports) with `LT_SESSIONS_PER_ORG_PER_DAY=6`, so the session bound is reached
with a handful of requests. Two orgs: A (the bootstrap org, whose admin is a platform admin) and B (made here).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from leaky_devinfra.infra import pid_alive
from leaky_devinfra.testing import eventually

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "deploy" / "local" / "stack.py"
SESSIONS_PER_DAY = 6
CHAT = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}


@dataclass(frozen=True)
class Live:
    gateway_url: str
    admin_key: str


@pytest.fixture(scope="module")
def live() -> Iterator[Live]:
    run_dir = Path(tempfile.mkdtemp(prefix="lt-authz-"))
    env = {**os.environ, "LT_SESSIONS_PER_ORG_PER_DAY": str(SESSIONS_PER_DAY)}
    up = subprocess.run(
        [sys.executable, str(STACK), "up", "--run-dir", str(run_dir), "--ports", "auto"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    if up.returncode != 0:
        subprocess.run([sys.executable, str(STACK), "down", "--run-dir", str(run_dir)], check=False)
        pytest.fail(f"stack did not start:\n{up.stdout}\n{up.stderr}")
    values: dict[str, str] = {}
    for line in (run_dir / "stack.env").read_text().splitlines():
        name, _, value = line.partition("=")
        values[name.strip()] = value
    pids = json.loads((run_dir / "stack.json").read_text())["pids"]
    try:
        yield Live(values["LT_GATEWAY_URL"].strip(), values["LT_ADMIN_KEY"].strip())
    finally:
        subprocess.run(
            [sys.executable, str(STACK), "down", "--run-dir", str(run_dir)], check=False, capture_output=True
        )
        left = {name: pid for name, pid in pids.items() if pid_alive(int(pid))}
        assert not left, f"`stack.py down` left processes running: {left}"


@dataclass
class Orgs:
    """Clients by API key, and the two orgs' admins."""

    url: str
    admin_a: str
    admin_b: str
    clients: dict[str, httpx.AsyncClient]

    def as_(self, key: str) -> httpx.AsyncClient:
        if key not in self.clients:
            self.clients[key] = httpx.AsyncClient(
                base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=30
            )
        return self.clients[key]

    async def user(self, admin: str, **extra: Any) -> dict[str, Any]:
        body = {
            "email": f"u-{uuid.uuid4().hex[:8]}@example.com",
            "name": "U",
            "personal_quota": 100_000,
            **extra,
        }
        r = await self.as_(admin).post("/v1/admin/users", json=body)
        assert r.status_code == 201, r.text
        return dict(r.json())


@pytest.fixture(scope="module")
async def orgs(live: Live) -> AsyncIterator[Orgs]:
    o = Orgs(live.gateway_url, live.admin_key, "", {})
    made = await o.as_(live.admin_key).post(
        "/v1/admin/orgs", json={"name": f"b-{uuid.uuid4().hex[:6]}", "admin_email": "admin@b.example"}
    )
    assert made.status_code == 201, made.text
    o.admin_b = made.json()["admin"]["api_key"]
    try:
        yield o
    finally:
        for client in o.clients.values():
            await client.aclose()


def error_code(r: httpx.Response) -> str:
    return str(r.json()["error"]["code"])


async def test_finding_2_a_key_cannot_grant_itself_the_priority_bypass(orgs: Orgs) -> None:
    team = await orgs.as_(orgs.admin_a).post(
        "/v1/admin/teams", json={"name": uuid.uuid4().hex[:8], "pool": 10**6}
    )
    member = await orgs.user(orgs.admin_a, personal_quota=1)
    await orgs.as_(orgs.admin_a).post(f"/v1/admin/teams/{team.json()['id']}/members/{member['id']}", json={})
    me = orgs.as_(member["api_key"])
    r = await me.post("/v1/users/me/keys", json={"allowed_priorities": ["critical"]})
    assert r.status_code == 403 and error_code(r) == "priority_not_allowed", r.text
    chat = await me.post("/v1/chat/completions", json=CHAT, headers={"X-Project-Priority": "critical"})
    assert chat.status_code == 403, chat.text


async def test_finding_3_sessions_are_per_org(orgs: Orgs) -> None:
    session = f"agent-{uuid.uuid4().hex[:8]}"
    a_user = await orgs.user(orgs.admin_a)
    a_org = a_user["org_id"]
    # Org A watches its agents closely: 5 requests a minute.
    put = await orgs.as_(orgs.admin_a).put(
        "/v1/analytics/thresholds", params={"org_id": a_org}, json={"rate_max_requests": 5}
    )
    assert put.status_code == 200, put.text
    # An unauthenticated client (bad key, unknown model) names org A's session eight times...
    stranger = orgs.as_("lt-not-a-key")
    for _ in range(8):
        r = await stranger.post(
            "/v1/chat/completions", json={**CHAT, "model": "no-such-model"}, headers={"X-Session-ID": session}
        )
        assert r.status_code in (400, 401, 404), r.text
    # ...then the owner sends one request: the session is not frozen, no anomaly is raised.
    owner = orgs.as_(a_user["api_key"])
    assert (
        await owner.post("/v1/chat/completions", json=CHAT, headers={"X-Session-ID": session})
    ).status_code == 200
    admin_a = orgs.as_(orgs.admin_a)

    async def recorded() -> bool:
        series = await admin_a.get(
            "/v1/analytics/timeseries", params={"scope": "session", "id": session, "grain": "minute"}
        )
        return series.status_code == 200 and sum(p["requests"] for p in series.json()["data"]) == 1

    await eventually(recorded, 30, "the owner's request counted once for its session")
    anomalies = (await admin_a.get("/v1/analytics/anomalies")).json()["data"]
    assert [a for a in anomalies if a["session_id"] == session] == []

    # Org B's agent loops on a session of the same id: B's freeze is B's (listed to B's admins only).
    b_user = await orgs.user(orgs.admin_b)
    agent = orgs.as_(b_user["api_key"])
    loop = {**CHAT, "messages": [{"role": "user", "content": "again " + session}]}
    for _ in range(4):
        await agent.post("/v1/chat/completions", json=loop, headers={"X-Session-ID": session})
    admin_b = orgs.as_(orgs.admin_b)

    async def frozen_in_b() -> bool:
        listed = (await admin_b.get("/v1/admin/freezes")).json()["data"]
        return any(f["target_id"] == session for f in listed)

    await eventually(frozen_in_b, 30, "org B's session frozen and listed to org B")
    listed_a = (await admin_a.get("/v1/admin/freezes")).json()["data"]
    assert session not in [f["target_id"] for f in listed_a]
    lifted = await admin_a.delete(f"/v1/admin/freezes/session/{session}")
    assert lifted.status_code == 200 and lifted.json()["lifted"] == 0
    # Org A's session of that id is not frozen.
    assert (
        await owner.post("/v1/chat/completions", json=CHAT, headers={"X-Session-ID": session})
    ).status_code == 200


async def test_finding_5_usage_of_another_orgs_user_is_a_404(orgs: Orgs) -> None:
    a_user = await orgs.user(orgs.admin_a)
    owner = orgs.as_(a_user["api_key"])
    assert (await owner.post("/v1/chat/completions", json=CHAT)).status_code == 200
    admin_a = orgs.as_(orgs.admin_a)

    async def counted() -> bool:
        r = await admin_a.get("/v1/analytics/usage", params={"user_id": a_user["id"]})
        return r.status_code == 200 and r.json()["total_requests"] == 1

    await eventually(counted, 30, "usage readable by the user's own org admin")
    r = await orgs.as_(orgs.admin_b).get("/v1/analytics/usage", params={"user_id": a_user["id"]})
    assert r.status_code == 404 and error_code(r) == "user_not_found", r.text


async def test_finding_7_restricted_frozen_and_suspended_keys_manage_within_bounds(orgs: Orgs) -> None:
    user = await orgs.user(orgs.admin_a)
    me = orgs.as_(user["api_key"])
    narrow = (
        await me.post("/v1/users/me/keys", json={"allowed_models": ["mock-*"], "max_tokens": 100})
    ).json()
    sibling = (await me.post("/v1/users/me/keys", json={"name": "sibling"})).json()
    restricted = orgs.as_(narrow["api_key"])
    r = await restricted.post("/v1/users/me/keys", json={})
    assert r.status_code == 403 and error_code(r) == "key_wider_than_caller", r.text
    r = await restricted.post(f"/v1/users/me/keys/{sibling['id']}/rotate")
    assert r.status_code == 403 and error_code(r) == "restricted_key", r.text
    # A frozen key mints nothing (the freeze cannot be sidestepped with a new key).
    keys = (await me.get("/v1/users/me/keys")).json()["data"]
    first = next(k["id"] for k in keys if k["key_prefix"] == user["api_key"][:11])
    frozen = await orgs.as_(orgs.admin_a).post(
        "/v1/admin/freezes", json={"target_type": "key", "target_id": first, "reason": "runaway"}
    )
    assert frozen.status_code == 201, frozen.text
    r = await me.post("/v1/users/me/keys", json={})
    assert r.status_code == 403 and error_code(r) == "key_frozen", r.text
    # A suspended user manages nothing, with any key.
    await orgs.as_(orgs.admin_a).patch(f"/v1/admin/users/{user['id']}", json={"status": "suspended"})

    async def refused() -> bool:
        r = await orgs.as_(sibling["api_key"]).post(f"/v1/users/me/keys/{narrow['id']}/rotate")
        return r.status_code == 403 and error_code(r) == "user_suspended"

    await eventually(refused, 15, "a suspended user's sibling key refused")


async def test_finding_8_approvals_and_vacations_are_bounded(orgs: Orgs) -> None:
    admin = orgs.as_(orgs.admin_a)
    team = (await admin.post("/v1/admin/teams", json={"name": uuid.uuid4().hex[:8]})).json()
    member, manager = await orgs.user(orgs.admin_a), await orgs.user(orgs.admin_a)
    await admin.post(f"/v1/admin/teams/{team['id']}/members/{member['id']}", json={"role": "member"})
    await admin.post(f"/v1/admin/teams/{team['id']}/members/{manager['id']}", json={"role": "manager"})
    asked = await orgs.as_(member["api_key"]).post("/v1/approvals", json={"requested_credits": 1})
    assert asked.status_code == 201, asked.text
    boss = orgs.as_(manager["api_key"])

    async def decided() -> httpx.Response:
        return await boss.post(
            f"/v1/approvals/{asked.json()['id']}/approve", json={"approved_credits": 10**15}
        )

    r = await eventually(lambda: _not_forbidden(decided), 15, "the manager's rights reached quota")
    assert r.status_code == 400 and error_code(r) == "above_requested", r.text
    me = orgs.as_(member["api_key"])
    for status in ("on_vacation", "active", "on_vacation", "active"):
        ok = await me.put("/v1/users/me/status", json={"status": status})
        assert ok.status_code == 200, ok.text
    r = await me.put("/v1/users/me/status", json={"status": "on_vacation"})
    assert r.status_code == 400 and error_code(r) == "too_many_status_changes", r.text


async def _not_forbidden(call: Any) -> httpx.Response | None:
    r: httpx.Response = await call()
    return None if r.status_code == 403 else r


async def test_unbounded_sessions_per_org_are_bounded(orgs: Orgs) -> None:
    b_user = await orgs.user(orgs.admin_b)
    agent = orgs.as_(b_user["api_key"])
    statuses, opened = [], []
    for i in range(SESSIONS_PER_DAY + 1):
        session = f"s-{i}-{uuid.uuid4().hex[:6]}"
        r = await agent.post("/v1/chat/completions", json=CHAT, headers={"X-Session-ID": session})
        statuses.append(r.status_code)
        if r.status_code == 200:
            opened.append(session)
        if r.status_code == 429:
            assert error_code(r) == "too_many_sessions", r.text
    # Org B may already have sessions from another test in this module: at most SESSIONS_PER_DAY in total.
    assert statuses[-1] == 429 and opened
    again = await agent.post("/v1/chat/completions", json=CHAT, headers={"X-Session-ID": opened[0]})
    assert again.status_code == 200, again.text
    # The org's other members are refused a new session too; an old session still works; org A still has room.
    assert (
        await orgs.as_(orgs.admin_b).post(
            "/v1/chat/completions", json=CHAT, headers={"X-Session-ID": "fresh"}
        )
    ).status_code == 429
    a_user = await orgs.user(orgs.admin_a)
    assert (
        await orgs.as_(a_user["api_key"]).post(
            "/v1/chat/completions", json=CHAT, headers={"X-Session-ID": "fresh"}
        )
    ).status_code == 200
