"""Trace context helpers, span naming of hot routes, untraced ops routes, and keeping errors when sampling."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode
from starlette.requests import Request
from starlette.responses import Response

from leaky_common.api import service_app
from leaky_common.sampling import KeepErrorsProcessor, make_sampler
from leaky_common.settings import ServiceSettings
from leaky_common.tracing import batch_span, context_headers, links_from_headers
from leaky_devinfra.spans import capture_spans

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def test_no_span_means_no_trace_headers() -> None:
    assert context_headers({"type": "X"}) == [("type", b"X")]


def test_headers_carry_the_current_trace_and_batches_link_to_each_message() -> None:
    tracer = trace.get_tracer("test")
    with capture_spans() as spans:
        with tracer.start_as_current_span("request") as request:
            headers = context_headers({"type": "UsageRecorded.v1"})
        trace_id = request.get_span_context().trace_id
        as_dict = dict(headers)
        assert as_dict["type"] == b"UsageRecorded.v1"
        assert as_dict["traceparent"].decode().split("-")[1] == f"{trace_id:032x}"
        # A list of headers (aiokafka), a dict (faust), none at all: two links.
        with batch_span(tracer, "consume t batch", [headers, {"traceparent": PARENT.encode()}, None], 3):
            pass
        (batch,) = [s for s in spans.get_finished_spans() if s.name == "consume t batch"]
    assert {link.context.trace_id for link in batch.links} == {trace_id, int(TRACE_ID, 16)}
    assert batch.attributes is not None and batch.attributes["messaging.batch.message_count"] == 3
    assert batch.kind is trace.SpanKind.CONSUMER
    assert batch.parent is None  # a batch is a root of its own, linked to its messages' traces


def test_links_skip_garbage_headers() -> None:
    assert links_from_headers([[("traceparent", b"nonsense")], [("other", b"x")]]) == []


def _sampled_provider(ratio: float, keep_errors: bool) -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=make_sampler(ratio, keep_errors))
    provider.add_span_processor(KeepErrorsProcessor(SimpleSpanProcessor(exporter)))
    return provider, exporter


def test_unsampled_traces_still_export_their_failed_spans() -> None:
    provider, exporter = _sampled_provider(0.0, keep_errors=True)
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("ok"):
        pass
    with tracer.start_as_current_span("failed") as span:
        span.set_status(Status(StatusCode.ERROR))
    assert [s.name for s in exporter.get_finished_spans()] == ["failed"]

    provider, exporter = _sampled_provider(0.0, keep_errors=False)
    with provider.get_tracer("test").start_as_current_span("failed") as span:
        span.set_status(Status(StatusCode.ERROR))
    assert exporter.get_finished_spans() == ()

    provider, exporter = _sampled_provider(1.0, keep_errors=True)
    with provider.get_tracer("test").start_as_current_span("ok"):
        pass
    assert [s.name for s in exporter.get_finished_spans()] == ["ok"]


def _app() -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield

    async def ready(_: FastAPI) -> dict[str, bool]:
        return {}

    async def hot(_: Request) -> Response:
        return Response(b"{}", media_type="application/json")

    app = service_app(
        ServiceSettings(service_name="t", log_json=False),
        title="t",
        lifespan=lifespan,
        ready=ready,
        hot_route=("/internal/admit", hot),
    )

    @app.get("/items/{item_id}")
    async def item(item_id: str) -> dict[str, str]:
        return {"id": item_id}

    return app


async def test_spans_are_named_by_route_template_and_ops_routes_are_not_traced() -> None:
    transport = httpx.ASGITransport(app=_app())
    with capture_spans() as spans:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.post("/internal/admit", headers={"traceparent": PARENT})).status_code == 200
            assert (await client.get("/items/secret-id-42")).status_code == 200
            for path in ("/health", "/ready", "/metrics"):
                assert (await client.get(path)).status_code in (200, 404)
        finished = spans.get_finished_spans()
    names = sorted(s.name for s in finished)
    assert names == ["GET /items/{item_id}", "POST /internal/admit"]
    (hot,) = [s for s in finished if s.name == "POST /internal/admit"]
    assert hot.attributes is not None and hot.attributes["http.route"] == "/internal/admit"
    assert hot.context is not None and hot.context.trace_id == int(TRACE_ID, 16)  # continues the caller's
