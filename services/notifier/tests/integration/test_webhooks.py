"""Real Postgres and broker; a local aiohttp server stands in for the customers' webhook receivers."""

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan

from leaky_common.auth import Principal
from leaky_common.db import create_database
from leaky_common.events import Message, PurchaseCompleted, PurchaseFailed, QuotaThresholdReached
from leaky_common.sealing import new_key
from leaky_common.webhook_signing import new_secret, verify
from leaky_devinfra.infra import free_port
from leaky_devinfra.spans import capture_spans
from leaky_devinfra.testing import TEST_KEYS
from leaky_devinfra.testing import eventually as wait_for
from lt_notifier.settings import NotifierSettings

pytestmark = pytest.mark.integration

MAX_ATTEMPTS = 3
DEFAULT_SECRET = "default-hook-secret"  # made before `whsec_` secrets: its UTF-8 bytes are the key
SECRET = new_secret()


@dataclass
class Hit:
    name: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """Answers POST /hook/{name}: the next status from `script[name]`, then 200 once the script runs out."""

    port: int
    script: dict[str, list[int]] = field(default_factory=dict)
    hits: list[Hit] = field(default_factory=list)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/hook/{name}"

    def to(self, name: str) -> list[Hit]:
        return [h for h in self.hits if h.name == name]

    async def handle(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.hits.append(Hit(name, dict(request.headers), await request.read()))
        statuses = self.script.get(name)
        status = statuses.pop(0) if statuses else 200
        return web.Response(status=status)


Publish = Callable[[str, Message], Awaitable[None]]


def headers(role: str = "admin") -> dict[str, str]:
    p = Principal(user_id=f"{role}-1", org_id="org-1", role=role, platform_admin=True)
    return TEST_KEYS.headers("notifier", p)


@pytest.fixture(scope="module")
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver(port=free_port())
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
        database_url=await create_database(postgres_url, f"notifier_{suffix}"),
        kafka_bootstrap=kafka_bootstrap,
        topics=[f"purchase.test.{suffix}", f"alerts.test.{suffix}", f"quota.test.{suffix}"],
        consumer_group=f"notifier-{suffix}",
        **TEST_KEYS.settings(),
        environment="test",
        log_json=False,
        notifier_webhook_url=receiver.url("default"),
        notifier_webhook_secret=DEFAULT_SECRET,
        channel_secret_keys=f"t1:{new_key()}",
        outbound_allow_networks=["127.0.0.1/32"],  # the local receiver
        delivery_max_attempts=MAX_ATTEMPTS,
        delivery_backoff_base_s=0.05,
        delivery_backoff_max_s=0.2,
        delivery_poll_interval_s=0.05,
        delivery_timeout_s=2.0,
    )


async def create(api: httpx.AsyncClient, url: str, **body: Any) -> dict[str, Any]:
    resp = await api.post("/v1/admin/notifications/webhooks", json={"url": url, **body}, headers=headers())
    assert resp.status_code == 201, resp.text
    created: dict[str, Any] = resp.json()
    assert created["url"] == url
    assert created["event_types"] == body.get("event_types")
    return created


async def subscribe(api: httpx.AsyncClient, url: str, **body: Any) -> str:
    return str((await create(api, url, **body))["id"])


async def deliveries(api: httpx.AsyncClient, **params: str) -> list[dict[str, Any]]:
    resp = await api.get("/v1/admin/notifications/deliveries", params=params, headers=headers())
    assert resp.status_code == 200, resp.text
    return list(resp.json()["data"])


async def of_event(api: httpx.AsyncClient, event_id: str) -> list[dict[str, Any]]:
    return [d for d in await deliveries(api) if d["event_id"] == event_id]


def purchase(amount: int = 1000) -> PurchaseCompleted:
    return PurchaseCompleted(purchase_id=uuid.uuid4().hex, user_id="u1", amount=amount)


