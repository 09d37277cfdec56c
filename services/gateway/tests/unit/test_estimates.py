"""Estimates that cover the request: image rules per provider, tools and schemas, `n` and `best_of`,
the fallback chain's prices, base64 embeddings and a stream of several choices."""

from __future__ import annotations

import base64
import struct
import zlib
from typing import Any

import pytest

from leaky_common.auth import Principal
from leaky_common.contracts import AdmitResponse, RateLimitState
from leaky_common.errors import InvalidRequest
from lt_gateway.adapters.providers.mock import MockProvider
from lt_gateway.domain.admission import admit_request, servable, upstream_body
from lt_gateway.domain.call import Call
from lt_gateway.domain.images import (
    ImagePart,
    anthropic_tokens,
    data_url_size,
    gemini_tokens,
    image_tokens,
    openai_tokens,
    qwen_tokens,
)
from lt_gateway.domain.models import ModelSpec
from lt_gateway.domain.requests import GovernanceHeaders, parse_chat, parse_completion, parse_embedding
from lt_gateway.domain.stream import StreamAccount
from lt_gateway.domain.usage import StreamChunk, Usage, base64_embeddings

GOV = GovernanceHeaders(None, None, None)


def png(w: int, h: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(ihdr))


def data_url(raw: bytes, media: str = "image/png") -> str:
    return f"data:{media};base64," + base64.b64encode(raw).decode()


def spec(name: str, provider: str, inp: int = 1_000_000, out: int = 2_000_000, **extra: Any) -> ModelSpec:
    return ModelSpec.model_validate({
        "name": name, "provider": provider, "upstream_model": name, "base_url": "http://127.0.0.1:1",
        "input_usd_micros_per_mtok": inp, "output_usd_micros_per_mtok": out, **extra,
    })  # fmt: skip


@pytest.mark.parametrize(
    ("size", "detail", "tokens"),
    [
        ((1024, 1024), "high", 765),  # OpenAI's own examples
        ((2048, 4096), "auto", 1105),
        ((4096, 8192), "low", 85),
        ((512, 512), "auto", 255),
        (None, "auto", 1445),  # a remote URL: the most one image can cost (768x2048, 8 tiles)
        (None, "low", 85),
    ],
)
def test_openai_tile_rule(size: tuple[int, int] | None, detail: str, tokens: int) -> None:
    assert openai_tokens(ImagePart(size, detail)) == tokens


def test_other_providers_rules_and_their_worst_cases() -> None:
    assert anthropic_tokens(ImagePart((1000, 1000))) == 1334
    assert anthropic_tokens(ImagePart((200, 200))) == 54
    assert anthropic_tokens(ImagePart((5000, 5000))) == 1600 == anthropic_tokens(ImagePart(None))
    assert gemini_tokens(ImagePart((384, 300))) == 258
    assert gemini_tokens(ImagePart((1000, 800))) == 4 * 258
    assert qwen_tokens(ImagePart((280, 280))) == 100 + 2
    assert qwen_tokens(ImagePart(None)) == qwen_tokens(ImagePart((9000, 9000))) == 1282


def test_image_sizes_are_read_from_data_url_headers() -> None:
    assert data_url_size(data_url(png(640, 480))) == (640, 480)
    assert data_url_size(data_url(b"GIF89a" + struct.pack("<HH", 31, 17) + b"\x00" * 8, "image/gif")) == (
        31,
        17,
    )
    sof = b"\xff\xc0" + struct.pack(">HBHH", 17, 8, 300, 400) + b"\x00" * 12
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00" + b"\x00" * 9
    assert data_url_size(data_url(b"\xff\xd8" + app0 + sof, "image/jpeg")) == (400, 300)
    vp8x = (
        b"RIFF\x00\x00\x00\x00WEBPVP8X"
        + b"\x00" * 8
        + (99).to_bytes(3, "little")
        + (49).to_bytes(3, "little")
    )
    assert data_url_size(data_url(vp8x, "image/webp")) == (100, 50)
    assert data_url_size("data:image/png;base64,!!!") is None
    assert data_url_size("https://example.com/a.png") is None


