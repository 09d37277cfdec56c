"""A runaway agent repeating one prompt through the gateway is frozen, people are told, and unfreeze restores it.

Whole stack (gateway, quota, analytics worker and API, notifier) on the real broker, Postgres and Redis; a
local fake Slack (which checks the Block Kit payload) is the only stand-in.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from leaky_devinfra.fakes.chat import FakeChannels
from leaky_devinfra.testing import eventually

pytestmark = pytest.mark.e2e

# The analytics default (LT_ANOMALY_THRESHOLDS): the same prompt 4 times in a row freezes the session.
LOOP_COUNT = 4
DETECTION_DEADLINE_S = 5.0


@pytest.fixture
async def slack(fakes_port: int) -> AsyncIterator[FakeChannels]:
    fake = FakeChannels()
    await fake.start(port=fakes_port)  # the address and port the stack's notifier is allowed to reach
    try:
        yield fake
    finally:
        await fake.stop()


async def test_runaway_loop_is_frozen_alerted_and_unfrozen(
    stack: Any, admin: httpx.AsyncClient, slack: FakeChannels
) -> None:
    hook_path = f"/slack/services/T0E2E/B0E2E/{uuid.uuid4().hex[:12]}"
    channel = await admin.post(
        "/v1/admin/notifications/channels",
        json={
            "channel": "slack",
            "url": f"{slack.base_url}{hook_path}",
            "event_types": ["AnomalyDetected.v1", "FreezeChanged.v1"],
            "min_severity": "info",
        },
    )
    assert channel.status_code == 201, channel.text
    # The bootstrap admin is a platform admin (quota -> gateway -> notifier): the channel hears every org.
    assert channel.json()["org_id"] is None

    user = await admin.post(
        "/v1/admin/users",
        json={
            "email": f"agent-{uuid.uuid4().hex[:8]}@example.com",
            "name": "Runaway agent",
            "personal_quota": 100_000,
        },
    )
    assert user.status_code == 201, user.text
    key, user_id = user.json()["api_key"], user.json()["id"]
    session = f"agent-run-{uuid.uuid4().hex[:10]}"
    body = {"model": "mock-gpt", "messages": [{"role": "user", "content": "try again"}], "max_tokens": 16}

    async with httpx.AsyncClient(
        base_url=stack.gateway_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as agent:

        async def ask(session_id: str = session) -> httpx.Response:
            return await agent.post("/v1/chat/completions", json=body, headers={"X-Session-ID": session_id})

        for i in range(LOOP_COUNT):
            resp = await ask()
            assert resp.status_code == 200, (i, resp.text)
        last_ok = time.monotonic()

        async def session_frozen() -> dict[str, Any] | None:
            resp = await admin.get("/v1/admin/freezes")
            assert resp.status_code == 200, resp.text
            live = [
                f for f in resp.json()["data"] if (f["target_type"], f["target_id"]) == ("session", session)
            ]
            return live[0] if live else None

        freeze = await eventually(
            session_frozen, timeout=DETECTION_DEADLINE_S, what="session frozen", interval=0.05
        )
        detected_in = time.monotonic() - last_ok
        assert detected_in < DETECTION_DEADLINE_S
        assert "Loop detected" in freeze["reason"]

        denied = await ask()
        assert denied.status_code == 403, denied.text
        error = denied.json()["error"]
        assert error["code"] == "frozen"
        assert "Loop detected" in error["message"]
        # Only that session is frozen: the same user in another session still works.
        assert (await ask(f"other-{uuid.uuid4().hex[:6]}")).status_code == 200

        def alerts() -> list[dict[str, Any]]:
            return [r.body for r in slack.of("slack") if r.path == hook_path]

        async def alerted() -> list[dict[str, Any]] | None:
            texts = [a["text"] for a in alerts()]
            has_anomaly = any("Anomaly: loop (frozen)" in t for t in texts)
            has_freeze = any("Session frozen" in t for t in texts)
            return alerts() if has_anomaly and has_freeze else None

        received = await eventually(alerted, timeout=15, what="Slack alert")
        assert slack.rejected == []
        anomaly_alert = next(a for a in received if "Anomaly: loop" in a["text"])
        assert anomaly_alert["blocks"][0] == {
            "type": "header",
            "text": {"type": "plain_text", "text": "Anomaly: loop (frozen)", "emoji": True},
        }
        assert session in str(anomaly_alert["blocks"])

        # The user sees the detection in their own anomalies list (through the gateway).
        mine = await agent.get("/v1/analytics/anomalies")
        assert mine.status_code == 200, mine.text
        assert [(a["kind"], a["session_id"], a["frozen"]) for a in mine.json()["data"]] == [
            ("loop", session, True)
        ]
        assert mine.json()["data"][0]["user_id"] == user_id

        # Unfreeze restores service at once.
        lifted = await admin.delete(f"/v1/admin/freezes/session/{session}")
        assert lifted.status_code == 200, lifted.text
        assert lifted.json()["frozen"] is False
        restored = await ask()
        assert restored.status_code == 200, restored.text
        await eventually(
            lambda: any("Session unfrozen" in a["text"] for a in alerts()), timeout=15, what="unfreeze alert"
        )
