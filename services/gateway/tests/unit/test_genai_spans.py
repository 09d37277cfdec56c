"""Provider-call spans after the GenAI semantic conventions, and usage events carrying the request's trace."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import orjson
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from starlette.responses import StreamingResponse

from leaky_common.events import Topics
from leaky_devinfra.gateway_fakes import GrantingQuota, RecordingSink, chat_request
from leaky_devinfra.spans import capture_spans
from lt_gateway.adapters.genai_trace import span_for
from lt_gateway.adapters.model_table import ModelTable
from lt_gateway.adapters.providers.mock import MockProvider
from lt_gateway.adapters.usage_sink import UsageSink
from lt_gateway.api.chat import ChatHandler
from lt_gateway.domain.models import ModelSpec
from lt_gateway.usecases.completion.flow import CompletionFlow
from lt_gateway.usecases.completion.keycheck import KeyCheck

PROMPT = "my secret plan is purple elephants"
tracer = trace.get_tracer("test")


class Failing:
    async def complete(self, spec: ModelSpec, body: dict[str, Any]) -> Any:
        raise ConnectionResetError(f"upstream went away while reading {PROMPT}")


def chat(provider: Any = None, sink: Any = None) -> ChatHandler:
    quota = GrantingQuota()
    flow = CompletionFlow(
        models=ModelTable.load(None),
        providers={"mock": provider or MockProvider()},
        quota=quota,  # type: ignore[arg-type]
        usage=sink or RecordingSink(),  # type: ignore[arg-type]
    )
    return ChatHandler(flow, KeyCheck(quota, 30), max_body_bytes=100_000)  # type: ignore[arg-type]


def no_text(spans: tuple[ReadableSpan, ...]) -> None:
    """Neither the prompt nor any part of it is in a span's name, attributes or events."""
    for span in spans:
        values = [span.name, *map(str, (span.attributes or {}).values())]
        values += [str(v) for e in span.events for v in (e.attributes or {}).values()]
        assert not [v for v in values if "purple" in v or "secret" in v], span.name


async def test_a_provider_call_is_a_genai_client_span_under_the_request() -> None:
    with capture_spans() as spans:
        with tracer.start_as_current_span("POST /v1/chat/completions") as root:
            response = await chat().handle(chat_request(PROMPT))
        finished = spans.get_finished_spans()
    usage = orjson.loads(response.body)["usage"]
    (call,) = [s for s in finished if s.name == "chat mock-gpt"]
    assert call.kind is trace.SpanKind.CLIENT
    assert call.parent is not None and call.parent.span_id == root.get_span_context().span_id
    expected = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "mock",
        "gen_ai.request.model": "mock-gpt",
        "gen_ai.response.model": "mock-gpt",
        "gen_ai.usage.input_tokens": usage["prompt_tokens"],
        "gen_ai.usage.output_tokens": usage["completion_tokens"],
    }
    assert {k: (call.attributes or {}).get(k) for k in expected} == expected
    no_text(finished)


async def test_a_stream_span_ends_with_the_stream_and_marks_the_first_token() -> None:
    with capture_spans() as spans:
        with tracer.start_as_current_span("POST /v1/chat/completions"):
            response = await chat().handle(chat_request(PROMPT, stream=True))
            assert isinstance(response, StreamingResponse)
            assert not [s for s in spans.get_finished_spans() if s.name == "chat mock-gpt"]  # still open
            body = b"".join(
                [c if isinstance(c, bytes) else str(c).encode() async for c in response.body_iterator]
            )
        finished = spans.get_finished_spans()
    (call,) = [s for s in finished if s.name == "chat mock-gpt"]
    attributes = dict(call.attributes or {})
    assert attributes["gen_ai.request.stream"] is True
    output, prompt = attributes["gen_ai.usage.output_tokens"], attributes["gen_ai.usage.input_tokens"]
    assert isinstance(output, int) and isinstance(prompt, int) and output > 0 and prompt > 0
    (first,) = [e for e in call.events if e.name == "gen_ai.first_token"]
    ttft = (first.attributes or {})["gen_ai.server.time_to_first_token"]
    assert isinstance(ttft, float) and ttft >= 0
    assert b"purple" in body  # the mock echoes the prompt, and still no span holds it
    no_text(finished)


