"""Purchase saga against real Postgres and broker, the fake provider over HTTP, and a stand-in for quota."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from fastapi import FastAPI

from leaky_common.auth import Principal
from leaky_common.events import (
    AnyMessage,
    CreditTokens,
    DebitTokens,
    Message,
    PurchaseCompensated,
    PurchaseCompleted,
    PurchaseFailed,
    TokensCredited,
    TokensDebited,
    Topics,
    parse_message,
)
from leaky_common.kafka import EventConsumer, EventPublisher, ensure_topics
from leaky_devinfra.fakes.payments import create_fakepay_app
from leaky_devinfra.infra import free_port
from leaky_devinfra.testing import TEST_KEYS
from leaky_devinfra.testing import eventually as wait_until
from lt_quota.main import create_app as create_quota_app
from lt_quota.settings import QuotaSettings
from lt_saga.adapters import repository as repo
from lt_saga.main import create_app
from lt_saga.settings import SagaSettings
from lt_saga.usecases.runner import SagaRunner

pytestmark = pytest.mark.integration

FAKEPAY_HANG_S = 1.5


def principal_headers(user_id: str = "user_1", role: str = "user", org_id: str = "org_1") -> dict[str, str]:
    return TEST_KEYS.headers("saga", user_id=user_id, org_id=org_id, role=role)


@pytest.fixture(scope="session")
async def fakepay_url() -> AsyncIterator[str]:
    """The fake payment provider served over real HTTP on a free port, in this event loop."""
    port = free_port()
    config = uvicorn.Config(
        create_fakepay_app(hang_s=FAKEPAY_HANG_S),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        lifespan="off",
        ws="none",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    deadline = asyncio.get_running_loop().time() + 10
    while not server.started:
        assert asyncio.get_running_loop().time() < deadline, "fakepay did not start"
        assert not task.done(), "fakepay exited"
        await asyncio.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


@pytest.fixture
async def settings(
    make_database: Callable[[str], Awaitable[str]], kafka_bootstrap: str, fakepay_url: str
) -> SagaSettings:
    """Fresh database, topics and consumer group for each test."""
    suffix = uuid.uuid4().hex[:8]
    return SagaSettings(
        database_url=await make_database("saga"),
        kafka_bootstrap=kafka_bootstrap,
        payment_provider_url=fakepay_url,
        payment_timeout_s=0.5,
        retry_backoff_s=0.2,
        step_deadline_s=20,
        consumer_group=f"saga-{suffix}",
        quota_commands_topic=f"quota.commands.{suffix}",
        saga_replies_topic=f"saga.replies.{suffix}",
        purchase_events_topic=f"purchase.events.{suffix}",
        environment="test",
        metrics_token="saga-scraper",
        **TEST_KEYS.settings(),
    )


@asynccontextmanager
async def running_app(settings: SagaSettings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """Run the saga app's lifespan and give the app and an HTTP client for it."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://saga") as client:
            yield app, client


@asynccontextmanager
async def running_saga(settings: SagaSettings) -> AsyncIterator[httpx.AsyncClient]:
    """Run the saga app's lifespan and give an HTTP client for it."""
    async with running_app(settings) as (_, client):
        yield client


