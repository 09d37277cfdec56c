"""Provider-call, token and cost metrics of the chat handler (mock provider, in process)."""

from __future__ import annotations

from typing import Any

import orjson
from prometheus_client import REGISTRY
from starlette.responses import StreamingResponse

from leaky_common.errors import UpstreamTimeout
from leaky_devinfra.gateway_fakes import GrantingQuota, RecordingSink, chat_request
from lt_gateway.adapters.metrics import status_label, usage_metrics
from lt_gateway.adapters.model_table import ModelTable
from lt_gateway.adapters.providers.mock import MockProvider
from lt_gateway.api.chat import ChatHandler
from lt_gateway.domain.models import ModelSpec
from lt_gateway.usecases.completion.flow import CompletionFlow
from lt_gateway.usecases.completion.keycheck import KeyCheck

MOCK = {"provider": "mock", "model": "mock-gpt"}


class TimingOut:
    async def complete(self, spec: ModelSpec, body: dict[str, Any]) -> Any:
        raise UpstreamTimeout("the provider did not answer in time")


def chat(provider: Any = None, sink: RecordingSink | None = None, source: str = "personal") -> ChatHandler:
    quota = GrantingQuota(source)
    flow = CompletionFlow(
        models=ModelTable.load(None),
        providers={"mock": provider or MockProvider()},
        quota=quota,  # type: ignore[arg-type]
        usage=sink or RecordingSink(),  # type: ignore[arg-type]
    )
    return ChatHandler(flow, KeyCheck(quota, 30), max_body_bytes=100_000)  # type: ignore[arg-type]


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_call_counts_its_latency_tokens_and_cost_by_model_provider_and_source() -> None:
    duration = value("lt_gateway_provider_request_duration_seconds_count", **MOCK, status="ok")
    usage = {**MOCK, "quota_source": "vacation_share"}
    prompt = value("lt_gateway_tokens_total", **usage, kind="prompt")
    completion = value("lt_gateway_tokens_total", **usage, kind="completion")
    cost = value("lt_gateway_cost_usd_total", **usage)
    sink = RecordingSink()
    response = await chat(sink=sink, source="vacation_share").handle(chat_request())
    assert response.status_code == 200
    body = orjson.loads(response.body)
    assert value("lt_gateway_provider_request_duration_seconds_count", **MOCK, status="ok") == duration + 1
    assert value("lt_gateway_tokens_total", **usage, kind="prompt") == prompt + body["usage"]["prompt_tokens"]
    assert value("lt_gateway_tokens_total", **usage, kind="completion") == (
        completion + body["usage"]["completion_tokens"]
    )
    (event,) = sink.events
    assert event.cost_usd_micros > 0
    assert abs(value("lt_gateway_cost_usd_total", **usage) - cost - event.cost_usd_micros / 1e6) < 1e-9


async def test_a_stream_records_its_time_to_first_token() -> None:
    before = value("lt_gateway_provider_time_to_first_token_seconds_count", **MOCK)
    response = await chat().handle(chat_request(stream=True))
    assert isinstance(response, StreamingResponse)
    async for _ in response.body_iterator:
        pass
    assert value("lt_gateway_provider_time_to_first_token_seconds_count", **MOCK) == before + 1


async def test_a_failed_call_counts_an_error_by_status() -> None:
    errors = value("lt_gateway_provider_errors_total", **MOCK, status="504")
    failed = value("lt_gateway_provider_request_duration_seconds_count", **MOCK, status="504")
    response = await chat(TimingOut()).handle(chat_request())
    assert response.status_code == 504
    assert value("lt_gateway_provider_errors_total", **MOCK, status="504") == errors + 1
    assert value("lt_gateway_provider_request_duration_seconds_count", **MOCK, status="504") == failed + 1
    assert (
        REGISTRY.get_sample_value("lt_gateway_provider_errors_total", {**MOCK, "status": "502"}) is not None
    )  # at 0


def test_unknown_quota_sources_and_statuses_are_folded() -> None:
    usage_metrics("mock-gpt", "mock", "a-source-quota-never-sends").add(1, 2, 3)
    assert value("lt_gateway_tokens_total", **MOCK, quota_source="other", kind="completion") >= 2
    assert status_label(503) == "503"
    assert status_label(0) == "other"
    assert status_label(1234) == "other"