async def test_purchase_delivered_once_signed_even_when_duplicated(
    api: httpx.AsyncClient, publish: Publish, receiver: Receiver
) -> None:
    name = f"ok-{uuid.uuid4().hex[:6]}"
    created = await create(api, receiver.url(name), event_types=["PurchaseCompleted.v1"], secret=SECRET)
    sub = created["id"]
    assert created["has_secret"] and created["signing_secret"] is None  # given, so not echoed
    event = purchase(1000)
    await publish("purchase", event)
    await publish("purchase", event)  # redelivery: same event id
    # Events of one topic are handled in order: once the marker is delivered, the duplicate was handled.
    marker = purchase(1)
    await publish("purchase", marker)

    async def marker_delivered() -> bool:
        return any(orjson.loads(h.body)["id"] == marker.event_id for h in receiver.to(name))

    await wait_for(marker_delivered)
    hits = [h for h in receiver.to(name) if orjson.loads(h.body)["id"] == event.event_id]
    assert len(hits) == 1
    hit = hits[0]
    assert verify(SECRET, hit.headers, hit.body) == hit.headers["X-LT-Delivery-Id"]
    assert hit.headers["X-LT-Event-Type"] == "PurchaseCompleted.v1"
    assert hit.headers["Content-Type"] == "application/json"
    body = orjson.loads(hit.body)
    assert body["type"] == "PurchaseCompleted.v1"
    assert body["data"]["purchase_id"] == event.purchase_id
    assert body["data"]["amount"] == 1000

    rows = [d for d in await of_event(api, event.event_id) if d["subscription_id"] == sub]
    assert len(rows) == 1
    assert rows[0]["status"] == "delivered"
    assert rows[0]["attempts"] == 1
    assert rows[0]["id"] == hit.headers["X-LT-Delivery-Id"]

    # The env-configured default webhook gets every event too, signed with its own secret.
    async def default_got_it() -> list[Hit]:
        return [h for h in receiver.to("default") if orjson.loads(h.body)["id"] == event.event_id]

    (default_hit,) = await wait_for(default_got_it)
    verify(DEFAULT_SECRET, default_hit.headers, default_hit.body)
    assert (await api.delete(f"/v1/admin/notifications/webhooks/{sub}", headers=headers())).status_code == 204


async def test_retries_until_the_receiver_recovers(
    api: httpx.AsyncClient, publish: Publish, receiver: Receiver
) -> None:
    name = f"flaky-{uuid.uuid4().hex[:6]}"
    receiver.script[name] = [500, 503]
    created = await create(api, receiver.url(name), event_types=["PurchaseCompleted.v1"])
    sub, generated = created["id"], created["signing_secret"]
    assert generated.startswith("whsec_")  # no secret given: one is made and shown this once
    event = purchase()
    await publish("purchase", event)

    async def delivered() -> dict[str, Any] | None:
        rows = [d for d in await of_event(api, event.event_id) if d["subscription_id"] == sub]
        return rows[0] if rows and rows[0]["status"] == "delivered" else None

    row = await wait_for(delivered)
    assert row["attempts"] == 3
    assert row["last_error"] is None
    hits = receiver.to(name)
    assert len(hits) == 3
    assert {h.headers["X-LT-Delivery-Id"] for h in hits} == {row["id"]}
    # Every retry carries the same webhook-id (receivers deduplicate on it), each signed with the generated secret.
    assert {verify(generated, h.headers, h.body) for h in hits} == {row["id"]}
    await api.delete(f"/v1/admin/notifications/webhooks/{sub}", headers=headers())


async def test_gives_up_after_max_attempts(
    api: httpx.AsyncClient, publish: Publish, receiver: Receiver
) -> None:
    name = f"down-{uuid.uuid4().hex[:6]}"
    receiver.script[name] = [500] * 100
    sub = await subscribe(api, receiver.url(name), event_types=["PurchaseCompleted.v1"])
    event = purchase()
    await publish("purchase", event)

    async def dead() -> dict[str, Any] | None:
        rows = [d for d in await deliveries(api, status="dead") if d["subscription_id"] == sub]
        return rows[0] if rows else None

    row = await wait_for(dead)
    assert row["event_id"] == event.event_id
    assert row["attempts"] == MAX_ATTEMPTS
    assert row["last_error"] == "HTTP 500"
    assert len(receiver.to(name)) == MAX_ATTEMPTS
    await api.delete(f"/v1/admin/notifications/webhooks/{sub}", headers=headers())


