"""Every provider adapter against a local fake server speaking that provider's wire format: a non-streamed
and a streamed call with exact usage and cost, retries, error mapping, and request translation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from leaky_common.errors import InvalidRequest, ServiceUnavailable, UpstreamError, UpstreamTimeout
from leaky_devinfra.fakes.llm import FakeKind, FakeProvider, FakeUsage
from leaky_devinfra.infra import free_port
from lt_gateway.adapters.providers import Provider
from lt_gateway.adapters.providers.http import UpstreamHTTP
from lt_gateway.adapters.providers.registry import build_providers
from lt_gateway.domain.models import ModelSpec
from lt_gateway.domain.tokens import text_tokens

pytestmark = pytest.mark.integration

KINDS: list[FakeKind] = ["openai", "azure", "anthropic", "gemini", "qwen", "openai_compatible"]
KEY_ENV = "LT_TEST_PROVIDER_KEY"
# Prices in micro-dollars per million tokens (cache reads a tenth, cache writes 1.25x, like Anthropic).
PRICES = {
    "input_usd_micros_per_mtok": 3_000_000,
    "output_usd_micros_per_mtok": 15_000_000,
    "cached_input_usd_micros_per_mtok": 300_000,
    "cache_write_usd_micros_per_mtok": 3_750_000,
}
CHAT = {
    "model": "x",
    "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
    "max_tokens": 50,
}


@pytest.fixture
async def http() -> AsyncIterator[UpstreamHTTP]:
    client = UpstreamHTTP(timeout_s=2.0, backoff_s=0.01)
    await client.start()
    yield client
    await client.close()


@pytest.fixture
def providers(http: UpstreamHTTP) -> dict[str, Provider]:
    return build_providers(http)


@pytest.fixture(autouse=True)
def provider_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-fake")


async def started(fake: FakeProvider) -> FakeProvider:
    await fake.start()
    return fake


def spec_for(fake: FakeProvider, **over: Any) -> ModelSpec:
    raw: dict[str, Any] = {
        "name": f"test-{fake.kind}",
        "provider": fake.kind,
        "upstream_model": "upstream-model",
        "base_url": fake.base_url,
        "api_key_env": KEY_ENV,
        "api_version": "2024-10-21" if fake.kind == "azure" else None,
        **PRICES,
        **over,
    }
    return ModelSpec.model_validate(raw)


def expected_cost(u: FakeUsage) -> int:
    fresh = u.prompt - u.cached - u.cache_write
    numerator = fresh * 3_000_000 + u.cached * 300_000 + u.cache_write * 3_750_000 + u.completion * 15_000_000
    return -(-numerator // 1_000_000)


def fake_usage(kind: FakeKind) -> FakeUsage:
    # Cache writes exist only at Anthropic; Gemini and OpenAI-shaped APIs report cached reads.
    return FakeUsage(prompt=1_234, completion=6, cached=200, cache_write=100 if kind == "anthropic" else 0)


@pytest.mark.parametrize("kind", KINDS)
async def test_non_streamed_call_has_exact_usage_and_cost(
    kind: FakeKind, providers: dict[str, Provider]
) -> None:
    fake = await started(FakeProvider(kind, usage=fake_usage(kind)))
    try:
        spec = spec_for(fake)
        result = await providers[kind].complete(spec, CHAT)
        u = fake.usage
        assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (u.prompt, u.completion)
        assert (result.usage.cached_tokens, result.usage.cache_write_tokens) == (u.cached, u.cache_write)
        assert result.body["object"] == "chat.completion"
        assert result.body["choices"][0]["message"]["content"] == fake.text
        assert result.body["choices"][0]["finish_reason"] == "stop"
        assert result.body["usage"]["total_tokens"] == u.prompt + u.completion
        cost = spec.cost_usd_micros(
            result.usage.prompt_tokens,
            result.usage.completion_tokens,
            result.usage.cached_tokens,
            result.usage.cache_write_tokens,
        )
        assert cost == expected_cost(u)
    finally:
        await fake.close()


@pytest.mark.parametrize("kind", KINDS)
async def test_streamed_call_has_exact_usage_and_cost(kind: FakeKind, providers: dict[str, Provider]) -> None:
    fake = await started(FakeProvider(kind, usage=fake_usage(kind)))
    try:
        spec = spec_for(fake)
        chunks = [c async for c in providers[kind].stream(spec, {**CHAT, "stream": True})]
        text = "".join(
            c.body["choices"][0]["delta"].get("content") or "" for c in chunks if c.body.get("choices")
        )
        assert text == fake.text
        assert all(c.body["object"] == "chat.completion.chunk" for c in chunks)
        finishes = [c.body["choices"][0]["finish_reason"] for c in chunks if c.body.get("choices")]
        assert finishes[-1] == "stop"
        usages = [c.usage for c in chunks if c.usage is not None]
        assert len(usages) == 1 and chunks[-1].usage is usages[0]
        (usage,) = usages
        u = fake.usage
        assert (usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens) == (
            u.prompt,
            u.completion,
            u.cached,
        )
        assert spec.cost_usd_micros(
            usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens, usage.cache_write_tokens
        ) == expected_cost(u)
        # What was streamed, counted with the tokenizer, for when an upstream reports no usage.
        assert sum(c.completion_tokens for c in chunks) == sum(text_tokens(w) for w in fake.words)
    finally:
        await fake.close()


async def test_openai_compatible_stream_without_usage_is_counted(providers: dict[str, Provider]) -> None:
    fake = await started(FakeProvider("openai_compatible", stream_usage=False))
    try:
        chunks = [
            c async for c in providers["openai_compatible"].stream(spec_for(fake), {**CHAT, "stream": True})
        ]
        assert all(c.usage is None for c in chunks)
        assert sum(c.completion_tokens for c in chunks) == sum(text_tokens(w) for w in fake.words)
        # The gateway still asked for usage.
        assert fake.requests[0]["json"]["stream_options"] == {"include_usage": True}
    finally:
        await fake.close()


@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini"])
async def test_429_and_5xx_are_retried_with_backoff(kind: FakeKind, providers: dict[str, Provider]) -> None:
    fake = await started(FakeProvider(kind, fail_next=[503, 429]))
    try:
        result = await providers[kind].complete(spec_for(fake, max_retries=2), CHAT)
        assert result.usage.completion_tokens == fake.usage.completion
        assert len(fake.requests) == 3
    finally:
        await fake.close()


@pytest.mark.parametrize(
    ("fail", "error", "status", "code"),
    [
        ([500, 500, 500], UpstreamError, 502, "upstream_error"),
        ([429, 429, 429], ServiceUnavailable, 503, "upstream_rate_limited"),
        ([503, 503, 503], ServiceUnavailable, 503, "upstream_unavailable"),
        ([400], InvalidRequest, 400, "upstream_rejected_request"),
    ],
)
async def test_upstream_errors_are_mapped_after_retries(
    fail: list[int], error: type[Exception], status: int, code: str, providers: dict[str, Provider]
) -> None:
    fake = await started(FakeProvider("anthropic", fail_next=list(fail)))
    try:
        with pytest.raises(error) as info:
            await providers["anthropic"].complete(spec_for(fake, max_retries=2), CHAT)
        assert (info.value.status, info.value.code) == (status, code)  # type: ignore[attr-defined]
        assert len(fake.requests) == len(fail)  # 400 is never retried
    finally:
        await fake.close()


async def test_wrong_provider_key_is_502_not_the_clients_401(providers: dict[str, Provider]) -> None:
    fake = await started(FakeProvider("gemini", api_key="another-key"))
    try:
        with pytest.raises(UpstreamError) as info:
            await providers["gemini"].complete(spec_for(fake), CHAT)
        assert info.value.code == "upstream_auth_failed"
    finally:
        await fake.close()


async def test_slow_upstream_is_504(providers: dict[str, Provider]) -> None:
    fake = await started(FakeProvider("openai", delay_s=1.0))
    try:
        with pytest.raises(UpstreamTimeout):
            await providers["openai"].complete(spec_for(fake, timeout_s=0.2, max_retries=0), CHAT)
    finally:
        await fake.close()


async def test_unreachable_upstream_is_503(providers: dict[str, Provider]) -> None:
    spec = ModelSpec.model_validate(
        {
            "name": "gone",
            "provider": "openai",
            "upstream_model": "m",
            "base_url": f"http://127.0.0.1:{free_port()}/v1",
            "max_retries": 1,
            **PRICES,
        }
    )
    with pytest.raises(ServiceUnavailable) as info:
        await providers["openai"].complete(spec, CHAT)
    assert info.value.code == "upstream_unavailable"


async def test_anthropic_request_translation(providers: dict[str, Provider]) -> None:
    fake = await started(FakeProvider("anthropic"))
    try:
        body = {
            **CHAT,
            "stop": "END",
            "temperature": 0.5,
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        }
        await providers["anthropic"].complete(spec_for(fake), body)
        sent = fake.requests[0]
        assert sent["headers"]["anthropic-version"] == "2023-06-01"
        assert sent["headers"]["x-api-key"] == "sk-fake"
        req = sent["json"]
        assert req["system"] == "be brief"
        assert req["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
        assert (req["max_tokens"], req["stop_sequences"], req["temperature"]) == (50, ["END"], 0.5)
        assert req["tools"][0]["name"] == "f"
    finally:
        await fake.close()


async def test_gemini_request_translation(providers: dict[str, Provider]) -> None:
    fake = await started(FakeProvider("gemini"))
    try:
        await providers["gemini"].complete(spec_for(fake), {**CHAT, "top_p": 0.9})
        sent = fake.requests[0]
        assert sent["path"] == "/v1beta/models/upstream-model:generateContent"
        req = sent["json"]
        assert req["systemInstruction"] == {"parts": [{"text": "be brief"}]}
        assert req["contents"] == [{"role": "user", "parts": [{"text": "hi"}]}]
        assert req["generationConfig"] == {"maxOutputTokens": 50, "topP": 0.9}
    finally:
        await fake.close()


async def test_azure_uses_deployment_url_and_api_key_header(providers: dict[str, Provider]) -> None:
    fake = await started(FakeProvider("azure"))
    try:
        await providers["azure"].complete(spec_for(fake), CHAT)
        sent = fake.requests[0]
        assert sent["path"] == "/openai/deployments/upstream-model/chat/completions?api-version=2024-10-21"
        assert sent["headers"]["api-key"] == "sk-fake"
        assert "authorization" not in {k.lower() for k in sent["headers"]}
    finally:
        await fake.close()


@pytest.mark.parametrize("kind", ["openai", "qwen", "openai_compatible"])
async def test_openai_shaped_completions_and_embeddings(
    kind: FakeKind, providers: dict[str, Provider]
) -> None:
    fake = await started(FakeProvider(kind))
    try:
        spec = spec_for(fake)
        done = await providers[kind].text_complete(spec, {"model": "x", "prompt": "hi", "max_tokens": 5})
        assert done.body["choices"][0]["text"] == fake.text
        assert done.usage.completion_tokens == fake.usage.completion
        chunks = [
            c async for c in providers[kind].text_stream(spec, {"model": "x", "prompt": "hi", "stream": True})
        ]
        assert "".join(c.body["choices"][0]["text"] for c in chunks if c.body["choices"]) == fake.text
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == fake.usage.completion
        assert sum(c.completion_tokens for c in chunks) == sum(text_tokens(w) for w in fake.words)
        emb = await providers[kind].embed(spec, {"model": "x", "input": ["a", "b"]})
        assert len(emb.body["data"]) == 2
        assert (emb.usage.prompt_tokens, emb.usage.completion_tokens) == (fake.usage.prompt, 0)
    finally:
        await fake.close()


TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


@pytest.mark.parametrize("kind", ["anthropic", "gemini"])
async def test_tool_calls_are_translated_back_streamed_and_not(
    kind: FakeKind, providers: dict[str, Provider]
) -> None:
    fake = await started(FakeProvider(kind, tool_call=("get_weather", {"city": "Oslo"})))
    try:
        spec = spec_for(fake)
        body = {**CHAT, "tools": TOOLS}
        done = await providers[kind].complete(spec, body)
        choice = done.body["choices"][0]
        assert choice["finish_reason"] == "tool_calls"
        (call,) = choice["message"]["tool_calls"]
        assert call["function"]["name"] == "get_weather"
        assert orjson.loads(call["function"]["arguments"]) == {"city": "Oslo"}

        chunks = [c async for c in providers[kind].stream(spec, {**body, "stream": True})]
        deltas = [
            d
            for c in chunks
            if c.body.get("choices")
            for d in c.body["choices"][0]["delta"].get("tool_calls") or ()
        ]
        assert {d["function"].get("name") for d in deltas} >= {"get_weather"}
        args = "".join(d["function"].get("arguments") or "" for d in deltas)
        assert orjson.loads(args) == {"city": "Oslo"}
        finishes = [c.body["choices"][0]["finish_reason"] for c in chunks if c.body.get("choices")]
        assert finishes[-1] == "tool_calls"
    finally:
        await fake.close()


@pytest.mark.parametrize("kind", ["anthropic", "gemini"])
async def test_tool_results_are_sent_in_the_providers_shape(
    kind: FakeKind, providers: dict[str, Provider]
) -> None:
    fake = await started(FakeProvider(kind))
    try:
        messages = [
            {"role": "user", "content": "weather?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_9", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]},
            {"role": "tool", "tool_call_id": "call_9", "content": "sunny"},
        ]  # fmt: skip
        await providers[kind].complete(spec_for(fake), {"model": "x", "messages": messages, "tools": TOOLS})
        sent = fake.requests[0]["json"]
        if kind == "anthropic":
            assert sent["messages"][1]["content"] == [
                {"type": "tool_use", "id": "call_9", "name": "get_weather", "input": {"city": "Oslo"}}
            ]
            assert sent["messages"][2] == {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "call_9", "content": "sunny"}],
            }
        else:
            assert sent["contents"][1] == {
                "role": "model",
                "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}}],
            }
            assert sent["contents"][2]["parts"] == [
                {"functionResponse": {"name": "get_weather", "response": {"content": "sunny"}}}
            ]
            assert sent["tools"] == [
                {"functionDeclarations": [{"name": "get_weather", "parameters": {"type": "object"}}]}
            ]
    finally:
        await fake.close()
