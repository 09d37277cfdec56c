"""Reservations cover the bill: the completion flow against fake providers that report the usage they
would bill, reckoned from the request body they received (tools, schemas, images by their own rule, every
choice), never from the gateway's estimate. Each request's usage and cost stay within what was reserved.
"""

from __future__ import annotations

import base64
import struct
import time
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest

from leaky_common.auth import Principal
from leaky_common.contracts import AdmitRequest, AdmitResponse, RateLimitState
from leaky_common.errors import InvalidRequest
from leaky_common.events import UsageRecorded
from leaky_devinfra.fakes.llm import FakeProvider
from leaky_devinfra.fakes.llm_usage import Reckoner
from lt_gateway.adapters.model_table import ModelTable
from lt_gateway.adapters.providers.http import UpstreamHTTP
from lt_gateway.adapters.providers.registry import build_providers
from lt_gateway.domain.models import ModelSpec
from lt_gateway.domain.requests import PARSERS, GovernanceHeaders, Kind
from lt_gateway.domain.tokens import text_tokens
from lt_gateway.usecases.completion.flow import CompletionFlow, Reply

pytestmark = pytest.mark.integration

KEY_ENV = "LT_TEST_ESTIMATE_KEY"
REMOTE = "https://images.example/wide.png"
WORDS = tuple(f" w{i}" for i in range(12))


def png_url(w: int, h: int) -> str:
    """A data URL of a PNG header of the given size (all any reckoning reads)."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 6, 0, 0, 0)
    chunk = struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + chunk).decode()


def tool(name: str, fields: int) -> dict[str, Any]:
    props = {
        f"field_{i}": {"type": "string", "description": f"the {i}th value of {name}"} for i in range(fields)
    }
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": f"Looks up {name} records by any of their fields.",
            "parameters": {"type": "object", "properties": props, "required": list(props)[:2]},
        },
    }


class GrantingQuota:
    """Grants what is asked for (quota's job is tested elsewhere); keeps each question."""

    def __init__(self) -> None:
        self.requests: list[AdmitRequest] = []
        self.released_later: list[tuple[str, int, int]] = []

    async def admit(self, request: AdmitRequest) -> AdmitResponse:
        self.requests.append(request)
        grant = request.max_output_tokens or request.model_max_output_tokens
        limits = RateLimitState(
            limit_requests=9, remaining_requests=9, reset_requests_s=0, limit_tokens=9, remaining_tokens=9,
            reset_tokens_s=0,
        )  # fmt: skip
        return AdmitResponse(
            reservation_id=f"res_{len(self.requests)}",
            principal=Principal(user_id="u1", org_id="o1", key_id="k1"),
            quota_source="personal",
            reserved_tokens=request.prompt_tokens + grant,
            granted_output_tokens=grant,
            ratelimit=limits,
        )

    async def release(
        self, reservation_id: str, total_tokens: int, cost_usd_micros: int, timeout_s: float
    ) -> bool:
        return True  # the unused part goes back; settlement is quota's (tested there)

    def release_later(self, reservation_id: str, total_tokens: int, cost_usd_micros: int) -> None:
        self.released_later.append((reservation_id, total_tokens, cost_usd_micros))


class Sink:
    def __init__(self) -> None:
        self.events: list[UsageRecorded] = []

    def record(self, event: UsageRecorded) -> None:
        self.events.append(event)


@dataclass
class Rig:
    flow: CompletionFlow
    quota: GrantingQuota
    sink: Sink


def spec(name: str, fake: FakeProvider, inp: int, out: int, **extra: Any) -> ModelSpec:
    return ModelSpec.model_validate({
        "name": name, "provider": fake.kind, "upstream_model": f"up-{name}", "base_url": fake.base_url,
        "api_key_env": KEY_ENV, "input_usd_micros_per_mtok": inp, "output_usd_micros_per_mtok": out,
        "max_output_tokens": 4096, **extra,
    })  # fmt: skip


@pytest.fixture
async def rig(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Rig]:
    monkeypatch.setenv(KEY_ENV, "sk-fake")
    reckoner = Reckoner(count=text_tokens, remote_images={REMOTE: (4000, 1500)})
    fakes = {
        "openai": FakeProvider("openai", words=WORDS, reckoner=reckoner),
        "anthropic": FakeProvider("anthropic", words=WORDS, reckoner=reckoner),
        "down": FakeProvider("openai", fail_next=[503] * 100),
    }
    for fake in fakes.values():
        await fake.start()
    http = UpstreamHTTP(timeout_s=5.0, backoff_s=0.01)
    await http.start()
    models = ModelTable([
        spec("gpt", fakes["openai"], 2_500_000, 10_000_000),
        spec("claude", fakes["anthropic"], 3_000_000, 15_000_000, cache_write_usd_micros_per_mtok=3_750_000),
        # A cheap deployment that is down, falling back to a dearer one with another image rule.
        spec("cheap", fakes["down"], 100_000, 400_000, max_retries=0, fallbacks=["claude"]),
        spec("embed", fakes["openai"], 20_000, 0, mode="embedding"),
    ])  # fmt: skip
    quota, sink = GrantingQuota(), Sink()
    flow = CompletionFlow(models=models, providers=build_providers(http), quota=quota, usage=sink)  # type: ignore[arg-type]
    yield Rig(flow, quota, sink)
    await http.close()
    for fake in fakes.values():
        await fake.close()


async def run(rig: Rig, kind: Kind, body: dict[str, Any]) -> tuple[Reply, list[dict[str, Any]]]:
    """One request through the flow; a stream is read to its end (its chunks are returned)."""
    parsed = PARSERS[kind](body)
    reply = await rig.flow.run(
        parsed,
        rig.flow.resolve(parsed),
        GovernanceHeaders(None, None, None),
        "lt-k",
        "req",
        time.perf_counter(),
    )
    chunks: list[dict[str, Any]] = []
    if reply.stream is not None:
        async for raw in reply.stream:
            for line in raw.split(b"\n\n"):
                if line.startswith(b"data: {"):
                    chunks.append(orjson.loads(line[6:]))
    return reply, chunks


def assert_covered(rig: Rig) -> UsageRecorded:
    """The last request's usage and cost are within its reservation."""
    asked, event = rig.quota.requests[-1], rig.sink.events[-1]
    assert event.status == "ok", event
    grant = asked.max_output_tokens or asked.model_max_output_tokens
    reserved_usd = -(
        -(asked.prompt_tokens * asked.input_usd_micros_per_mtok + grant * asked.output_usd_micros_per_mtok)
        // 1_000_000
    )
    assert event.prompt_tokens <= asked.prompt_tokens
    assert event.completion_tokens <= grant
    assert event.cost_usd_micros <= reserved_usd
    return event


CASES: dict[str, dict[str, Any]] = {
    "tools": {
        "tools": [tool("customers", 12), tool("orders", 20), tool("invoices", 8)],
        "tool_choice": "auto",
    },
    "schema": {
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": tool("answer", 30)["function"]["parameters"]},
        }
    },
    "images": {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "compare these"},
                    {"type": "image_url", "image_url": {"url": png_url(1024, 1024)}},
                    {"type": "image_url", "image_url": {"url": png_url(3000, 900), "detail": "high"}},
                    {"type": "image_url", "image_url": {"url": REMOTE}},
                    {"type": "image_url", "image_url": {"url": png_url(4000, 4000), "detail": "low"}},
                ],
            }
        ]
    },
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("model", ["gpt", "claude", "cheap"])
async def test_each_case_is_billed_within_its_reservation(rig: Rig, case: str, model: str) -> None:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 8,
        **CASES[case],
    }
    reply, _ = await run(rig, "chat", body)
    assert reply.status == 200, reply.body
    event = assert_covered(rig)
    assert event.model == ("claude" if model == "cheap" else model)
    if case != "schema" or model == "gpt":  # Anthropic's translation has no response_format to bill
        assert event.prompt_tokens > 50  # the tools, schema or images were billed


