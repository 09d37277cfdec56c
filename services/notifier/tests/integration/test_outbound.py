"""Outbound safety in the notifier with real Postgres: the guard at configuration and at send time (a name
that re-resolves inward is refused), no redirects, no echoed answers, secrets sealed, plaintext rows from
before sealing sealed at start-up and re-sealed under a new key (rotation)."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from aiohttp import web

from leaky_common.auth import Principal
from leaky_common.db import create_database
from leaky_common.sealing import new_key
from leaky_devinfra.infra import free_port
from lt_notifier.main import create_app
from lt_notifier.settings import NotifierSettings

pytestmark = pytest.mark.integration

TOKEN = "integration-internal-token"
KEY1 = f"k1:{new_key()}"
KEY2 = f"k2:{new_key()}"
CHANNELS = "/v1/admin/notifications/channels"


def headers() -> dict[str, str]:
    p = Principal(user_id="admin-1", org_id="org-1", role="admin", platform_admin=True)
    return {"X-LT-Principal": p.header_value(), "X-LT-Internal-Token": TOKEN}


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[tuple[int, list[str]]]:
    port, hits = free_port(), []

    async def handle(request: web.Request) -> web.Response:
        hits.append(request.path)
        if request.path == "/redirect":
            return web.Response(status=307, headers={"Location": f"http://127.0.0.1:{port}/moved"})
        if request.path == "/fail":
            return web.Response(status=503, text="private upstream detail")
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield port, hits
    finally:
        await runner.cleanup()


@pytest.fixture(scope="module")
async def settings(postgres_url: str, kafka_bootstrap: str) -> NotifierSettings:
    suffix = uuid.uuid4().hex[:8]
    return NotifierSettings(
        database_url=await create_database(postgres_url, f"notifier_out_{suffix}"),
        kafka_bootstrap=kafka_bootstrap,
        topics=[f"purchase.out.{suffix}", f"alerts.out.{suffix}", f"quota.out.{suffix}"],
        consumer_group=f"notifier-out-{suffix}",
        internal_token=TOKEN,
        environment="test",
        log_json=False,
        channel_secret_keys=KEY1,
        outbound_allow_networks=["127.0.0.1/32"],
        delivery_timeout_s=2.0,
    )


async def _send_test(api: httpx.AsyncClient, channel_id: str) -> dict[str, Any]:
    resp = await api.post(f"{CHANNELS}/{channel_id}/test", headers=headers())
    assert resp.status_code == 200, resp.text
    result: dict[str, Any] = resp.json()
    return result


async def test_the_guard_runs_again_at_send_time(
    api: httpx.AsyncClient, receiver: tuple[int, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, hits = receiver
    refused = await api.post(
        CHANNELS, json={"channel": "slack", "url": f"http://127.0.0.2:{port}/x"}, headers=headers()
    )
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "destination_not_allowed"
    assert "127.0.0.2" not in refused.json()["error"]["message"].split("url is not")[1]

    # A name that resolved to an allowed address when configured, and to a refused one when sending.
    answers = {"hooks.rebind.test": "127.0.0.1"}
    real = asyncio.get_running_loop().getaddrinfo

    async def fake_dns(host: str, port_: Any, **kw: Any) -> Any:
        if host in answers:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (answers[host], port_))]
        return await real(host, port_, **kw)

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", fake_dns)
    created = await api.post(
        CHANNELS,
        json={"channel": "slack", "url": f"http://hooks.rebind.test:{port}/rebind"},
        headers=headers(),
    )
    assert created.status_code == 201, created.text
    assert await _send_test(api, created.json()["id"]) == {"ok": True, "error": None}
    answers["hooks.rebind.test"] = "169.254.169.254"
    result = await _send_test(api, created.json()["id"])
    assert result == {"ok": False, "error": "destination refused: metadata address"}
    assert hits.count("/rebind") == 1


async def test_no_redirect_followed_and_no_answer_echoed(
    api: httpx.AsyncClient, receiver: tuple[int, list[str]]
) -> None:
    port, hits = receiver
    for path, expected in (("/redirect", "HTTP 307"), ("/fail", "HTTP 503")):
        created = await api.post(
            CHANNELS, json={"channel": "teams", "url": f"http://127.0.0.1:{port}{path}"}, headers=headers()
        )
        assert created.status_code == 201, created.text
        assert await _send_test(api, created.json()["id"]) == {"ok": False, "error": expected}
    assert "/moved" not in hits


async def test_plaintext_rows_are_sealed_at_start_and_resealed_on_rotation(
    api: httpx.AsyncClient, settings: NotifierSettings, receiver: tuple[int, list[str]]
) -> None:
    port, hits = receiver
    url = f"http://127.0.0.1:{port}/legacy/{uuid.uuid4().hex}"
    db = await asyncpg.connect(settings.database_url)
    try:
        # A row as it was stored before sealing (plaintext URL and token).
        await db.execute(
            "INSERT INTO webhook_subscriptions (id, channel, url, url_shown, config, secrets, active)"
            " VALUES ('ch_legacy', 'slack', $1, $1, '{}', '{\"bot_token\": \"1:legacy-plain\"}', true)",
            url,
        )
        assert await _send_test(api, "ch_legacy") == {"ok": True, "error": None}  # still usable

        async def stored() -> tuple[str, str]:
            row = await db.fetchrow(
                "SELECT url, secrets::text AS s FROM webhook_subscriptions WHERE id = 'ch_legacy'"
            )
            assert row is not None
            return row["url"], row["s"]

        for keys, key_id in ((KEY1, "k1"), (f"{KEY2},{KEY1}", "k2")):
            app = create_app(settings.model_copy(update={"channel_secret_keys": keys}))
            async with app.router.lifespan_context(app):
                pass  # start-up seals plaintext rows and re-seals rows of older keys
            sealed_url, secrets = await stored()
            assert sealed_url.startswith(f"enc:v1:{key_id}:") and url not in sealed_url
            assert orjson.loads(secrets)["bot_token"].startswith(f"enc:v1:{key_id}:")
            assert "legacy-plain" not in secrets
    finally:
        await db.close()
    # The module's notifier still holds only k1: a row re-sealed under k2 no longer opens for it (a 500 would
    # be a bug: the send reports it instead).
    assert await _send_test(api, "ch_legacy") == {"ok": False, "error": "channel secrets do not open"}
    assert hits.count(url.split(str(port))[1]) == 1