async def test_event_type_filter(api: httpx.AsyncClient, publish: Publish, receiver: Receiver) -> None:
    quota_only = await subscribe(
        api, receiver.url(f"q-{uuid.uuid4().hex[:6]}"), event_types=["QuotaThresholdReached.v1"]
    )
    failures = await subscribe(
        api, receiver.url(f"f-{uuid.uuid4().hex[:6]}"), event_types=["PurchaseFailed.v1"]
    )
    failed = PurchaseFailed(purchase_id="p-f", user_id="u1", amount=5, reason="card declined")
    threshold = QuotaThresholdReached(
        pool_id="pool-1", owner_type="user", owner_id="u1", percent=90, limit=100, used=90
    )
    await publish("purchase", failed)
    await publish("quota", threshold)

    async def queued(event_id: str, count: int) -> list[dict[str, Any]] | None:
        # The default webhook matches everything; deliveries of one event are created in one transaction.
        rows = await of_event(api, event_id)
        return rows if len(rows) == count else None

    failed_rows = await wait_for(lambda: queued(failed.event_id, 2))
    threshold_rows = await wait_for(lambda: queued(threshold.event_id, 2))
    assert {r["subscription_id"] for r in failed_rows} == {failures, "default"}
    assert {r["subscription_id"] for r in threshold_rows} == {quota_only, "default"}
    only_failed = await deliveries(api, event_type="PurchaseFailed.v1")
    assert only_failed and {d["event_type"] for d in only_failed} == {"PurchaseFailed.v1"}
    for sub in (quota_only, failures):
        await api.delete(f"/v1/admin/notifications/webhooks/{sub}", headers=headers())


async def test_admin_only_and_bad_input(api: httpx.AsyncClient, receiver: Receiver) -> None:
    routes = [
        ("POST", "/v1/admin/notifications/webhooks", {"url": receiver.url("x")}),
        ("GET", "/v1/admin/notifications/webhooks", None),
        ("DELETE", "/v1/admin/notifications/webhooks/default", None),
        ("GET", "/v1/admin/notifications/deliveries", None),
    ]
    for method, path, body in routes:
        resp = await api.request(method, path, json=body, headers=headers("user"))
        assert resp.status_code == 403, (method, path)
        assert resp.json()["error"]["type"] == "permission_error"
        assert (await api.request(method, path, json=body)).status_code == 401

    for bad in ({"url": "ftp://x"}, {"url": "http://x.test", "event_types": ["Nope.v1"]}, {}):
        resp = await api.post("/v1/admin/notifications/webhooks", json=bad, headers=headers())
        assert resp.status_code == 400, bad
        assert resp.json()["error"]["type"] == "invalid_request_error"
    bad_status = await api.get("/v1/admin/notifications/deliveries?status=lost", headers=headers())
    assert bad_status.status_code == 400
    missing = await api.delete("/v1/admin/notifications/webhooks/wh_nope", headers=headers())
    assert missing.status_code == 404

    sub = await subscribe(api, receiver.url("listed"))
    listed = (await api.get("/v1/admin/notifications/webhooks", headers=headers())).json()["data"]
    assert {w["id"] for w in listed} >= {sub, "default"}
    assert all("secret" not in w and w["signing_secret"] is None for w in listed)
    assert (await api.delete(f"/v1/admin/notifications/webhooks/{sub}", headers=headers())).status_code == 204
    assert (await api.delete(f"/v1/admin/notifications/webhooks/{sub}", headers=headers())).status_code == 404
    listed = (await api.get("/v1/admin/notifications/webhooks", headers=headers())).json()["data"]
    assert sub not in {w["id"] for w in listed}


async def test_each_send_continues_the_trace_of_the_event_it_tells_about(
    api: httpx.AsyncClient, publish: Publish, receiver: Receiver
) -> None:
    name = f"traced-{uuid.uuid4().hex[:6]}"
    await subscribe(api, receiver.url(name), event_types=["PurchaseCompleted.v1"])
    event = purchase(7)
    with capture_spans() as spans:
        with trace.get_tracer("test.saga").start_as_current_span("saga step") as step:
            await publish("purchase", event)
        trace_id = step.get_span_context().trace_id

        def sends() -> list[ReadableSpan]:
            return [
                s
                for s in spans.get_finished_spans()
                if s.name.startswith("deliver ") and s.context is not None and s.context.trace_id == trace_id
            ]

        # The subscription's send and the default webhook's: both in the event's trace.
        found = await wait_for(lambda: len(sends()) == 2 and sends(), what="two sends in the event's trace")
        finished = spans.get_finished_spans()
    (consumed,) = [s for s in finished if s.name.startswith("consume ") and s.context is not None
                   and s.context.trace_id == trace_id]  # fmt: skip
    assert consumed.context is not None
    assert {s.parent.span_id for s in found if s.parent is not None} == {consumed.context.span_id}
    assert all(s.kind is trace.SpanKind.CLIENT and s.status.is_ok for s in found)
    assert receiver.to(name)
