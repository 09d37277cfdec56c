"""The gateway with real providers' wire formats, driven by unmodified clients (OpenAI SDK sync, async and
streaming; LangChain's ChatOpenAI): a stack of its own whose routing file points at fake provider servers
running in this test process. Usage, cost and settlement are checked to the token and the micro-dollar."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from langchain_openai import ChatOpenAI
from openai import AsyncOpenAI, OpenAI

from leaky_devinfra.fakes.llm import FakeKind, FakeProvider, FakeUsage
from leaky_devinfra.infra import free_port, pid_alive
from leaky_devinfra.testing import eventually
from lt_gateway.domain.tokens import estimate_prompt_tokens, text_tokens

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
KEY_ENV = "LT_E2E_FAKE_PROVIDER_KEY"
# Anthropic-like prices in micro-dollars per million tokens.
PRICES = {
    "input_usd_micros_per_mtok": 3_000_000,
    "output_usd_micros_per_mtok": 15_000_000,
    "cached_input_usd_micros_per_mtok": 300_000,
    "cache_write_usd_micros_per_mtok": 3_750_000,
}
PROVIDER_MODELS: dict[str, FakeKind] = {
    "fake-openai": "openai",
    "fake-azure": "azure",
    "fake-anthropic": "anthropic",
    "fake-gemini": "gemini",
    "fake-qwen": "qwen",
    "fake-vllm": "openai_compatible",
}
HOLD_AFTER = 3


@dataclass
class ProviderStack:
    gateway_url: str
    admin_key: str
    fakes: dict[str, FakeProvider]


def expected_cost(u: FakeUsage) -> int:
    fresh = u.prompt - u.cached - u.cache_write
    numerator = fresh * 3_000_000 + u.cached * 300_000 + u.cache_write * 3_750_000 + u.completion * 15_000_000
    return -(-numerator // 1_000_000)


def usage_for(kind: FakeKind) -> FakeUsage:
    return FakeUsage(prompt=321, completion=6, cached=64, cache_write=32 if kind == "anthropic" else 0)


def route(name: str, kind: str, fake: FakeProvider | None, **extra: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": name,
        "provider": kind,
        "upstream_model": f"upstream-{name}",
        "base_url": fake.base_url if fake else f"http://127.0.0.1:{free_port()}/v1",
        "api_key_env": KEY_ENV,
        **PRICES,
        **extra,
    }
    if kind == "azure":
        entry["api_version"] = "2024-10-21"
    return entry


@pytest.fixture(scope="module")
async def pstack() -> AsyncIterator[ProviderStack]:
    fakes: dict[str, FakeProvider] = {
        name: FakeProvider(kind, usage=usage_for(kind), stream_usage=kind != "openai_compatible")
        for name, kind in PROVIDER_MODELS.items()
    }
    fakes["flaky"] = FakeProvider("openai", fail_next=[503] * 1000)
    fakes["broken"] = FakeProvider("openai", fail_next=[500] * 1000)
    fakes["slow"] = FakeProvider("openai", delay_s=5.0)
    fakes["hold"] = FakeProvider("openai", words=tuple(f" w{i}" for i in range(40)), hold_after=HOLD_AFTER)
    fakes["hold-claude"] = FakeProvider(
        "anthropic",
        words=tuple(f" w{i}" for i in range(40)),
        hold_after=HOLD_AFTER,
        usage=FakeUsage(prompt=77),
    )
    for fake in fakes.values():
        await fake.start()
    routes = [route(name, PROVIDER_MODELS[name], fakes[name]) for name in PROVIDER_MODELS]
    routes += [
        route("flaky-gpt", "openai", fakes["flaky"], max_retries=0, fallbacks=["fake-openai"]),
        route("broken-gpt", "openai", fakes["broken"], max_retries=1),
        route("slow-gpt", "openai", fakes["slow"], max_retries=0, timeout_s=0.5),
        route("down-gpt", "openai", None, max_retries=0),
        route("hold-gpt", "openai", fakes["hold"]),
        route("hold-claude", "anthropic", fakes["hold-claude"]),
    ]
    run_dir = Path(tempfile.mkdtemp(prefix="lt-e2e-providers-"))
    models_file = run_dir / "models.json"
    models_file.write_text(json.dumps(routes))
    env = {
        **os.environ,
        "LT_MODELS_FILE": str(models_file),
        KEY_ENV: "sk-fake",
        "LT_UPSTREAM_RETRY_BACKOFF_S": "0.01",
    }
    script = ROOT / "deploy" / "local" / "stack.py"
    # The stack runs in a thread so this loop keeps serving the fake providers meanwhile.
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(script), "up", "--run-dir", str(run_dir), "--ports", "auto"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    try:
        if result.returncode != 0:
            pytest.fail(f"stack did not start:\n{result.stdout}\n{result.stderr}")
        stack_env = dict(
            line.split("=", 1) for line in (run_dir / "stack.env").read_text().splitlines() if line
        )
        yield ProviderStack(stack_env["LT_GATEWAY_URL"], stack_env["LT_ADMIN_KEY"], fakes)
    finally:
        pids = (
            json.loads((run_dir / "stack.json").read_text())["pids"]
            if (run_dir / "stack.json").exists()
            else {}
        )
        await asyncio.to_thread(
            subprocess.run,
            [sys.executable, str(script), "down", "--run-dir", str(run_dir)],
            check=False,
            capture_output=True,
        )
        for fake in fakes.values():
            await fake.close()
        left = {name: pid for name, pid in pids.items() if pid_alive(int(pid))}
        assert not left, f"`stack.py down` left processes running: {left}"


async def new_user(stack: ProviderStack, quota: int = 1_000_000) -> str:
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as http:
        resp = await http.post(
            "/v1/admin/users",
            headers={"Authorization": f"Bearer {stack.admin_key}"},
            json={"email": f"sdk-{uuid.uuid4().hex[:8]}@example.com", "name": "SDK", "personal_quota": quota},
        )
        assert resp.status_code == 201, resp.text
        return str(resp.json()["api_key"])


async def personal_pool(stack: ProviderStack, key: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as http:
        resp = await http.get("/v1/users/me/quota", headers={"Authorization": f"Bearer {key}"})
        assert resp.status_code == 200, resp.text
        return dict(resp.json()["pools"][0])


async def settled_to(stack: ProviderStack, key: str, used: int) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        pool = await personal_pool(stack, key)
        return pool if pool["used"] == used and pool["reserved"] == 0 else None

    return dict(await eventually(check, 30, f"pool settled at {used} tokens"))


MESSAGES: list[Any] = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello"}]


@pytest.mark.parametrize("model", list(PROVIDER_MODELS))
async def test_each_provider_streamed_and_not_with_exact_usage_cost_and_settlement(
    pstack: ProviderStack, model: str
) -> None:
    key = await new_user(pstack)
    fake = pstack.fakes[model]
    u = fake.usage
    async with AsyncOpenAI(base_url=f"{pstack.gateway_url}/v1", api_key=key, max_retries=0) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model=model, messages=MESSAGES, max_tokens=100
        )
        done = raw.parse()
        assert done.model == model
        assert done.choices[0].message.content == fake.text
        assert done.usage is not None
        assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (u.prompt, u.completion)
        extra = done.model_extra or {}
        assert extra["leaky_tokens"]["cost_usd_micros"] == expected_cost(u)
        assert raw.headers["x-leaky-tokens-cost-usd"] == extra["leaky_tokens"]["cost_usd"]
        spent = u.prompt + u.completion

        stream = await client.chat.completions.create(
            model=model,
            messages=MESSAGES,
            max_tokens=100,
            stream=True,
            stream_options={"include_usage": True},
        )
        parts, last = [], None
        async for chunk in stream:
            if chunk.choices:
                parts.append(chunk.choices[0].delta.content or "")
            last = chunk
        assert "".join(parts) == fake.text
        assert last is not None and last.usage is not None
        if fake.stream_usage:
            assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (u.prompt, u.completion)
            assert (last.model_extra or {})["leaky_tokens"]["cost_usd_micros"] == expected_cost(u)
        else:
            # The upstream ignored stream_options: the gateway counts what it streamed.
            counted = sum(text_tokens(w) for w in fake.words)
            assert last.usage.completion_tokens == counted
            assert last.usage.prompt_tokens == estimate_prompt_tokens(MESSAGES)
        spent += last.usage.total_tokens
    # The ledger equals the provider-reported (or counted) usage, to the token.
    await settled_to(pstack, key, spent)


async def test_openai_sdk_sync_async_streaming_and_endpoints(pstack: ProviderStack) -> None:
    key = await new_user(pstack)
    base = f"{pstack.gateway_url}/v1"

    def sync_calls() -> None:
        with OpenAI(base_url=base, api_key=key, max_retries=0) as client:
            ids = {m.id for m in client.models.list()}
            assert {"mock-gpt", "mock-embedding", *PROVIDER_MODELS} <= ids
            assert client.models.retrieve("fake-anthropic").owned_by == "anthropic"
            done = client.chat.completions.create(model="fake-anthropic", messages=MESSAGES, max_tokens=20)
            assert done.choices[0].message.content == pstack.fakes["fake-anthropic"].text
            text = "".join(
                c.choices[0].delta.content or ""
                for c in client.chat.completions.create(model="fake-gemini", messages=MESSAGES, stream=True)
                if c.choices
            )
            assert text == pstack.fakes["fake-gemini"].text
            legacy = client.completions.create(model="fake-openai", prompt="hi", max_tokens=5)
            assert legacy.choices[0].text == pstack.fakes["fake-openai"].text
            pieces = list(
                client.completions.create(
                    model="fake-openai", prompt="hi", stream=True, stream_options={"include_usage": True}
                )
            )
            assert "".join(p.choices[0].text for p in pieces if p.choices) == pstack.fakes["fake-openai"].text
            assert pieces[-1].usage is not None and pieces[-1].usage.completion_tokens == 6
            emb = client.embeddings.create(model="mock-embedding", input=["a", "b"])
            assert len(emb.data) == 2 and emb.usage.prompt_tokens == 2

    await asyncio.to_thread(sync_calls)

    async with AsyncOpenAI(base_url=base, api_key=key, max_retries=0) as client:
        done = await client.chat.completions.create(model="mock-gpt", messages=MESSAGES, max_tokens=20)
        assert done.choices[0].message.content
        stream = await client.chat.completions.create(model="fake-qwen", messages=MESSAGES, stream=True)
        chunks = [c async for c in stream]
        # Without include_usage the last chunk still carries usage and cost (the finish chunk).
        assert chunks[-1].choices[0].finish_reason == "stop"
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6


async def test_langchain_chat_openai_unmodified(pstack: ProviderStack) -> None:
    key = await new_user(pstack)
    llm = ChatOpenAI(
        model="fake-anthropic",
        base_url=f"{pstack.gateway_url}/v1",
        api_key=key,
        max_retries=0,
        stream_usage=True,
    )
    text = pstack.fakes["fake-anthropic"].text
    u = pstack.fakes["fake-anthropic"].usage
    msg = await llm.ainvoke("hello")
    assert msg.content == text
    assert msg.usage_metadata is not None
    assert (msg.usage_metadata["input_tokens"], msg.usage_metadata["output_tokens"]) == (
        u.prompt,
        u.completion,
    )
    pieces = [c async for c in llm.astream("hello")]
    assert "".join(str(p.content) for p in pieces) == text
    total = pieces[0]
    for p in pieces[1:]:
        total = total + p
    assert total.usage_metadata is not None and total.usage_metadata["output_tokens"] == u.completion
    sync_msg = await asyncio.to_thread(llm.invoke, "hello")
    assert sync_msg.content == text
    with pytest.raises(openai.NotFoundError):
        await ChatOpenAI(
            model="nope", base_url=f"{pstack.gateway_url}/v1", api_key=key, max_retries=0
        ).ainvoke("x")


async def test_every_error_is_the_right_sdk_exception(pstack: ProviderStack) -> None:
    key = await new_user(pstack)
    poor = await new_user(pstack, quota=5)
    base = f"{pstack.gateway_url}/v1"
    hi: Any = [{"role": "user", "content": "hi"}]
    async with (
        AsyncOpenAI(base_url=base, api_key=key, max_retries=0) as client,
        AsyncOpenAI(base_url=base, api_key="lt-wrong", max_retries=0) as stranger,
        AsyncOpenAI(base_url=base, api_key=poor, max_retries=0) as broke,
    ):
        with pytest.raises(openai.BadRequestError) as bad:
            await client.chat.completions.create(model="mock-gpt", messages=[])
        assert bad.value.code == "missing_required_parameter" and bad.value.param == "messages"
        with pytest.raises(openai.BadRequestError):
            await client.chat.completions.create(model="mock-gpt", messages=hi, temperature=7)
        with pytest.raises(openai.BadRequestError):
            await client.embeddings.create(model="mock-gpt", input="x")
        with pytest.raises(openai.AuthenticationError):
            await stranger.chat.completions.create(model="mock-gpt", messages=hi)
        with pytest.raises(openai.NotFoundError):
            await client.chat.completions.create(model="no-such-model", messages=hi)
        with pytest.raises(openai.APIStatusError) as poor_err:
            await broke.chat.completions.create(model="mock-gpt", messages=hi, max_tokens=500)
        assert poor_err.value.status_code == 402
        with pytest.raises(openai.APIStatusError) as too_big:
            await client.chat.completions.create(
                model="mock-gpt", messages=[{"role": "user", "content": "x" * 5_000_000}]
            )
        assert too_big.value.status_code == 413
        for model, status, code in (
            ("broken-gpt", 502, "upstream_error"),
            ("down-gpt", 503, "upstream_unavailable"),
            ("slow-gpt", 504, "upstream_timeout"),
        ):
            with pytest.raises(openai.InternalServerError) as upstream:
                await client.chat.completions.create(model=model, messages=hi)
            assert (upstream.value.status_code, upstream.value.code) == (status, code)
            with pytest.raises(openai.InternalServerError) as streamed:
                await client.chat.completions.create(model=model, messages=hi, stream=True)
            assert streamed.value.status_code == status
    # Failed upstream calls are free: only the 402 denial and the errors left nothing charged.
    await settled_to(pstack, key, 0)


async def test_failing_deployment_falls_back(pstack: ProviderStack) -> None:
    key = await new_user(pstack)
    before = len(pstack.fakes["flaky"].requests)
    async with AsyncOpenAI(base_url=f"{pstack.gateway_url}/v1", api_key=key, max_retries=0) as client:
        done = await client.chat.completions.create(model="flaky-gpt", messages=MESSAGES)
    assert done.model == "flaky-gpt"
    assert done.choices[0].message.content == pstack.fakes["fake-openai"].text
    assert len(pstack.fakes["flaky"].requests) == before + 1


@pytest.mark.parametrize(("model", "fake_name"), [("hold-gpt", "hold"), ("hold-claude", "hold-claude")])
async def test_client_disconnect_mid_stream_is_charged_for_what_was_generated(
    pstack: ProviderStack, model: str, fake_name: str
) -> None:
    key = await new_user(pstack)
    fake = pstack.fakes[fake_name]
    fake.stream_closed_early.clear()
    body = {"model": model, "messages": MESSAGES, "stream": True, "max_tokens": 100}
    received: list[str] = []
    async with (
        httpx.AsyncClient(timeout=30) as http,
        http.stream(
            "POST",
            f"{pstack.gateway_url}/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {key}"},
        ) as resp,
    ):
        assert resp.status_code == 200
        async for line in resp.aiter_lines():
            if line.startswith("data: {"):
                delta = json.loads(line[6:])["choices"][0]["delta"]
                if delta.get("content"):
                    received.append(delta["content"])
            if len(received) == HOLD_AFTER:
                break  # leaving the block closes the connection mid-stream
    assert received == list(fake.words[:HOLD_AFTER])
    # The gateway cancelled the upstream request...
    await eventually(fake.stream_closed_early.is_set, 15, "upstream connection closed by the gateway")
    # ...and settled exactly the prompt plus the N chunks generated: never free, never the whole reservation.
    generated = sum(text_tokens(w) for w in fake.words[:HOLD_AFTER])
    # Anthropic reports the prompt tokens up front (message_start); otherwise the gateway's estimate counts.
    prompt = fake.usage.prompt if fake.kind == "anthropic" else estimate_prompt_tokens(MESSAGES)
    await settled_to(pstack, key, prompt + generated)