def test_tools_schemas_and_images_raise_the_prompt_estimate() -> None:
    base = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    plain = parse_chat(base).prompt_tokens
    fn = {"name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}
    tools = parse_chat({**base, "tools": [{"type": "function", "function": fn}]})
    assert tools.prompt_tokens >= plain + 20
    assert tools.estimated_prompt("anthropic") == tools.estimated_prompt("openai") + 346
    schema = {"type": "json_schema", "json_schema": {"name": "a", "schema": fn["parameters"]}}
    assert parse_chat({**base, "response_format": schema}).prompt_tokens >= plain + 15
    assert parse_chat({**base, "response_format": {"type": "json_object"}}).prompt_tokens == plain
    image = {"type": "image_url", "image_url": {"url": data_url(png(1024, 1024))}}
    with_image = parse_chat({**base, "messages": [{"role": "user", "content": [image]}]})
    assert with_image.estimated_prompt("openai") == with_image.prompt_tokens + 765
    assert with_image.estimated_prompt("anthropic") == with_image.prompt_tokens + 1399


def test_n_and_best_of_multiply_the_output_budget_and_split_the_grant() -> None:
    gpt = spec("gpt", "openai", max_output_tokens=1000)
    chat = parse_chat(
        {"model": "gpt", "messages": [{"role": "user", "content": "x"}], "max_tokens": 50, "n": 4}
    )
    asked = admit_request(chat, [gpt], "k", "r", GOV)
    assert (asked.max_output_tokens, asked.model_max_output_tokens, asked.min_output_tokens) == (
        200,
        4000,
        64,
    )
    assert upstream_body(chat, gpt, 200)["max_tokens"] == 50
    assert upstream_body(chat, gpt, 100)["max_tokens"] == 25  # a smaller grant is shared between the choices
    batch = parse_completion(
        {"model": "gpt", "prompt": ["a", "b", "c"], "max_tokens": 10, "n": 2, "best_of": 3}
    )
    assert admit_request(batch, [gpt], "k", "r", GOV).max_output_tokens == 10 * 3 * 3
    assert parse_completion({"model": "gpt", "prompt": [1, 2, 3], "best_of": 2}).generated == 2


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": "a", "n": 3, "best_of": 2}, "best_of"),
        ({"prompt": "a", "best_of": 3, "stream": True}, "best_of"),
        ({"prompt": "a", "best_of": 21}, "best_of"),
        ({"prompt": "a", "n": True}, "n"),
    ],
)
def test_bad_choice_counts_are_400(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse_completion({"model": "m", **body})
    assert err.value.param == param


def test_one_choice_providers_refuse_n() -> None:
    parsed = parse_chat({"model": "c", "messages": [{"role": "user", "content": "x"}], "n": 2})
    with pytest.raises(InvalidRequest) as err:
        servable(parsed, spec("c", "anthropic"))
    assert (err.value.status, err.value.param, err.value.code) == (400, "n", "unsupported_value")
    assert servable(parsed, spec("g", "openai")).name == "g"


def test_the_chain_is_reserved_at_its_dearest_prices_and_largest_prompt() -> None:
    image = {"type": "image_url", "image_url": {"url": data_url(png(1000, 1000))}}
    parsed = parse_chat({"model": "a", "messages": [{"role": "user", "content": [image]}], "max_tokens": 9})
    cheap = spec("a", "openai", 100_000, 400_000)
    dear = spec("b", "anthropic", 3_000_000, 15_000_000, cache_write_usd_micros_per_mtok=3_750_000)
    asked = admit_request(parsed, [cheap, dear], "k", "r", GOV)
    assert asked.model == "a"
    assert (asked.input_usd_micros_per_mtok, asked.output_usd_micros_per_mtok) == (3_750_000, 15_000_000)
    assert asked.prompt_tokens == parsed.estimated_prompt("anthropic") > parsed.estimated_prompt("openai")


def test_base64_embeddings_are_little_endian_float32() -> None:
    body = {"data": [{"embedding": [0.5, -1.25, 3.0]}, {"embedding": "already"}]}
    out = base64_embeddings(body)
    assert struct.unpack("<3f", base64.b64decode(out["data"][0]["embedding"])) == (0.5, -1.25, 3.0)
    assert out["data"][1]["embedding"] == "already"
    with pytest.raises(InvalidRequest):
        parse_embedding({"model": "e", "input": "x", "encoding_format": "hex"})


def _call(n: int) -> Call:
    parsed = parse_chat(
        {"model": "g", "messages": [{"role": "user", "content": "x"}], "n": n, "stream": True}
    )
    limits = RateLimitState(
        limit_requests=1, remaining_requests=1, reset_requests_s=0, limit_tokens=1, remaining_tokens=1,
        reset_tokens_s=0,
    )  # fmt: skip
    admitted = AdmitResponse(
        reservation_id="r", principal=Principal(user_id="u", org_id="o", key_id="k"), quota_source="personal",
        reserved_tokens=100, granted_output_tokens=90, ratelimit=limits,
    )  # fmt: skip
    return Call(parsed, spec("g", "openai"), admitted, "req", None, 0.0, 0)


def test_a_stream_of_several_choices_sends_every_finish_and_usage_on_the_last() -> None:
    account = StreamAccount(_call(2))

    def finish(i: int) -> StreamChunk:
        return StreamChunk({"id": "c", "choices": [{"index": i, "delta": {}, "finish_reason": "stop"}]})

    assert account.feed(finish(1)) is None
    assert account.feed(finish(0)) is None
    usage = Usage(5, 8)
    out = account.feed(StreamChunk({"id": "c", "choices": [], "usage": usage.openai()}, usage=usage))
    assert out is not None
    events = [e for e in out.split(b"\n\n") if e]
    assert len(events) == 2
    assert b'"index":1' in events[0] and b"usage" not in events[0]
    assert b'"index":0' in events[1] and b'"completion_tokens":8' in events[1]


async def test_the_mock_answers_n_choices_streamed_and_not() -> None:
    mock, gpt = MockProvider(), spec("mock-gpt", "mock")
    body = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 30, "n": 3}
    one = await mock.complete(gpt, {**body, "n": 1})
    three = await mock.complete(gpt, body)
    assert [c["index"] for c in three.body["choices"]] == [0, 1, 2]
    assert three.usage.completion_tokens == 3 * one.usage.completion_tokens
    chunks = [c async for c in mock.stream(gpt, body)]
    finished = [
        c.body["choices"][0]["index"]
        for c in chunks
        if c.body["choices"] and c.body["choices"][0]["finish_reason"]
    ]
    assert finished == [0, 1, 2]
    assert chunks[-1].usage == three.usage
    best = await mock.text_complete(
        gpt, {"model": "m", "prompt": "hi", "max_tokens": 30, "n": 2, "best_of": 4}
    )
    assert len(best.body["choices"]) == 2
    assert best.usage.completion_tokens == 4 * one.usage.completion_tokens


def test_gpt_4o_mini_bills_the_same_tiles_at_its_own_rates() -> None:
    images = (ImagePart((1024, 1024)), ImagePart(None), ImagePart((9000, 9000), "low"))
    assert image_tokens(images, "openai", "gpt-4o") == 765 + 1445 + 85
    assert (
        image_tokens(images, "azure", "gpt-4o-mini-2024-07-18")
        == (2833 + 4 * 5667) + (2833 + 8 * 5667) + 2833
    )
    assert image_tokens((), "openai", "gpt-4o-mini") == 0
