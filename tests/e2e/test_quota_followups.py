"""Quota follow-ups through the public gateway: per-key bucket sizes and organisations."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.e2e

CHAT = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}


async def test_a_key_with_its_own_bucket_size_is_limited_alone(stack: Any, admin: httpx.AsyncClient) -> None:
    r = await admin.post(
        "/v1/admin/users", json={"email": f"rl-{uuid.uuid4().hex[:8]}@example.com", "name": "Agent owner"}
    )
    assert r.status_code == 201, r.text
    default_key = r.json()["api_key"]
    async with httpx.AsyncClient(
        base_url=stack.gateway_url, headers={"Authorization": f"Bearer {default_key}"}, timeout=30
    ) as owner:
        r = await owner.post("/v1/users/me/keys", json={"name": "agent", "rate_limit_requests_per_period": 3})
        assert r.status_code == 201, r.text
        agent_key = r.json()["api_key"]
        async with httpx.AsyncClient(
            base_url=stack.gateway_url, headers={"Authorization": f"Bearer {agent_key}"}, timeout=30
        ) as agent:
            for _ in range(3):
                r = await agent.post("/v1/chat/completions", json=CHAT)
                assert r.status_code == 200, r.text
                assert r.headers["x-ratelimit-limit-requests"] == "3"
            r = await agent.post("/v1/chat/completions", json=CHAT)
            assert r.status_code == 429, r.text
            assert int(r.headers["retry-after"]) >= 1
            assert r.json()["error"]["code"] == "rate_limited"
        # The owner's other key is not limited by the agent's bucket.
        r = await owner.post("/v1/chat/completions", json=CHAT)
        assert r.status_code == 200, r.text
        assert int(r.headers["x-ratelimit-limit-requests"]) > 3


async def test_a_new_org_is_run_by_its_own_admin_only(stack: Any, admin: httpx.AsyncClient) -> None:
    name = f"e2e-org-{uuid.uuid4().hex[:8]}"
    r = await admin.post("/v1/admin/orgs", json={"name": name, "admin_email": "ops@new.example"})
    assert r.status_code == 201, r.text
    org = r.json()
    async with httpx.AsyncClient(
        base_url=stack.gateway_url, headers={"Authorization": f"Bearer {org['admin']['api_key']}"}, timeout=30
    ) as other:
        assert (await other.get("/v1/admin/org")).json()["id"] == org["id"]
        users = (await other.get("/v1/admin/users")).json()["data"]
        assert [u["email"] for u in users] == ["ops@new.example"]
        assert (await other.get("/v1/admin/orgs")).status_code == 403
        r = await other.post("/v1/chat/completions", json=CHAT)
        assert r.status_code == 200, r.text
        # Analytics and the notifier keep the new org's admin in their org too (through the gateway).
        platform_org = (await admin.get("/v1/admin/org")).json()["id"]
        for path in (
            f"/v1/analytics/leaderboard?org_id={platform_org}",
            f"/v1/analytics/anomalies?org_id={platform_org}",
            f"/v1/analytics/thresholds?org_id={platform_org}",
        ):
            r = await other.get(path)
            assert r.status_code == 403 and r.json()["error"]["code"] == "other_org", (path, r.text)
        r = await other.put("/v1/analytics/thresholds", json={"loop_consecutive": 9})
        assert r.status_code == 403 and r.json()["error"]["code"] == "platform_admin_required", r.text
        r = await other.put(f"/v1/analytics/thresholds?org_id={org['id']}", json={"loop_consecutive": 9})
        assert r.status_code == 200 and r.json()["org_id"] == org["id"], r.text
        channel = {"channel": "slack", "url": "https://hooks.slack.example/services/T/B/x"}
        r = await other.post("/v1/admin/notifications/channels", json={**channel, "org_id": platform_org})
        assert r.status_code == 403 and r.json()["error"]["code"] == "other_org", r.text
        r = await other.post("/v1/admin/notifications/channels", json=channel)
        assert r.status_code == 201 and r.json()["org_id"] == org["id"], r.text
        assert [c["id"] for c in (await other.get("/v1/admin/notifications/channels")).json()["data"]] == [
            r.json()["id"]
        ]
        assert (await other.delete(f"/v1/admin/notifications/channels/{r.json()['id']}")).status_code == 204
    listed = (await admin.get("/v1/admin/orgs")).json()["data"]
    assert name in {o["name"] for o in listed}
    mine = {u["id"] for u in (await admin.get("/v1/admin/users")).json()["data"]}
    assert org["admin"]["id"] not in mine
