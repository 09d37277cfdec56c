import pytest

from lt_gateway.adapters.model_table import ModelTable
from lt_gateway.adapters.providers.mock import MockProvider, reply_words
from lt_gateway.domain.pricing import format_usd
from lt_gateway.domain.tokens import estimate_prompt_tokens, text_tokens


def test_mock_gpt_is_priced_like_gpt_4o_mini_with_exact_integer_cost() -> None:
    spec = ModelTable.load(None).get("mock-gpt")
    assert spec is not None
    assert spec.provider == "mock"
    # 1M prompt tokens = $0.15, 1M completion tokens = $0.60
    assert spec.cost_usd_micros(1_000_000, 0) == 150_000
    assert spec.cost_usd_micros(0, 1_000_000) == 600_000
    # 7 prompt + 3 completion = 1.05 + 1.8 = 2.85 micro-dollars -> rounded up to 3
    assert spec.cost_usd_micros(7, 3) == 3
    assert spec.cost_usd_micros(0, 0) == 0


def test_format_usd() -> None:
    assert format_usd(3) == "0.000003"
    assert format_usd(1_500_000) == "1.500000"
    assert format_usd(-2) == "-0.000002"


def test_token_estimates_are_positive_and_monotonic() -> None:
    assert text_tokens("") == 0
    assert text_tokens("hello") == 1  # cl100k_base
    assert text_tokens("Hello world, how are you?") == 7
    short = estimate_prompt_tokens([{"role": "user", "content": "hi"}])
    long = estimate_prompt_tokens([{"role": "user", "content": "hi " * 50}])
    assert 0 < short < long


def test_reply_respects_max_tokens_and_reports_length() -> None:
    messages = [{"role": "user", "content": "tell me a story about tokens"}]
    words, used, finish = reply_words(messages, 10_000)
    assert finish == "stop"
    assert used == sum(text_tokens(w) for w in words)
    cut, cut_used, cut_finish = reply_words(messages, 5)
    assert cut_finish == "length"
    assert cut_used <= 5
    assert cut == words[: len(cut)]


async def test_stream_and_non_stream_agree_on_usage() -> None:
    spec = ModelTable.load(None).get("mock-gpt")
    assert spec is not None
    provider = MockProvider()
    body = {
        "model": "mock-gpt",
        "messages": [{"role": "user", "content": "same answer please"}],
        "max_tokens": 50,
    }
    full = await provider.complete(spec, body)
    chunks = [c async for c in provider.stream(spec, body)]
    text = "".join(c.body["choices"][0]["delta"].get("content", "") for c in chunks if c.body["choices"])
    assert text == full.body["choices"][0]["message"]["content"]
    assert chunks[-1].usage == full.usage
    assert sum(c.completion_tokens for c in chunks) == full.usage.completion_tokens
    assert full.body["usage"]["total_tokens"] == full.usage.prompt_tokens + full.usage.completion_tokens


@pytest.mark.parametrize("max_tokens", [1, 3, 8])
async def test_mock_never_exceeds_granted_tokens(max_tokens: int) -> None:
    spec = ModelTable.load(None).get("mock-gpt")
    assert spec is not None
    body = {
        "model": "mock-gpt",
        "messages": [{"role": "user", "content": "a b c d e f g h"}],
        "max_tokens": max_tokens,
    }
    result = await MockProvider().complete(spec, body)
    assert result.usage.completion_tokens <= max_tokens