async def test_a_failed_provider_call_is_an_error_span_without_the_message() -> None:
    with capture_spans() as spans:
        with tracer.start_as_current_span("POST /v1/chat/completions"):
            response = await chat(Failing()).handle(chat_request(PROMPT))
        finished = spans.get_finished_spans()
    assert response.status_code == 502
    (call,) = [s for s in finished if s.name == "chat mock-gpt"]
    assert call.status.status_code is trace.StatusCode.ERROR
    assert (call.attributes or {})["error.type"] == "ConnectionResetError"  # the class, not the message
    no_text(finished)


async def test_nothing_is_traced_without_a_sampled_request_span() -> None:
    with capture_spans() as spans:
        await chat().handle(chat_request(PROMPT))  # no request span: the provider call opens none either
        assert spans.get_finished_spans() == ()


class Publisher:
    def __init__(self) -> None:
        self.sent: list[tuple[str, list[tuple[str, bytes]]]] = []

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def publish_batch(
        self, topic: str, messages: list[tuple[bytes, bytes | None, list[tuple[str, bytes]]]]
    ) -> list[BaseException | None]:
        self.sent.extend((topic, headers) for _, _, headers in messages)
        return [None] * len(messages)


async def test_the_usage_event_carries_the_requests_trace_in_its_kafka_headers(tmp_path: Path) -> None:
    publisher = Publisher()
    sink = UsageSink(publisher, 100, spool_path=tmp_path / "spool.sqlite")  # type: ignore[arg-type]
    await sink.start()
    try:
        with capture_spans() as spans:
            with tracer.start_as_current_span("POST /v1/chat/completions") as root:
                await chat(sink=sink).handle(chat_request(PROMPT))
            await sink.drain(10)
            finished = spans.get_finished_spans()
        untraced = await chat(sink=sink).handle(
            chat_request(PROMPT)
        )  # after the test's spans: no trace headers
        assert untraced.status_code == 200
        assert await sink.drain(10)
    finally:
        await sink.stop()
    (topic, headers), (_, plain) = publisher.sent
    assert topic == Topics.USAGE
    traceparent = dict(headers)["traceparent"].decode()
    _, trace_id, parent_id, flags = traceparent.split("-")
    assert trace_id == f"{root.get_span_context().trace_id:032x}" and int(flags, 16) & 1  # sampled
    assert parent_id == f"{root.get_span_context().span_id:016x}"  # the request span: links lead to it
    (request_span,) = [s for s in finished if s.name == "POST /v1/chat/completions"]
    (published,) = [e for e in request_span.events if e.name == f"publish {Topics.USAGE}"]
    assert published.attributes is not None and published.attributes["messaging.message.id"]
    assert dict(plain) == {"type": b"UsageRecorded.v1"}


def test_operation_names_and_the_providers_host() -> None:
    embedding = ModelTable.load(None).get("mock-embedding")
    assert embedding is not None
    remote = ModelSpec(
        name="gpt-x", provider="openai", upstream_model="gpt-4o", base_url="https://llm.example.com/v1",
        input_usd_micros_per_mtok=1, output_usd_micros_per_mtok=1,
    )  # fmt: skip
    with capture_spans() as spans:
        with tracer.start_as_current_span("request"):
            with span_for(embedding, "embedding"):
                pass
            with span_for(remote, "completion"):
                pass
        finished = {s.name: dict(s.attributes or {}) for s in spans.get_finished_spans()}
    assert finished["embeddings mock-embedding"]["gen_ai.operation.name"] == "embeddings"
    assert "server.address" not in finished["embeddings mock-embedding"]  # the mock has no host
    completion = finished["text_completion gpt-4o"]
    assert (completion["server.address"], completion["server.port"]) == ("llm.example.com", 443)
    assert (completion["gen_ai.provider.name"], completion["lt.model"]) == ("openai", "gpt-x")


async def test_a_stream_the_client_leaves_ends_its_span() -> None:
    with capture_spans() as spans:
        with tracer.start_as_current_span("POST /v1/chat/completions"):
            response = await chat().handle(chat_request(PROMPT, stream=True))
            assert isinstance(response, StreamingResponse)
            body = response.body_iterator
            assert isinstance(body, AsyncGenerator)
            await anext(body)  # the first event reaches the client, which then goes away
            await body.aclose()
        (call,) = [s for s in spans.get_finished_spans() if s.name == "chat mock-gpt"]
    # Ended with what was counted so far (the mock reports the prompt side only with its final usage).
    assert isinstance((call.attributes or {})["gen_ai.usage.output_tokens"], int)
