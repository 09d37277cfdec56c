"""A client near the end of its budget sends its next request the moment it has the previous answer (no
max_tokens, so each request reserves everything left): never refused for tokens it did not use, and charged
exactly what the provider reported."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import orjson
import pytest

from leaky_devinfra.testing import eventually

pytestmark = pytest.mark.e2e

POOL = 3000


async def _streamed(client: httpx.AsyncClient, body: dict[str, Any]) -> int:
    """Read a stream to its end; the total tokens its last event reported."""
    total = 0
    async with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
        assert r.status_code == 200, await r.aread()
        async for line in r.aiter_lines():
            if line.startswith("data: {"):
                usage = orjson.loads(line[6:]).get("usage")
                total = usage["total_tokens"] if usage else total
    return total


async def test_back_to_back_requests_without_max_tokens_are_never_refused(
    stack: Any, admin: httpx.AsyncClient
) -> None:
    email = f"b2b-{uuid.uuid4().hex[:8]}@example.com"
    r = await admin.post("/v1/admin/users", json={"email": email, "name": "Agent", "personal_quota": POOL})
    assert r.status_code == 201, r.text
    key = r.json()["api_key"]
    async with httpx.AsyncClient(
        base_url=stack.gateway_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    ) as client:
        spent = 0
        for i in range(24):
            body = {"model": "mock-gpt", "messages": [{"role": "user", "content": f"step {i} of the plan"}]}
            if i % 2:
                spent += await _streamed(client, body)
            else:
                r = await client.post("/v1/chat/completions", json=body)
                assert r.status_code == 200, (i, spent, r.text)
                spent += r.json()["usage"]["total_tokens"]
        assert 0 < spent < POOL

        async def settled() -> dict[str, Any] | None:
            quota = (await client.get("/v1/users/me/quota")).json()
            return quota if quota["used_tokens"] == spent and quota["reserved_tokens"] == 0 else None

        quota = await eventually(settled, what="every answer settled at what the provider reported")
        assert quota["available_quota"] == POOL - spent