@asynccontextmanager
async def asyncpg_connect(url: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection to the saga's database."""
    conn = await asyncpg.connect(url)
    try:
        yield conn
    finally:
        await conn.close()


class QuotaStandIn:
    """Plays quota's part of the contract: consumes Credit/DebitTokens, replies TokensCredited/Debited.

    Like quota, it applies a command once per (purchase_id, step) and answers re-sent commands again.
    """

    def __init__(
        self,
        settings: SagaSettings,
        *,
        credit_success: bool = True,
        ignore_first: int = 0,
        ignore_credits: bool = False,
    ) -> None:
        self.settings = settings
        self.credit_success = credit_success
        # Commands to ignore, as if lost on the way (the saga must send them again).
        self.ignore_first = ignore_first
        # Never answer a CreditTokens (a quota that is down or stuck for this step).
        self.ignore_credits = ignore_credits
        self.commands: list[CreditTokens | DebitTokens] = []
        self.traceparents: list[str] = []
        self.applied: dict[tuple[str, str], int] = {}
        self._publisher = EventPublisher(settings)
        self._consumer = EventConsumer(
            settings,
            group_id=f"quota-{uuid.uuid4().hex[:8]}",
            topics=[settings.quota_commands_topic],
            handler=self._handle,
            publisher=self._publisher,
        )

    async def _handle(self, message: AnyMessage, record: ConsumerRecord[bytes, bytes]) -> None:
        if not isinstance(message, CreditTokens | DebitTokens):
            return
        self.commands.append(message)
        self.traceparents += [v.decode() for k, v in record.headers or () if k == "traceparent"]
        if len(self.commands) <= self.ignore_first or (
            self.ignore_credits and isinstance(message, CreditTokens)
        ):
            return
        key = (message.purchase_id, message.step)
        reply: Message
        if isinstance(message, CreditTokens):
            if self.credit_success:
                self.applied.setdefault(key, message.amount)
            reply = TokensCredited(
                saga_id=message.saga_id,
                step=message.step,
                purchase_id=message.purchase_id,
                success=self.credit_success,
                reason=None if self.credit_success else "pool_not_found",
                new_limit=message.amount if self.credit_success else None,
                causation_id=message.event_id,
            )
        else:
            self.applied.setdefault(key, -message.amount)
            reply = TokensDebited(
                saga_id=message.saga_id, step=message.step, purchase_id=message.purchase_id, success=True
            )
        await self._publisher.publish(self.settings.saga_replies_topic, reply, key=message.saga_id)

    async def __aenter__(self) -> QuotaStandIn:
        await ensure_topics(
            self.settings, [self.settings.quota_commands_topic, self.settings.saga_replies_topic]
        )
        await self._publisher.start()
        await self._consumer.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._consumer.stop()
        await self._publisher.stop()


async def read_events(
    settings: SagaSettings, topic: str, predicate: Callable[[Any], bool], timeout: float = 20.0
) -> Any:
    """The first message on `topic` matching `predicate` (read from the beginning)."""
    message, _ = await read_record(settings, topic, predicate, timeout)
    return message


async def read_record(
    settings: SagaSettings, topic: str, predicate: Callable[[Any], bool], timeout: float = 20.0
) -> tuple[Any, dict[str, str]]:
    """The first message on `topic` matching `predicate`, with its headers."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            for records in batch.values():
                for record in records:
                    message = parse_message(record.value or b"")
                    if predicate(message):
                        return message, {k: v.decode() for k, v in record.headers or ()}
        raise AssertionError(f"no matching message on {topic}")
    finally:
        await consumer.stop()


TERMINAL = {"COMPLETED", "COMPENSATED", "FAILED"}


async def purchase(
    client: httpx.AsyncClient, key: str, body: dict[str, Any], user: str = "user_1"
) -> httpx.Response:
    return await client.post(
        "/v1/purchases", json=body, headers={**principal_headers(user), "Idempotency-Key": key}
    )


async def finished(client: httpx.AsyncClient, purchase_id: str, timeout: float = 30.0) -> dict[str, Any]:
    result: dict[str, Any] = {}

    async def done() -> bool:
        r = await client.get(f"/v1/purchases/{purchase_id}", headers=principal_headers())
        result.update(r.json())
        return r.json()["status"] in TERMINAL

    await wait_until(done, timeout, f"purchase {purchase_id} to finish")
    return result


def step_log(body: dict[str, Any]) -> list[tuple[str, str]]:
    return [(s["step"], s["status"]) for s in body["steps"]]


async def test_happy_path_completes_and_announces(settings: SagaSettings) -> None:
    async with QuotaStandIn(settings) as quota, running_saga(settings) as client:
        r = await purchase(client, "k-happy", {"tokens": 10_000})
        assert r.status_code == 202
        created = r.json()
        assert created["status"] == "PENDING"
        assert created["price_usd_micros"] == 1_500_000
        body = await finished(client, created["id"])
        assert body["status"] == "COMPLETED"
        assert (body["amount"], body["unit"], body["price_usd_micros"]) == (10_000, "tokens", 1_500_000)
        assert body["payment_intent_id"].startswith("pi_")
        steps = step_log(body)
        for expected in [
            ("authorize_payment", "succeeded"),
            ("credit_tokens", "started"),
            ("credit_tokens", "succeeded"),
            ("capture_payment", "succeeded"),
            ("saga", "completed"),
        ]:
            assert expected in steps
        assert steps.index(("credit_tokens", "succeeded")) < steps.index(("capture_payment", "started"))
        assert next(c for c in quota.commands if isinstance(c, CreditTokens)).amount == 10_000
        assert quota.applied == {(created["id"], "credit_tokens"): 10_000}

        event = await read_events(
            settings,
            settings.purchase_events_topic,
            lambda m: getattr(m, "purchase_id", None) == created["id"],
        )
        assert isinstance(event, PurchaseCompleted)
        assert (event.user_id, event.amount, event.price_usd_micros) == ("user_1", 10_000, 1_500_000)

        # Reads are private: another user sees 404, an admin sees everything.
        r = await client.get(f"/v1/purchases/{created['id']}", headers=principal_headers("user_2"))
        assert r.status_code == 404
        assert r.json()["error"]["type"] == "not_found_error"
        r = await client.get("/v1/purchases", headers=principal_headers("user_2"))
        assert r.json()["data"] == []
        r = await client.get("/v1/purchases", headers=principal_headers())
        assert [p["id"] for p in r.json()["data"]] == [created["id"]]
        r = await client.get("/v1/admin/purchases", headers=principal_headers("user_2"))
        assert r.status_code == 403
        r = await client.get("/v1/admin/purchases", headers=principal_headers("admin_1", role="admin"))
        assert [p["id"] for p in r.json()["data"]] == [created["id"]]
        r = await client.get(
            f"/v1/purchases/{created['id']}", headers=principal_headers("admin_1", role="admin")
        )
        assert r.status_code == 200
        # An admin of another org sees none of it.
        other_admin = principal_headers("admin_2", role="admin", org_id="org_2")
        assert (await client.get(f"/v1/purchases/{created['id']}", headers=other_admin)).status_code == 404
        assert (await client.get("/v1/admin/purchases", headers=other_admin)).json()["data"] == []

        r = await client.get(
            "/v1/admin/purchases?status=COMPLETED&user_id=user_1",
            headers=principal_headers("a", role="admin"),
        )
        assert [p["id"] for p in r.json()["data"]] == [created["id"]]
        r = await client.get("/v1/purchases?status=FAILED", headers=principal_headers())
        assert r.json()["data"] == []
        r = await client.get("/v1/purchases?status=NOPE", headers=principal_headers())
        assert r.status_code == 400

        metrics = (await client.get("/metrics", headers={"Authorization": "Bearer saga-scraper"})).text
        assert 'lt_saga_purchases_total{status="COMPLETED"}' in metrics
        assert 'lt_saga_steps_total{status="succeeded",step="credit_tokens"}' in metrics
        assert 'lt_saga_purchases_by_status{status="CREDITING"}' in metrics
        assert 'lt_saga_purchase_duration_seconds_count{status="COMPLETED"}' in metrics
        ready = await client.get("/ready")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"postgres": True, "broker": True}


async def test_decline_fails_without_crediting(settings: SagaSettings) -> None:
    async with QuotaStandIn(settings) as quota, running_saga(settings) as client:
        r = await purchase(client, "k-decline", {"tokens": 500, "payment_method": "pm_card_chargeDeclined"})
        assert r.status_code == 202
        body = await finished(client, r.json()["id"])
        assert body["status"] == "FAILED"
        assert "declined" in body["reason"]
        assert ("authorize_payment", "failed") in step_log(body)
        assert not any(step == "credit_tokens" for step, _ in step_log(body))
        event = await read_events(
            settings, settings.purchase_events_topic, lambda m: getattr(m, "purchase_id", None) == body["id"]
        )
        assert isinstance(event, PurchaseFailed)
        assert quota.commands == []


async def test_capture_failure_is_compensated(settings: SagaSettings) -> None:
    async with QuotaStandIn(settings) as quota, running_saga(settings) as client:
        r = await purchase(
            client,
            "k-capture",
            {"amount": 2_000_000, "unit": "usd", "payment_method": "pm_card_captureFails"},
        )
        purchase_id = r.json()["id"]
        body = await finished(client, purchase_id)
        assert body["status"] == "COMPENSATED"
        steps = step_log(body)
        # Compensations are recorded before they run, and run in reverse order.
        assert steps.index(("debit_tokens", "scheduled")) < steps.index(("debit_tokens", "started"))
        assert steps.index(("debit_tokens", "succeeded")) < steps.index(("void_payment", "started"))
        assert ("void_payment", "succeeded") in steps
        debits = [c for c in quota.commands if isinstance(c, DebitTokens)]
        assert [(d.purchase_id, d.amount, d.unit) for d in debits] == [(purchase_id, 2_000_000, "usd")]
        assert sum(quota.applied.values()) == 0
        event = await read_events(
            settings, settings.purchase_events_topic, lambda m: getattr(m, "purchase_id", None) == purchase_id
        )
        assert isinstance(event, PurchaseCompensated)


async def test_credit_refused_voids_and_fails(settings: SagaSettings) -> None:
    async with QuotaStandIn(settings, credit_success=False), running_saga(settings) as client:
        r = await purchase(client, "k-refused", {"tokens": 100, "pool_id": "pool_missing"})
        body = await finished(client, r.json()["id"])
        assert body["status"] == "FAILED"
        assert "pool_not_found" in body["reason"]
        steps = step_log(body)
        assert ("credit_tokens", "failed") in steps
        assert ("void_payment", "succeeded") in steps
        assert not any(step == "debit_tokens" for step, _ in steps)


async def test_authorization_timeout_fails_and_releases_the_hold(settings: SagaSettings) -> None:
    async with QuotaStandIn(settings) as quota, running_saga(settings) as client:
        r = await purchase(client, "k-timeout", {"tokens": 100, "payment_method": "pm_card_timeout"})
        body = await finished(client, r.json()["id"])
        assert body["status"] == "FAILED"
        assert "timed out" in body["reason"]
        steps = step_log(body)
        assert ("authorize_payment", "failed") in steps
        # The hold the provider made after our timeout is found through the idempotency key and canceled.
        assert ("void_payment", "succeeded") in steps
        assert "canceled" in [s for s in body["steps"] if s["step"] == "void_payment"][-1]["detail"]
        assert quota.commands == []


async def test_idempotent_create(settings: SagaSettings) -> None:
    async with QuotaStandIn(settings), running_saga(settings) as client:
        first = await purchase(client, "k-same", {"tokens": 1000})
        second = await purchase(client, "k-same", {"tokens": 1000})
        assert first.status_code == 202
        assert second.status_code == 200
        assert first.json()["id"] == second.json()["id"]
        # Idempotency keys are per user.
        other_user = await purchase(client, "k-same", {"tokens": 1000}, user="user_2")
        assert other_user.status_code == 202
        assert other_user.json()["id"] != first.json()["id"]
        conflict = await purchase(client, "k-same", {"tokens": 2000})
        assert conflict.status_code == 409
        assert conflict.json()["error"]["code"] == "idempotency_key_reused"
        listed = await client.get("/v1/purchases", headers=principal_headers())
        assert [p["id"] for p in listed.json()["data"]] == [first.json()["id"]]
        alias = await client.post(
            "/api/v1/tokens/purchase",
            json={"tokens": 1000},
            headers={**principal_headers(), "Idempotency-Key": "k-same"},
        )
        assert alias.json()["id"] == alias.json()["sagaId"] == first.json()["id"]
        assert alias.json()["createdAt"]
        got = await client.get(f"/api/v1/tokens/purchase/{first.json()['id']}", headers=principal_headers())
        assert got.status_code == 200
        assert got.json()["id"] == first.json()["id"]
        await finished(client, first.json()["id"])


async def test_bad_requests_are_4xx(settings: SagaSettings) -> None:
    async with running_saga(settings) as client:
        r = await client.post("/v1/purchases", json={"tokens": 10}, headers=principal_headers())
        assert r.status_code == 400
        assert r.json()["error"]["code"] == "missing_idempotency_key"
        r = await purchase(client, "x" * 101, {"tokens": 10})
        assert r.status_code == 400
        r = await purchase(client, "k-bad", {"tokens": -1})
        assert r.status_code == 400
        assert r.json()["error"]["type"] == "invalid_request_error"
        r = await purchase(client, "k-bad", {"tokens": 1, "amount": 1})
        assert r.status_code == 400
        r = await client.post("/v1/purchases", json={"tokens": 10}, headers={"Idempotency-Key": "k"})
        assert r.status_code == 401
        r = await client.get("/v1/purchases/pur_nope", headers=principal_headers())
        assert r.status_code == 404


TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


async def test_recovery_after_restart_mid_saga(settings: SagaSettings) -> None:
    # Nobody answers for quota yet: the saga stops at CREDITING, waiting for the reply.
    async with running_saga(settings) as client:
        r = await client.post(
            "/v1/purchases",
            json={"tokens": 3000},
            headers={
                **principal_headers(),
                "Idempotency-Key": "k-recover",
                "traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01",
            },
        )
        purchase_id = r.json()["id"]

        async def crediting() -> bool:
            got = await client.get(f"/v1/purchases/{purchase_id}", headers=principal_headers())
            status: str = got.json()["status"]
            return status == "CREDITING"

        await wait_until(crediting, 20, "CREDITING")
    # The first instance is gone; quota comes up and a new instance resumes from the persisted state.
    async with QuotaStandIn(settings) as quota, running_saga(settings) as client:
        body = await finished(client, purchase_id)
        assert body["status"] == "COMPLETED"
        assert quota.applied == {(purchase_id, "credit_tokens"): 3000}
        steps = step_log(body)
        assert steps.count(("authorize_payment", "succeeded")) == 1
        assert ("capture_payment", "succeeded") in steps
        # One trace spans the saga across the restart: the command quota got and the event announcing the
        # outcome (written by the second instance) both carry the trace of the request that started it.
        assert quota.traceparents and all(TRACE_ID in t for t in quota.traceparents)
        event, headers = await read_record(
            settings, settings.purchase_events_topic, lambda m: getattr(m, "purchase_id", None) == purchase_id
        )
        assert isinstance(event, PurchaseCompleted)
        assert TRACE_ID in headers["traceparent"]


async def test_lost_command_is_sent_again_with_the_same_id(settings: SagaSettings) -> None:
    settings = settings.model_copy(update={"command_resend_s": 0.5})
    async with QuotaStandIn(settings, ignore_first=1) as quota, running_saga(settings) as client:
        r = await purchase(client, "k-lost", {"tokens": 700})
        body = await finished(client, r.json()["id"])
        assert body["status"] == "COMPLETED"
        assert ("credit_tokens", "resent") in step_log(body)
        credits = [c for c in quota.commands if isinstance(c, CreditTokens)]
        assert len(credits) >= 2
        # A re-send is the same command (same event id): quota's inbox recognises it.
        assert {c.event_id for c in credits} == {credits[0].event_id}
        assert quota.applied == {(body["id"], "credit_tokens"): 700}


async def test_purchases_switched_off_are_refused_cleanly(settings: SagaSettings) -> None:
    settings = settings.model_copy(update={"purchases_enabled": False})
    async with running_saga(settings) as client:
        r = await purchase(client, "k-off", {"tokens": 100})
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "purchases_disabled"
        listed = await client.get("/v1/purchases", headers=principal_headers())
        assert listed.json()["data"] == []


async def test_two_instances_hand_sagas_over_without_driving_one_twice(settings: SagaSettings) -> None:
    fast = {"lease_s": 2.0, "recovery_interval_s": 0.2}
    first = settings.model_copy(update={**fast, "instance_id": "saga-a"})
    second = settings.model_copy(update={**fast, "instance_id": "saga-b"})
    # saga-b outlives saga-a (tansu cannot re-form a consumer group once all of two members left it).
    async with contextlib.AsyncExitStack() as stack_b:
        stack_a = contextlib.AsyncExitStack()
        client_a = await stack_a.enter_async_context(running_saga(first))
        ids = [(await purchase(client_a, f"k-two-{i}", {"tokens": 100 + i})).json()["id"] for i in range(4)]

        async def all_crediting() -> bool:
            async with asyncpg_connect(settings.database_url) as conn:
                rows = await conn.fetch("SELECT status, owner FROM purchases")
            return all(r["status"] == "CREDITING" and r["owner"] == "saga-a" for r in rows)

        await wait_until(all_crediting, 20, "every purchase CREDITING under saga-a")
        app_b, client_b = await stack_b.enter_async_context(running_app(second))
        runner_b: SagaRunner = app_b.state.runner
        # saga-a is alive and renews its leases: saga-b takes nothing.
        assert await runner_b.recover_once() == 0
        assert runner_b.driving == 0
        # saga-a stops and hands its leases back; saga-b's recovery loop takes the sagas over.
        await stack_a.aclose()
        await wait_until(lambda: runner_b.driving == 4, 10, "saga-b drives the four sagas")
        async with QuotaStandIn(settings) as quota:
            for purchase_id in ids:
                body = await finished(client_b, purchase_id)
                assert body["status"] == "COMPLETED"
                assert step_log(body).count(("authorize_payment", "succeeded")) == 1
                assert step_log(body).count(("capture_payment", "succeeded")) == 1
            assert sorted(quota.applied) == sorted((pid, "credit_tokens") for pid in ids)
        async with asyncpg_connect(settings.database_url) as conn:
            owners = {r["owner"] for r in await conn.fetch("SELECT owner FROM purchases")}
        assert owners == {"saga-b"}


async def test_an_expired_lease_is_claimed_and_a_live_one_is_not(settings: SagaSettings) -> None:
    async with running_saga(settings.model_copy(update={"instance_id": "saga-a"})) as client:
        purchase_id = (await purchase(client, "k-lease", {"tokens": 100})).json()["id"]
    async with asyncpg_connect(settings.database_url) as conn:
        await conn.execute(
            "UPDATE purchases SET owner = 'saga-dead', lease_until = now() + interval '1 hour' WHERE id = $1",
            purchase_id,
        )
        assert not await repo.claim(conn, purchase_id, "saga-b", 5)
        assert await repo.claim_unowned(conn, "saga-b", 5, exclude=[], limit=10) == []
        # The lease runs out (its instance died): the next claimant gets it, exactly once.
        await conn.execute(
            "UPDATE purchases SET lease_until = now() - interval '1 second' WHERE id = $1", purchase_id
        )
        assert await repo.claim_unowned(conn, "saga-b", 5, exclude=[], limit=10) == [purchase_id]
        assert await repo.claim_unowned(conn, "saga-c", 5, exclude=[], limit=10) == []
        assert not await repo.claim(conn, purchase_id, "saga-c", 5)
        # The same instance id (a restart of saga-b) takes its own lease back at once.
        assert await repo.claim(conn, purchase_id, "saga-b", 5)


async def test_two_instances_relay_each_outbox_row_once(settings: SagaSettings) -> None:
    settings = settings.model_copy(update={"command_resend_s": 60})
    first = settings.model_copy(update={"instance_id": "saga-a"})
    second = settings.model_copy(update={"instance_id": "saga-b"})
    async with (
        QuotaStandIn(settings) as quota,
        running_app(first) as (app_a, client_a),
        running_app(second) as (app_b, client_b),
    ):
        await wait_until(lambda: app_a.state.relay.leading or app_b.state.relay.leading, 10, "a relay leader")
        assert not (app_a.state.relay.leading and app_b.state.relay.leading)
        ids = []
        for i in range(6):
            client = client_a if i % 2 else client_b
            ids.append((await purchase(client, f"k-relay-{i}", {"tokens": 100})).json()["id"])
        for purchase_id in ids:
            assert (await finished(client_a, purchase_id))["status"] == "COMPLETED"
        # Both instances wrote commands; exactly one relay published them: one CreditTokens per purchase.
        credits = sorted(c.purchase_id for c in quota.commands if isinstance(c, CreditTokens))
        assert credits == sorted(ids)


async def test_credit_past_its_deadline_is_compensated(settings: SagaSettings) -> None:
    settings = settings.model_copy(update={"step_deadline_s": 1.5, "command_resend_s": 0.5})
    async with QuotaStandIn(settings, ignore_credits=True) as quota, running_saga(settings) as client:
        r = await purchase(client, "k-stuck", {"tokens": 900})
        body = await finished(client, r.json()["id"])
        assert body["status"] == "COMPENSATED"
        assert body["reason"] == "quota did not reply in time"
        steps = step_log(body)
        assert ("credit_tokens", "resent") in steps
        assert steps.index(("credit_tokens", "timed_out")) < steps.index(("debit_tokens", "scheduled"))
        # The credit may have landed unseen, so it is taken back, and the hold is released: nothing charged.
        assert [c.amount for c in quota.commands if isinstance(c, DebitTokens)][:1] == [900]
        void = [s for s in body["steps"] if s["step"] == "void_payment" and s["status"] == "succeeded"]
        assert "canceled" in void[0]["detail"]
        assert ("capture_payment", "started") not in steps


async def test_relay_moves_to_a_live_instance_when_its_leader_stops(settings: SagaSettings) -> None:
    first = settings.model_copy(update={"instance_id": "saga-a"})
    second = settings.model_copy(update={"instance_id": "saga-b"})
    async with QuotaStandIn(settings) as quota, contextlib.AsyncExitStack() as stack_b:
        stack_a = contextlib.AsyncExitStack()
        app_a, _ = await stack_a.enter_async_context(running_app(first))
        await wait_until(lambda: app_a.state.relay.leading, 10, "saga-a relays")
        app_b, client_b = await stack_b.enter_async_context(running_app(second))
        assert not app_b.state.relay.leading
        await stack_a.aclose()
        await wait_until(lambda: app_b.state.relay.leading, 10, "saga-b takes the relay over")
        body = await finished(
            client_b, (await purchase(client_b, "k-failover", {"tokens": 300})).json()["id"]
        )
        assert body["status"] == "COMPLETED"
        assert quota.applied == {(body["id"], "credit_tokens"): 300}


# --- with the real quota service --------------------------------------------------------------------------

QUOTA_ADMIN_KEY = "lt-saga-test-admin-" + uuid.uuid4().hex


@asynccontextmanager
async def real_quota(
    make_database: Callable[[str], Awaitable[str]], redis_url: str, kafka_bootstrap: str
) -> AsyncIterator[httpx.AsyncClient]:
    """The real quota service (its own database, Redis prefix and consumer group) on the real topics."""
    settings = QuotaSettings(
        _env_file=None,
        environment="test",
        database_url=await make_database("saga_quota"),
        redis_url=redis_url,
        kafka_bootstrap=kafka_bootstrap,
        bootstrap_admin_key=QUOTA_ADMIN_KEY,
        **TEST_KEYS.settings(),
        redis_prefix=f"lt:{uuid.uuid4().hex[:8]}:",
        consumer_group=f"quota-{uuid.uuid4().hex[:8]}",
        sweep_interval_s=3600,
        log_json=False,
    )
    app = create_quota_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://quota") as client:
            yield client


async def quota_headers(quota: httpx.AsyncClient, api_key: str) -> dict[str, str]:
    """Headers the gateway would forward for `api_key`."""
    return TEST_KEYS.headers("quota", await quota_principal(quota, api_key))


async def quota_principal(quota: httpx.AsyncClient, api_key: str) -> Principal:
    """The principal quota resolves `api_key` to."""
    r = await quota.post(
        "/internal/authenticate", json={"api_key": api_key}, headers=TEST_KEYS.headers("quota")
    )
    assert r.status_code == 200, r.text
    return Principal.model_validate_json(r.text)


async def buyer_with_usd_pool(quota: httpx.AsyncClient, usd_limit: int) -> tuple[Principal, dict[str, Any]]:
    """A quota user (principal as the gateway forwards it) with an unscoped usd pool of `usd_limit`."""
    admin = await quota_headers(quota, QUOTA_ADMIN_KEY)
    r = await quota.post(
        "/v1/admin/users",
        json={"email": f"{uuid.uuid4().hex[:8]}@example.com", "name": "Buyer"},
        headers=admin,
    )
    assert r.status_code == 201, r.text
    user = r.json()
    r = await quota.post(
        "/v1/admin/pools",
        json={"owner_type": "user", "owner_id": user["id"], "unit": "usd", "limit": usd_limit},
        headers=admin,
    )
    assert r.status_code == 201, r.text
    principal = await quota_principal(quota, user["api_key"])
    return principal, r.json()


async def pool_limit(quota: httpx.AsyncClient, pool_id: str) -> int:
    r = await quota.get(f"/v1/admin/pools/{pool_id}", headers=await quota_headers(quota, QUOTA_ADMIN_KEY))
    assert r.status_code == 200, r.text
    return int(r.json()["limit"])


def as_principal(principal: Principal) -> dict[str, str]:
    return TEST_KEYS.headers("saga", principal)


async def finished_for(client: httpx.AsyncClient, purchase_id: str, principal: Principal) -> dict[str, Any]:
    result: dict[str, Any] = {}

    async def done() -> bool:
        r = await client.get(f"/v1/purchases/{purchase_id}", headers=as_principal(principal))
        result.update(r.json())
        return r.json()["status"] in TERMINAL

    await wait_until(done, 30, f"purchase {purchase_id} to finish")
    return result


@pytest.fixture
def real_topics(settings: SagaSettings) -> SagaSettings:
    """Saga settings on quota's real command and reply topics."""
    return settings.model_copy(
        update={"quota_commands_topic": Topics.QUOTA_COMMANDS, "saga_replies_topic": Topics.SAGA_REPLIES}
    )


async def test_usd_top_up_raises_the_usd_pool_by_exactly_the_amount(
    real_topics: SagaSettings,
    make_database: Callable[[str], Awaitable[str]],
    redis_url: str,
    kafka_bootstrap: str,
) -> None:
    async with (
        real_quota(make_database, redis_url, kafka_bootstrap) as quota,
        running_saga(real_topics) as client,
    ):
        buyer, pool = await buyer_with_usd_pool(quota, 5_000_000)
        headers = {**as_principal(buyer), "Idempotency-Key": "k-usd"}
        r = await client.post("/v1/purchases", json={"amount": 2_345_678, "unit": "usd"}, headers=headers)
        assert r.status_code == 202, r.text
        assert r.json()["price_usd_micros"] == 2_345_678
        body = await finished_for(client, r.json()["id"], buyer)
        assert body["status"] == "COMPLETED", body
        assert await pool_limit(quota, pool["id"]) == 5_000_000 + 2_345_678
        # The buyer sees the raised usd pool among their quota; the token pool is untouched.
        r = await quota.get("/v1/users/me/quota", headers=TEST_KEYS.headers("quota", buyer))
        pools = {p["unit"]: p for p in r.json()["pools"]}
        assert pools["usd"]["limit"] == 7_345_678
        assert pools["tokens"]["limit"] == 100_000


async def test_compensated_usd_top_up_leaves_the_usd_pool_unchanged(
    real_topics: SagaSettings,
    make_database: Callable[[str], Awaitable[str]],
    redis_url: str,
    kafka_bootstrap: str,
) -> None:
    async with (
        real_quota(make_database, redis_url, kafka_bootstrap) as quota,
        running_saga(real_topics) as client,
    ):
        buyer, pool = await buyer_with_usd_pool(quota, 1_000_000)
        headers = {**as_principal(buyer), "Idempotency-Key": "k-usd-capture"}
        r = await client.post(
            "/v1/purchases",
            json={"amount": 2_000_000, "unit": "usd", "payment_method": "pm_card_captureFails"},
            headers=headers,
        )
        body = await finished_for(client, r.json()["id"], buyer)
        assert body["status"] == "COMPENSATED", body
        steps = step_log(body)
        assert ("credit_tokens", "succeeded") in steps and ("debit_tokens", "succeeded") in steps
        assert await pool_limit(quota, pool["id"]) == 1_000_000

        # A usd purchase aimed at a token pool is refused by quota with the reason, and nothing is charged.
        tokens_pool = next(
            p
            for p in (
                await quota.get("/v1/users/me/quota", headers=TEST_KEYS.headers("quota", buyer))
            ).json()["pools"]
            if p["unit"] == "tokens"
        )
        r = await client.post(
            "/v1/purchases",
            json={"amount": 500_000, "unit": "usd", "pool_id": tokens_pool["id"]},
            headers={**as_principal(buyer), "Idempotency-Key": "k-usd-wrong-pool"},
        )
        body = await finished_for(client, r.json()["id"], buyer)
        assert body["status"] == "FAILED"
        assert "counted in tokens" in body["reason"] and "micro-dollars" in body["reason"]
        assert ("void_payment", "succeeded") in step_log(body)
        assert await pool_limit(quota, tokens_pool["id"]) == 100_000
