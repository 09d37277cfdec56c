"""Quota continues the traces it is handed: the admit hot route, settlement batches (linked to each usage
event's request) and freeze commands (whose announcement carries the same trace on)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from opentelemetry import trace

from leaky_common.auth import Principal
from leaky_common.db import create_database
from leaky_common.events import FreezeChanged, RequestFreeze, Topics, UsageRecorded, parse_message
from leaky_common.kafka import EventPublisher
from leaky_devinfra.spans import capture_spans
from leaky_devinfra.testing import TEST_KEYS
from leaky_devinfra.testing import eventually as wait_until
from lt_quota.main import create_app
from lt_quota.settings import QuotaSettings

pytestmark = pytest.mark.integration

ADMIN_KEY = "lt-test-admin-" + uuid.uuid4().hex
tracer = trace.get_tracer("test.gateway")


@pytest.fixture
async def settings(postgres_url: str, redis_url: str, kafka_bootstrap: str) -> QuotaSettings:
    return QuotaSettings(
        _env_file=None,
        environment="test",
        database_url=await create_database(postgres_url, f"quota_{uuid.uuid4().hex[:10]}"),
        redis_url=redis_url,
        kafka_bootstrap=kafka_bootstrap,
        **TEST_KEYS.settings(),
        bootstrap_admin_key=ADMIN_KEY,
        redis_prefix=f"lt:{uuid.uuid4().hex[:8]}:",
        consumer_group=f"quota-{uuid.uuid4().hex[:8]}",
        sweep_interval_s=3600,
        log_json=False,
    )


@contextlib.asynccontextmanager
async def quota(settings: QuotaSettings) -> AsyncIterator[tuple[httpx.AsyncClient, EventPublisher]]:
    app = create_app(settings)
    publisher = EventPublisher(settings)
    async with app.router.lifespan_context(app):
        await publisher.start()
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://quota") as client:
                yield client, publisher
        finally:
            await publisher.stop()


async def new_user(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.post(
        "/internal/authenticate", json={"api_key": ADMIN_KEY}, headers=TEST_KEYS.headers("quota")
    )
    admin = TEST_KEYS.headers("quota", Principal.model_validate_json(r.text))
    body = {"email": f"{uuid.uuid4().hex[:8]}@example.com", "name": "Someone", "personal_quota": 10_000}
    r = await client.post("/v1/admin/users", json=body, headers=admin)
    assert r.status_code == 201, r.text
    return dict(r.json())


def traceparent(span: trace.Span) -> str:
    ctx = span.get_span_context()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-01"


async def test_admit_continues_the_gateways_trace_and_settlement_links_to_it(settings: QuotaSettings) -> None:
    with capture_spans() as spans:
        async with quota(settings) as (client, publisher):
            user = await new_user(client)
            with tracer.start_as_current_span("POST /v1/chat/completions") as request:
                admit = {"api_key": user["api_key"], "request_id": uuid.uuid4().hex, "model": "mock-gpt",
                         "provider": "mock", "prompt_tokens": 10, "max_output_tokens": 20}  # fmt: skip
                headers = {**TEST_KEYS.headers("quota"), "traceparent": traceparent(request)}
                r = await client.post("/internal/admit", json=admit, headers=headers)
                assert r.status_code == 200, r.text
                event = UsageRecorded(
                    request_id=admit["request_id"], reservation_id=r.json()["reservation_id"],
                    user_id=user["id"], model="mock-gpt", provider="mock", total_tokens=25,
                )  # fmt: skip
                await publisher.publish(Topics.USAGE, event, key=user["id"])
            trace_id = request.get_span_context().trace_id

            def settlement() -> Any:
                batches = [s for s in spans.get_finished_spans() if s.name == f"consume {Topics.USAGE} batch"]
                return [s for s in batches if any(link.context.trace_id == trace_id for link in s.links)]

            (batch,) = await wait_until(settlement, what="a settlement batch linked to the request")
            finished = spans.get_finished_spans()
    (admitted,) = [s for s in finished if s.name == "POST /internal/admit"]
    assert admitted.context is not None and admitted.context.trace_id == trace_id
    assert admitted.kind is trace.SpanKind.SERVER
    assert batch.kind is trace.SpanKind.CONSUMER and batch.context is not None
    assert batch.context.trace_id != trace_id  # a batch has its own trace; the link leads to each request


async def freeze_headers(bootstrap: str, target_id: str) -> dict[str, bytes]:
    consumer = AIOKafkaConsumer(
        Topics.QUOTA_EVENTS, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await consumer.start()
    try:

        async def announced() -> dict[str, bytes] | None:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for record in records:
                    message = parse_message(record.value or b"")
                    if isinstance(message, FreezeChanged) and message.target_id == target_id:
                        return dict(record.headers or ())
            return None

        found: dict[str, bytes] = await wait_until(announced, what="the freeze announced")
        return found
    finally:
        await consumer.stop()


async def test_a_freeze_command_and_its_announcement_stay_in_the_detectors_trace(
    settings: QuotaSettings, kafka_bootstrap: str
) -> None:
    with capture_spans() as spans:
        async with quota(settings) as (client, publisher):
            user = await new_user(client)
            with tracer.start_as_current_span("consume usage.recorded batch") as detector:
                cmd = RequestFreeze(
                    target_type="user", target_id=user["id"], reason="spend velocity", duration_s=60
                )
                await publisher.publish(Topics.FREEZE_REQUESTS, cmd)
            headers = await freeze_headers(kafka_bootstrap, user["id"])
            trace_id = detector.get_span_context().trace_id
            assert headers["traceparent"].decode().split("-")[1] == f"{trace_id:032x}"
            finished = spans.get_finished_spans()
    (produced,) = [s for s in finished if s.name == f"publish {Topics.FREEZE_REQUESTS}"]
    assert produced.context is not None
    # The consumer is the producer's child (other tests' freeze requests, replayed from the shared broker by
    # this quota's fresh consumer group, have consume spans of their own, in other traces).
    consumed = [
        s
        for s in finished
        if s.name == f"consume {Topics.FREEZE_REQUESTS}"
        and s.context is not None
        and s.context.trace_id == produced.context.trace_id
    ]
    assert [s.parent.span_id if s.parent else None for s in consumed] == [produced.context.span_id]
