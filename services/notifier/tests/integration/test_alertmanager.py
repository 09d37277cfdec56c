"""Alertmanager's webhook against a real notifier (Postgres, broker): each alert reaches the platform-wide
channels once when it fires and once when it resolves, however often Alertmanager posts it; an org's own
subscription never sees it; nobody without Alertmanager's token can post one."""

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web

from leaky_common.auth import Principal
from leaky_common.db import create_database
from leaky_common.sealing import new_key
from leaky_devinfra.infra import free_port
from leaky_devinfra.testing import TEST_KEYS
from leaky_devinfra.testing import eventually as wait_for
from lt_notifier.settings import NotifierSettings

pytestmark = pytest.mark.integration

TOKEN = "am-" + uuid.uuid4().hex


class Receiver:
    """Records every POST /hook/{name}."""

    def __init__(self) -> None:
        self.port = free_port()
        self.hits: list[tuple[str, dict[str, Any]]] = []

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/hook/{name}"

    def to(self, name: str) -> list[dict[str, Any]]:
        return [body for hook, body in self.hits if hook == name]

    async def handle(self, request: web.Request) -> web.Response:
        self.hits.append((request.match_info["name"], orjson.loads(await request.read())))
        return web.Response(status=200)


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/hook/{name}", rec.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", rec.port).start()
    try:
        yield rec
    finally:
        await runner.cleanup()


@pytest.fixture(scope="module")
async def settings(postgres_url: str, kafka_bootstrap: str, receiver: Receiver) -> NotifierSettings:
    suffix = uuid.uuid4().hex[:8]
    return NotifierSettings(
        database_url=await create_database(postgres_url, f"notifier_am_{suffix}"),
        kafka_bootstrap=kafka_bootstrap,
        topics=[f"purchase.am.{suffix}", f"alerts.am.{suffix}", f"quota.am.{suffix}"],
        consumer_group=f"notifier-am-{suffix}",
        **TEST_KEYS.settings(),
        environment="test",
        log_json=False,
        alertmanager_token=TOKEN,
        notifier_webhook_url=receiver.url("default"),
        channel_secret_keys=f"t1:{new_key()}",
        outbound_allow_networks=["127.0.0.1/32"],
        delivery_poll_interval_s=0.05,
        delivery_timeout_s=2.0,
    )


def admin(platform: bool) -> dict[str, str]:
    p = Principal(user_id="a-1", org_id="org-1", role="admin", platform_admin=platform)
    return TEST_KEYS.headers("notifier", p)


def webhook(status: str, fingerprint: str, **annotations: str) -> dict[str, Any]:
    return {
        "version": "4",
        "status": status,
        "receiver": "notifier",
        "groupLabels": {"alertname": "LtTargetDown"},
        "alerts": [
            {
                "status": status,
                "labels": {
                    "alertname": "LtTargetDown",
                    "severity": "page",
                    "app": "quota",
                    "job": "leaky-tokens",
                },
                "annotations": {"summary": "Prometheus cannot scrape quota", **annotations},
                "startsAt": "2026-12-01T10:00:00Z",
                "endsAt": "2026-12-01T10:05:00Z" if status == "resolved" else "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus:9090/graph",
                "fingerprint": fingerprint,
            }
        ],
    }


async def subscribe(api: httpx.AsyncClient, url: str, *, platform: bool) -> str:
    body = {"url": url, "event_types": ["PlatformAlert.v1"]}
    resp = await api.post("/v1/admin/notifications/webhooks", json=body, headers=admin(platform))
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


async def test_an_alert_reaches_the_platform_channels_once_per_firing_and_resolution(
    api: httpx.AsyncClient, receiver: Receiver
) -> None:
    await subscribe(api, receiver.url("platform"), platform=True)
    await subscribe(api, receiver.url("org"), platform=False)
    fingerprint = uuid.uuid4().hex[:16]
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for _ in range(3):  # Alertmanager repeats a firing alert (retries, group changes, repeat_interval)
        resp = await api.post("/v1/alertmanager/alerts", json=webhook("firing", fingerprint), headers=auth)
        assert resp.status_code == 200, resp.text
    assert resp.json() == {"received": 1, "new": 0}
    resolved = await api.post("/v1/alertmanager/alerts", json=webhook("resolved", fingerprint), headers=auth)
    assert resolved.json() == {"received": 1, "new": 1}

    async def both_delivered() -> list[dict[str, Any]] | None:
        mine = [b for b in receiver.to("platform") if b["data"]["labels"].get("app") == "quota"]
        return mine if len(mine) >= 2 else None

    bodies = await wait_for(both_delivered)
    assert sorted(b["data"]["status"] for b in bodies) == ["firing", "resolved"]
    assert {b["type"] for b in bodies} == {"PlatformAlert.v1"}
    assert bodies[0]["data"]["alertname"] == "LtTargetDown"
    assert bodies[0]["data"]["summary"] == "Prometheus cannot scrape quota"
    # The env-configured default (platform-wide) webhook gets them too; the org's own subscription never.
    await wait_for(lambda: len(receiver.to("default")) >= 2)
    assert receiver.to("org") == []
    rows = (await api.get("/v1/admin/notifications/deliveries", headers=admin(False))).json()["data"]
    assert not [r for r in rows if r["event_type"] == "PlatformAlert.v1"], "an org admin sees platform alerts"


async def test_nobody_without_alertmanagers_token_may_post(
    api: httpx.AsyncClient, receiver: Receiver
) -> None:
    before = len(receiver.hits)
    body = webhook("firing", uuid.uuid4().hex[:16])
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": TOKEN},  # not a bearer
        admin(True),  # a platform admin's gateway assertion is not Alertmanager
        {**admin(True), "Authorization": "Bearer "},
    ):
        resp = await api.post("/v1/alertmanager/alerts", json=body, headers=headers)
        assert resp.status_code == 401, (headers, resp.text)
        assert resp.headers["www-authenticate"] == "Bearer"
    resp = await api.post(
        "/v1/alertmanager/alerts", json={"alerts": "junk"}, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert 400 <= resp.status_code < 500 and resp.status_code != 401
    assert len(receiver.hits) == before
