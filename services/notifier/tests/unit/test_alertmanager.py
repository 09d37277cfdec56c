"""Alertmanager's webhook without I/O: its token is checked before the body, bad bodies are 4xx, and each alert
becomes a `PlatformAlert` with a stable id and a notification for platform-wide channels only."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from leaky_common.events import Message, PlatformAlert
from leaky_devinfra.testing import TEST_KEYS
from lt_notifier.domain.alertmanager import platform_alert
from lt_notifier.domain.notification import describe
from lt_notifier.main import create_app
from lt_notifier.settings import NotifierSettings

TOKEN = "alertmanager-test-token"


class FakeQueue:
    def __init__(self) -> None:
        self.seen: dict[str, Message] = {}

    async def notify(self, message: Message) -> bool:
        new = message.event_id not in self.seen
        self.seen[message.event_id] = message
        return new


def client(token: str | None = TOKEN) -> tuple[TestClient, FakeQueue]:
    settings = NotifierSettings(_env_file=None, **TEST_KEYS.settings(), alertmanager_token=token)
    app = create_app(settings)
    queue = FakeQueue()
    app.state.queue = queue  # what the lifespan sets (not run here)
    return TestClient(app, raise_server_exceptions=False), queue


def alert(status: str = "firing", **labels: str) -> dict[str, Any]:
    return {
        "status": status,
        "labels": {"alertname": "LtOutboxStuck", "severity": "page", "app": "quota", **labels},
        "annotations": {"summary": "quota's outbox is stuck\x1b[31m", "description": "d"},
        "startsAt": "2026-12-01T10:00:00Z",
        "fingerprint": "0123abcd",
    }


def body(*alerts: dict[str, Any]) -> dict[str, Any]:
    return {"version": "4", "status": "firing", "alerts": list(alerts)}


def test_a_valid_token_queues_each_alert_once() -> None:
    http, queue = client()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    resp = http.post(
        "/v1/alertmanager/alerts",
        json=body(alert(), {**alert(app="saga"), "fingerprint": "4567ef"}),
        headers=auth,
    )
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"received": 2, "new": 2}
    again = http.post("/v1/alertmanager/alerts", json=body(alert()), headers=auth)
    assert again.json() == {"received": 1, "new": 0}
    messages = list(queue.seen.values())
    assert all(isinstance(m, PlatformAlert) for m in messages)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": f"Basic {TOKEN}"},
        TEST_KEYS.headers("notifier"),
    ],
    ids=["none", "wrong", "not bearer", "gateway caller assertion"],
)
def test_anything_but_alertmanagers_token_is_a_401_before_the_body_is_read(headers: dict[str, str]) -> None:
    http, queue = client()
    for payload in (body(alert()), {"junk": True}):
        resp = http.post("/v1/alertmanager/alerts", json=payload, headers=headers)
        assert resp.status_code == 401, resp.text
    assert queue.seen == {}


def test_without_a_configured_token_nobody_may_post() -> None:
    http, queue = client(token=None)
    for auth in ("Bearer ", "Bearer None", f"Bearer {TOKEN}"):
        assert (
            http.post(
                "/v1/alertmanager/alerts", json=body(alert()), headers={"Authorization": auth}
            ).status_code
            == 401
        )
    assert queue.seen == {}


@pytest.mark.parametrize(
    "bad",
    [
        body({**alert(), "status": "exploded"}),
        body({**alert(), "fingerprint": "not-hex/../x"}),
        body({**alert(), "labels": {f"l{i}": "v" for i in range(100)}}),
        body({**alert(), "annotations": {"summary": "x" * 5000}}),
        body(*[alert()] * 201),
        {"version": "4", "status": "firing", "alerts": "junk"},
        {"alerts": []},
    ],
    ids=[
        "status",
        "fingerprint",
        "too many labels",
        "long annotation",
        "too many alerts",
        "junk",
        "no status",
    ],
)
def test_bad_bodies_are_4xx(bad: dict[str, Any]) -> None:
    http, queue = client()
    resp = http.post("/v1/alertmanager/alerts", json=bad, headers={"Authorization": f"Bearer {TOKEN}"})
    assert 400 <= resp.status_code < 500 and resp.status_code != 401, resp.text
    assert queue.seen == {}


def test_the_event_id_is_stable_per_alert_status_and_start() -> None:
    start = datetime(2026, 12, 1, 10, tzinfo=UTC)
    labels = {"alertname": "LtTargetDown", "severity": "page"}
    firing = platform_alert("firing", labels, {}, start, None, "ab12")
    assert (
        firing.event_id
        == platform_alert("firing", labels, {"summary": "reworded"}, start, None, "ab12").event_id
    )
    assert firing.event_id != platform_alert("resolved", labels, {}, start, start, "ab12").event_id
    assert (
        firing.event_id != platform_alert("firing", labels, {}, start.replace(hour=11), None, "ab12").event_id
    )
    assert firing.event_id != platform_alert("firing", labels, {}, start, None, "cd34").event_id


def test_the_notification_is_for_no_org_and_pages_are_critical() -> None:
    start = datetime(2026, 12, 1, 10, tzinfo=UTC)
    labels = {"alertname": "LtOutboxStuck", "severity": "page", "app": "quota", "instance": "quota:8082"}
    message = platform_alert("firing", labels, {"summary": "stuck\x00\x1b[2J"}, start, None, "ab")
    note = describe(message)
    assert note is not None
    assert (note.severity, note.title, note.org_id, note.team_id, note.user_id) == (
        "critical", "Alert: LtOutboxStuck", None, None, None
    )  # fmt: skip
    assert note.text == "stuck  [2J" and all(c.isprintable() for c in note.text)
    assert ("App", "quota") in note.facts and ("Instance", "quota:8082") in note.facts
    resolved = describe(platform_alert("resolved", labels, {}, start, start, "ab"))
    assert (
        resolved is not None and resolved.severity == "info" and resolved.title == "Resolved: LtOutboxStuck"
    )
    warning = describe(platform_alert("firing", {**labels, "severity": "warning"}, {}, start, None, "ab"))
    assert warning is not None and warning.severity == "warning"
