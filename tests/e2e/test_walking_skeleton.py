"""The whole product path through the public gateway, driven with the official OpenAI SDK."""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import openai
import pytest
from aiohttp import web
from openai import AsyncOpenAI, OpenAI

from leaky_devinfra.testing import eventually

pytestmark = pytest.mark.e2e


async def create_user(admin: httpx.AsyncClient, quota: int) -> dict[str, Any]:
    resp = await admin.post(
        "/v1/admin/users",
        json={
            "email": f"e2e-{uuid.uuid4().hex[:8]}@example.com",
            "name": "E2E User",
            "personal_quota": quota,
        },
    )
    assert resp.status_code == 201, resp.text
    body: dict[str, Any] = resp.json()
    assert body["api_key"]
    return body


def user_http(stack_url: str, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=stack_url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


async def test_full_flow_chat_usage_exhaust_purchase_and_webhook(
    stack: Any, admin: httpx.AsyncClient, fakes_port: int
) -> None:
    # A local webhook receiver stands in for the customer's endpoint, on the one port the stack's outbound
    # guard allows (every other loopback address stays refused).
    received: list[dict[str, Any]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(json.loads(await request.read()))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    runner_cleanup: list[Callable[[], Awaitable[None]]] = [runner.cleanup]
    port = fakes_port
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        resp = await admin.post(
            "/v1/admin/notifications/webhooks",
            json={"url": f"http://127.0.0.1:{port}/hook", "event_types": ["PurchaseCompleted.v1"]},
        )
        assert resp.status_code == 201, resp.text

        user = await create_user(admin, quota=300)
        client = AsyncOpenAI(base_url=f"{stack.gateway_url}/v1", api_key=user["api_key"], max_retries=0)
        runner_cleanup.append(client.close)

        # Plain chat.
        completion = await client.chat.completions.create(
            model="mock-gpt", messages=[{"role": "user", "content": "hello gateway"}], max_tokens=40
        )
        assert completion.choices[0].message.content
        assert completion.usage is not None
        spent = completion.usage.total_tokens
        assert spent == completion.usage.prompt_tokens + completion.usage.completion_tokens

        # Streamed chat with usage in the final chunk.
        stream = await client.chat.completions.create(
            model="mock-gpt",
            messages=[{"role": "user", "content": "stream please"}],
            max_tokens=40,
            stream=True,
            stream_options={"include_usage": True},
        )
        parts: list[str] = []
        usage = None
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
            if chunk.usage is not None:
                usage = chunk.usage
        assert "".join(parts)
        assert usage is not None and usage.completion_tokens > 0
        spent += usage.total_tokens

        async with user_http(stack.gateway_url, user["api_key"]) as me:
            # Settlement is asynchronous (UsageRecorded over Kafka); used must equal provider-reported usage.
            async def settled() -> dict[str, Any] | None:
                q = (await me.get("/v1/users/me/quota")).json()
                personal = q["pools"][0]
                return q if personal["used"] == spent and personal["reserved"] == 0 else None

            quota = await eventually(settled)
            assert quota["pools"][0]["limit"] == 300
            assert quota["pools"][0]["remaining"] == 300 - spent

            async def analysed() -> dict[str, Any] | None:
                u = (await me.get("/v1/analytics/usage", params={"days": 1})).json()
                return u if u.get("total_requests") == 2 and u.get("total_tokens") == spent else None

            analytics = await eventually(analysed)
            assert analytics["by_model"][0]["model"] == "mock-gpt"

            # Exhaust the pool: the SDK raises on 402 with an OpenAI-shaped insufficient_quota error.
            with pytest.raises(openai.APIStatusError) as denied:
                for i in range(50):  # each prompt its own: four identical ones in a row are a loop (a freeze)
                    prompt = f"request {i}: " + "more " * 20
                    await client.chat.completions.create(
                        model="mock-gpt", messages=[{"role": "user", "content": prompt}], max_tokens=64
                    )
            assert denied.value.status_code == 402
            error = denied.value.body
            assert isinstance(error, dict)
            assert error["type"] == "insufficient_quota"
            assert "approval" in error

            # Buy tokens through the saga; the limit rises by exactly the amount bought.
            before = await eventually(lambda: _settled_quota(me))
            key = uuid.uuid4().hex
            resp = await me.post("/v1/purchases", json={"tokens": 1000}, headers={"Idempotency-Key": key})
            assert resp.status_code == 202, resp.text
            purchase_id = resp.json()["id"]
            again = await me.post("/v1/purchases", json={"tokens": 1000}, headers={"Idempotency-Key": key})
            assert again.json()["id"] == purchase_id

            async def completed() -> dict[str, Any] | None:
                p = (await me.get(f"/v1/purchases/{purchase_id}")).json()
                assert p["status"] not in ("FAILED", "COMPENSATED"), p
                return p if p["status"] == "COMPLETED" else None

            purchase = await eventually(completed)
            assert purchase["steps"]

            after = await eventually(lambda: _limit_at_least(me, before["pools"][0]["limit"] + 1000))
            assert after["pools"][0]["limit"] == before["pools"][0]["limit"] + 1000

            # Chat works again.
            ok = await client.chat.completions.create(
                model="mock-gpt", messages=[{"role": "user", "content": "back in business"}], max_tokens=20
            )
            assert ok.choices[0].message.content

        # The purchase reached the webhook.
        delivered = await eventually(
            lambda: _async_value([r for r in received if r.get("data", {}).get("purchase_id") == purchase_id])
        )
        assert delivered[0]["type"] == "PurchaseCompleted.v1"
        assert delivered[0]["data"]["amount"] == 1000
    finally:
        for close in reversed(runner_cleanup):
            await close()


async def _async_value(value: Any) -> Any:
    return value


async def _settled_quota(me: httpx.AsyncClient) -> dict[str, Any] | None:
    q = (await me.get("/v1/users/me/quota")).json()
    return q if q["pools"][0]["reserved"] == 0 else None


async def _limit_at_least(me: httpx.AsyncClient, limit: int) -> dict[str, Any] | None:
    q = (await me.get("/v1/users/me/quota")).json()
    return q if q["pools"][0]["limit"] >= limit else None


def test_sync_sdk_models_and_errors(stack: Any) -> None:
    with (
        OpenAI(base_url=f"{stack.gateway_url}/v1", api_key=stack.admin_key, max_retries=0) as admin,
        OpenAI(base_url=f"{stack.gateway_url}/v1", api_key="lt-not-a-real-key", max_retries=0) as bad,
    ):
        _sync_sdk_checks(admin, bad)


def _sync_sdk_checks(admin: OpenAI, bad: OpenAI) -> None:
    models = [m.id for m in admin.models.list()]
    assert "mock-gpt" in models

    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="mock-gpt", messages=[{"role": "user", "content": "hi"}])

    with pytest.raises(openai.NotFoundError):
        admin.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])

    with pytest.raises(openai.BadRequestError):
        admin.chat.completions.create(model="mock-gpt", messages=[])

    raw = admin.chat.completions.with_raw_response.create(
        model="mock-gpt", messages=[{"role": "user", "content": "headers?"}], max_tokens=10
    )
    assert raw.headers["x-request-id"]
    assert int(raw.headers["x-ratelimit-limit-requests"]) > 0
    assert raw.headers["x-leaky-tokens-quota-source"] == "personal"
    assert raw.headers["x-leaky-tokens-cost-usd"].startswith("0.")
    assert raw.parse().choices[0].message.content


async def test_user_cannot_use_admin_routes_or_see_others(stack: Any, admin: httpx.AsyncClient) -> None:
    a = await create_user(admin, quota=1000)
    b = await create_user(admin, quota=1000)
    async with user_http(stack.gateway_url, a["api_key"]) as ua:
        denied = await ua.post("/v1/admin/users", json={"email": "x@example.com", "name": "x"})
        assert denied.status_code == 403
        assert denied.json()["error"]["type"] == "permission_error"
        me = (await ua.get("/v1/users/me")).json()
        assert me["id"] == a["id"] and me["id"] != b["id"]
    async with httpx.AsyncClient(base_url=stack.gateway_url) as anon:
        resp = await anon.get("/v1/users/me")
        assert resp.status_code == 401
        assert resp.json()["error"]["type"] == "authentication_error"
