"""A team manager reads their team's usage report through the gateway; a plain member of the team cannot.

Whole stack: the admin builds the team through quota's management API, both people chat, the analytics worker
aggregates their usage from the broker, and the manager's principal (from quota) names the team they manage.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from leaky_devinfra.testing import eventually

pytestmark = pytest.mark.e2e

AGGREGATION_DEADLINE_S = 20.0


async def _user(admin: httpx.AsyncClient, name: str) -> dict[str, Any]:
    r = await admin.post(
        "/v1/admin/users",
        json={"email": f"{name}-{uuid.uuid4().hex[:8]}@example.com", "name": name, "personal_quota": 100_000},
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


async def test_a_manager_reads_the_team_report_and_a_member_is_refused(
    stack: Any, admin: httpx.AsyncClient
) -> None:
    team = await admin.post("/v1/admin/teams", json={"name": f"reports-{uuid.uuid4().hex[:8]}"})
    assert team.status_code == 201, team.text
    team_id = team.json()["id"]
    manager, member = await _user(admin, "manager"), await _user(admin, "member")
    for person, role in ((manager, "manager"), (member, "member")):
        r = await admin.post(f"/v1/admin/teams/{team_id}/members/{person['id']}", json={"role": role})
        assert r.status_code in (200, 201), r.text

    def client(person: dict[str, Any]) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=stack.gateway_url, headers={"Authorization": f"Bearer {person['api_key']}"}, timeout=30
        )

    body = {
        "model": "mock-gpt",
        "messages": [{"role": "user", "content": "weekly summary"}],
        "max_tokens": 16,
    }
    report_path = f"/v1/analytics/report?scope=team&id={team_id}&days=1"
    async with client(manager) as boss, client(member) as worker:
        for who in (boss, worker):
            chat = await who.post("/v1/chat/completions", json=body)
            assert chat.status_code == 200, chat.text

        async def both_counted() -> dict[str, Any] | None:
            r = await boss.get(report_path)
            assert r.status_code == 200, r.text
            report: dict[str, Any] = r.json()
            users = {u["name"] for u in report["top_users"]}
            return report if users == {manager["id"], member["id"]} else None

        report = await eventually(
            both_counted, AGGREGATION_DEADLINE_S, "both people's usage in the team report", interval=0.2
        )
        assert report["scope"] == "team" and report["id"] == team_id
        assert report["totals"]["requests"] == 2 and report["totals"]["total_tokens"] > 0
        assert [m["name"] for m in report["by_model"]] == ["mock-gpt"]

        refused = await worker.get(report_path)
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["type"] == "permission_error"
        org = await boss.get(f"/api/v1/analytics/report?scope=org&id={manager['org_id']}")
        assert org.status_code == 403 and org.json()["error"]["code"] == "admin_required"
        alias = await boss.get(f"/api/v1/analytics/report?scope=team&id={team_id}&days=1")
        assert alias.status_code == 200 and alias.json()["totals"]["requests"] == 2