async def test_n_choices_are_answered_in_openai_shape_and_reserved_each(rig: Rig) -> None:
    body = {"model": "gpt", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "n": 3}
    reply, _ = await run(rig, "chat", body)
    assert reply.status == 200
    assert [c["index"] for c in orjson.loads(reply.body)["choices"]] == [0, 1, 2]
    assert rig.quota.requests[-1].max_output_tokens == 3 * 8
    assert assert_covered(rig).completion_tokens == 3 * 8


async def test_n_is_refused_where_the_provider_answers_one_choice(rig: Rig) -> None:
    body = {"model": "claude", "messages": [{"role": "user", "content": "hi"}], "n": 2}
    with pytest.raises(InvalidRequest) as err:
        await run(rig, "chat", body)
    assert (err.value.status, err.value.param) == (400, "n")
    # A chain whose fallback answers one choice does not fall back to it: no overrun, a clear error.
    reply, _ = await run(rig, "chat", {**body, "model": "cheap"})
    assert reply.status == 503
    assert rig.sink.events[-1].cost_usd_micros == 0


async def test_n_streamed_gives_every_choice_and_stays_within_the_reservation(rig: Rig) -> None:
    body = {
        "model": "gpt",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 5,
        "n": 2,
        "stream": True,
    }
    reply, chunks = await run(rig, "chat", body)
    assert reply.status == 200
    finishes = [c["index"] for chunk in chunks for c in chunk.get("choices") or () if c.get("finish_reason")]
    assert sorted(finishes) == [0, 1]
    assert chunks[-1]["usage"]["completion_tokens"] == 10
    assert assert_covered(rig).completion_tokens == 10


async def test_best_of_and_batched_prompts_are_reserved_for_every_generated_choice(rig: Rig) -> None:
    body = {"model": "gpt", "prompt": ["one", "two"], "max_tokens": 4, "n": 2, "best_of": 3}
    reply, _ = await run(rig, "completion", body)
    assert reply.status == 200
    assert rig.quota.requests[-1].max_output_tokens == 4 * 3 * 2
    assert assert_covered(rig).completion_tokens == 4 * 3 * 2


async def test_fallback_is_reserved_at_the_dearest_deployment_of_the_chain(rig: Rig) -> None:
    body = {"model": "cheap", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}
    await run(rig, "chat", body)
    asked = rig.quota.requests[-1]
    assert (asked.input_usd_micros_per_mtok, asked.output_usd_micros_per_mtok) == (3_750_000, 15_000_000)
    assert assert_covered(rig).cost_usd_micros > 0


async def test_base64_embeddings_come_back_as_little_endian_float32(rig: Rig) -> None:
    body = {"model": "embed", "input": ["a", "b"], "encoding_format": "base64"}
    reply, _ = await run(rig, "embedding", body)
    assert reply.status == 200, reply.body
    data = orjson.loads(reply.body)["data"]
    vectors = [struct.unpack("<3f", base64.b64decode(d["embedding"])) for d in data]
    assert vectors == [struct.unpack("<3f", struct.pack("<3f", 0.1, 0.2, 0.3))] * 2
    plain, _ = await run(rig, "embedding", {**body, "encoding_format": "float"})
    assert orjson.loads(plain.body)["data"][0]["embedding"] == [0.1, 0.2, 0.3]
