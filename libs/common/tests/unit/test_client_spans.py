"""CLIENT spans for Redis, PostgreSQL and HTTP: made only in sampled traces, and never holding a value."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from multidict import CIMultiDict
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from yarl import URL

from leaky_common import client_spans
from leaky_common.client_spans import http_client_spans, sampled
from leaky_common.store_spans import TracedRedis, batch_span, sql_summary
from leaky_devinfra.spans import capture_spans

tracer = trace.get_tracer("test")


@pytest.fixture(autouse=True)
def _enabled() -> Iterator[None]:
    yield
    client_spans.configure(True)


def test_sql_summary_names_the_operation_and_first_table_never_values() -> None:
    assert sql_summary("SELECT id FROM api_keys WHERE hash = $1") == ("SELECT", "api_keys")
    assert sql_summary("insert into ledger (a) values ($1)") == ("INSERT", "ledger")
    assert sql_summary("UPDATE pools SET used = used + $1") == ("UPDATE", "pools")
    assert sql_summary("BEGIN") == ("BEGIN", None)


def test_sampled_only_inside_a_sampled_span_and_only_when_enabled() -> None:
    assert not sampled()  # no span at all
    with tracer.start_as_current_span("unsampled"):  # the test provider drops outside capture_spans
        assert not sampled()
    with capture_spans(), tracer.start_as_current_span("request"):
        assert sampled()
        client_spans.configure(False)
        assert not sampled()


class _Response:
    status = 201


async def _call(url: str, *, with_path: bool = True) -> CIMultiDict[str]:
    headers: CIMultiDict[str] = CIMultiDict()
    request: Any = SimpleNamespace(url=URL(url), method="POST", headers=headers)

    async def handler(req: Any) -> Any:
        return _Response()

    await http_client_spans(with_path=with_path)(request, handler)
    return headers


async def test_an_http_span_has_the_url_without_query_or_credentials_and_propagates_itself() -> None:
    with capture_spans() as exported, tracer.start_as_current_span("request"):
        headers = await _call("https://user:pw@api.example.com:8443/v1/models/x:generate?key=SECRET#frag")
    (span,) = [s for s in exported.get_finished_spans() if s.name == "POST"]
    assert span.kind is trace.SpanKind.CLIENT
    attrs = dict(span.attributes or {})
    assert attrs["url.full"] == "https://api.example.com:8443/v1/models/x:generate"
    assert attrs["server.address"] == "api.example.com" and attrs["server.port"] == 8443
    assert attrs["http.request.method"] == "POST" and attrs["http.response.status_code"] == 201
    assert "SECRET" not in str(attrs) and "pw" not in str(attrs)
    # The server's span will be this span's child.
    assert headers["traceparent"].split("-")[2] == f"{span.context.span_id:016x}"


async def test_a_webhook_span_hides_the_path_and_unsampled_calls_make_no_span() -> None:
    with capture_spans() as exported:
        with tracer.start_as_current_span("request"):
            await _call("https://hooks.slack.com/services/T0/B0/SECRETPATH", with_path=False)
        (span,) = [s for s in exported.get_finished_spans() if s.name == "POST"]
        assert dict(span.attributes or {})["url.full"] == "https://hooks.slack.com/REDACTED"
    exported.clear()
    headers = await _call("https://api.example.com/")  # no sampled trace
    assert "traceparent" not in headers and not exported.get_finished_spans()


def test_the_ratio_is_decided_by_the_trace_id_so_every_service_agrees() -> None:
    def in_trace(trace_id: int) -> bool:
        ctx = SpanContext(trace_id, 1, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED))
        with trace.use_span(NonRecordingSpan(ctx)):
            return sampled()

    low, high = 0xABC << 64 | 1, (1 << 64) - 2  # the low 64 bits decide
    client_spans.configure(True, 0.5)
    assert in_trace(low) and not in_trace(high)
    client_spans.configure(True, 1.0)
    assert in_trace(low) and in_trace(high)
    client_spans.configure(True, 0.0)
    assert not in_trace(low)


def test_a_pipeline_of_scripts_gets_one_batch_span_only_in_a_sampled_trace() -> None:
    redis = TracedRedis(host="redis.internal", port=6380)
    assert batch_span(redis, "admit", 3) is None  # no sampled trace: nothing
    with capture_spans() as exported, tracer.start_as_current_span("request"):
        span = batch_span(redis, "admit", 3)
        assert span is not None
        span.end()
    (made,) = [s for s in exported.get_finished_spans() if s.name == "BATCH EVALSHA admit"]
    assert made.kind is trace.SpanKind.CLIENT
    assert dict(made.attributes or {}) == {
        "db.system.name": "redis",
        "db.operation.name": "BATCH EVALSHA",
        "db.operation.batch.size": 3,
        "db.stored_procedure.name": "admit",
        "server.address": "redis.internal",
        "server.port": 6380,
    }


def test_a_pipeline_of_one_script_is_no_batch() -> None:
    """OpenTelemetry counts two or more operations as a batch: one script alone is named as if sent alone."""
    redis = TracedRedis(host="redis.internal", port=6380)
    with capture_spans() as exported, tracer.start_as_current_span("request"):
        span = batch_span(redis, "admit", 1)
        assert span is not None
        span.end()
    (made,) = [s for s in exported.get_finished_spans() if s.name == "EVALSHA admit"]
    attributes = dict(made.attributes or {})
    assert attributes["db.operation.name"] == "EVALSHA" and "db.operation.batch.size" not in attributes
