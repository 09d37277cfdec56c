"""Two notifier instances on one database (real Postgres and broker): a delivery is sent by one of them only,
even when sends are slower than a claim's lease covers (a batch queued behind the concurrency limit)."""

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp import web

from leaky_common.db import create_database
from leaky_common.events import PurchaseCompleted
from leaky_common.kafka import EventPublisher
from leaky_common.sealing import new_key
from leaky_devinfra.infra import free_port
from leaky_devinfra.testing import TEST_KEYS
from leaky_devinfra.testing import eventually as wait_for
from lt_notifier.main import create_app
from lt_notifier.settings import NotifierSettings
from lt_notifier.usecases import delivery as delivery_module

from .test_webhooks import headers

pytestmark = pytest.mark.integration

EVENTS = 12
SEND_S = 0.3  # the receiver's answer time: a batch of EVENTS takes longer than a lease


@pytest.fixture
async def slow_receiver() -> AsyncIterator[tuple[str, list[str]]]:
    seen: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(SEND_S)  # a slow receiver, not a wait of the test
        seen.append(request.headers["X-LT-Delivery-Id"])
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/hook", seen
    finally:
        await runner.cleanup()


async def test_two_instances_never_send_one_delivery_twice(
    postgres_url: str,
    kafka_bootstrap: str,
    slow_receiver: tuple[str, list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, seen = slow_receiver
    # A claim's lease: 0.5 s of send timeout + 2 s; one instance alone needs EVENTS * SEND_S = 3.6 s per batch.
    monkeypatch.setattr(delivery_module, "LEASE_MARGIN_S", 2.0)
    suffix = uuid.uuid4().hex[:8]
    settings = NotifierSettings(
        database_url=await create_database(postgres_url, f"notifier_{suffix}"),
        kafka_bootstrap=kafka_bootstrap,
        topics=[f"purchase.inst.{suffix}", f"alerts.inst.{suffix}", f"quota.inst.{suffix}"],
        consumer_group=f"notifier-{suffix}",
        **TEST_KEYS.settings(),
        environment="test",
        log_json=False,
        channel_secret_keys=f"t1:{new_key()}",
        outbound_allow_networks=["127.0.0.1/32"],
        delivery_poll_interval_s=0.05,
        delivery_timeout_s=0.5,
        delivery_concurrency=1,
        delivery_batch=EVENTS,
    )
    apps = [create_app(settings), create_app(settings)]
    publisher = EventPublisher(settings)
    async with (
        apps[0].router.lifespan_context(apps[0]),
        apps[1].router.lifespan_context(apps[1]),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=apps[0]), base_url="http://notifier") as api,
    ):
        resp = await api.post(
            "/v1/admin/notifications/webhooks",
            json={"url": url, "event_types": ["PurchaseCompleted.v1"]},
            headers=headers(),
        )
        assert resp.status_code == 201, resp.text
        await publisher.start()
        try:
            for _ in range(EVENTS):
                event = PurchaseCompleted(purchase_id=uuid.uuid4().hex, user_id="u1", amount=1)
                await publisher.publish(settings.topics[0], event)
        finally:
            await publisher.stop()

        async def all_delivered() -> bool:
            resp = await api.get(
                "/v1/admin/notifications/deliveries", params={"status": "delivered"}, headers=headers()
            )
            return len(resp.json()["data"]) == EVENTS

        await wait_for(all_delivered, timeout=30)
    twice = {d: n for d, n in Counter(seen).items() if n > 1}
    assert twice == {}, f"sent more than once: {twice}"
    assert len(seen) == EVENTS
