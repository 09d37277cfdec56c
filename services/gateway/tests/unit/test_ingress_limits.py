"""The gateway's ingress layers: per-address limits (429 with Retry-After), security headers, CORS only when
configured, the body limit while reading and the JSON nesting limit, and the key check before the body."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from leaky_common.auth import Principal
from leaky_common.errors import ServiceError, error_response
from leaky_common.guard import RequestGuard, json_depth_exceeds, nesting_exceeds
from lt_gateway.adapters.quota_client import Denial
from lt_gateway.api.limits import ClientLimits, is_management
from lt_gateway.domain.ratelimit import AddressBuckets
from lt_gateway.main import create_app
from lt_gateway.settings import GatewaySettings
from lt_gateway.usecases.completion.keycheck import KeyCheck


def test_buckets_refill_and_say_how_long_to_wait() -> None:
    buckets = AddressBuckets(rate_per_min=2)
    assert buckets.take("a", 0.0) is None
    assert buckets.take("a", 0.0) is None
    assert buckets.take("a", 0.0) == 30  # one token a 30 s
    assert buckets.take("b", 0.0) is None  # per address
    assert buckets.take("a", 30.0) is None
    assert AddressBuckets(0).take("a", 0.0) is None  # 0: off


def _echo_app(*, management_rate_per_min: int, unauthenticated_rate_per_min: int) -> TestClient:
    async def echo(request: Request) -> JSONResponse:
        status = 401 if request.headers.get("authorization") != "Bearer ok" else 200
        return JSONResponse({"body": len(await request.body())}, status_code=status)

    async def service_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ServiceError)
        return error_response(exc.status, exc.body(), exc.headers)

    app = Starlette(
        routes=[Route("/{path:path}", echo, methods=["GET", "POST"])],
        exception_handlers={ServiceError: service_error},
    )  # as install_error_handlers does for every service
    limits = ClientLimits(
        app,
        management_rate_per_min=management_rate_per_min,
        unauthenticated_rate_per_min=unauthenticated_rate_per_min,
    )
    guarded = RequestGuard(limits, max_body_bytes=1024, max_json_depth=4)
    return TestClient(guarded)


def test_failed_authentications_from_an_address_are_429_with_retry_after() -> None:
    client = _echo_app(management_rate_per_min=0, unauthenticated_rate_per_min=3)
    assert [client.get("/v1/models").status_code for _ in range(3)] == [401, 401, 401]
    refused = client.get("/v1/models", headers={"authorization": "Bearer ok"})
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"]["code"] == "client_rate_limited"
    assert client.get("/health").status_code == 401  # ops routes are never limited (the echo says 401)


def test_management_routes_are_limited_per_address_governed_ones_are_not() -> None:
    client = _echo_app(management_rate_per_min=2, unauthenticated_rate_per_min=0)
    ok = {"authorization": "Bearer ok"}
    assert [client.get("/v1/admin/users", headers=ok).status_code for _ in range(3)] == [200, 200, 429]
    assert client.post("/v1/chat/completions", headers=ok, json={}).status_code == 200
    assert is_management("/api/v1/tokens/quota") and is_management("/v1/users/me")
    assert not is_management("/v1/models/mock-gpt") and not is_management("/v1/embeddings")


def test_every_answer_carries_the_security_headers() -> None:
    response = _echo_app(management_rate_per_min=0, unauthenticated_rate_per_min=0).get("/x")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["content-security-policy"] == "frame-ancestors 'none'"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cache-control"] == "no-store"


def test_bodies_over_the_limit_and_json_too_deep_are_refused_before_the_app() -> None:
    client = _echo_app(management_rate_per_min=0, unauthenticated_rate_per_min=0)
    ok = {"authorization": "Bearer ok"}
    too_big = client.post("/x", headers=ok, content=b"x" * 2000)
    assert (too_big.status_code, too_big.json()["error"]["code"]) == (413, "payload_too_large")

    def chunks() -> Any:
        for _ in range(10):
            yield b"y" * 200  # no Content-Length: counted while reading

    streamed = client.post("/x", headers=ok, content=chunks())
    assert streamed.status_code == 413
    deep = client.post("/x", headers={**ok, "content-type": "application/json"}, content=b"[[[[[1]]]]]")
    assert (deep.status_code, deep.json()["error"]["code"]) == (400, "json_too_deep")
    shallow = client.post(
        "/x", headers={**ok, "content-type": "application/json"}, content=b'{"a": "[[[[[[["}'
    )
    assert shallow.status_code == 200
    nul = client.post("/x", headers={**ok, "content-type": "application/json"}, content=b'{"a": "x\\u0000"}')
    assert (nul.status_code, nul.json()["error"]["code"]) == (400, "invalid_characters")
    assert client.get("/x?owner_type=%00", headers=ok).status_code == 400


def test_nesting_is_measured_without_recursion() -> None:
    deep: Any = 1
    for _ in range(100_000):
        deep = [deep]
    assert nesting_exceeds(deep, 32) and not nesting_exceeds({"a": [{"b": 1}]}, 3)
    assert json_depth_exceeds(b"[" * 2000 + b"]" * 2000, 32)


def test_cors_is_off_by_default_and_on_only_for_configured_origins() -> None:
    preflight = {"origin": "https://app.example", "access-control-request-method": "POST"}
    off = TestClient(create_app(GatewaySettings(_env_file=None)))
    assert "access-control-allow-origin" not in off.options("/v1/chat/completions", headers=preflight).headers
    on = TestClient(create_app(GatewaySettings(_env_file=None, cors_allow_origins=["https://app.example"])))
    answer = on.options("/v1/chat/completions", headers=preflight)
    assert answer.headers["access-control-allow-origin"] == "https://app.example"
    other = on.options("/v1/chat/completions", headers={**preflight, "origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


class _Quota:
    def __init__(self, accept: bool) -> None:
        self.accept = accept
        self.calls = 0

    async def authenticate(self, api_key: str) -> Principal | Denial:
        self.calls += 1
        if self.accept:
            return Principal(user_id="u", org_id="o")
        return Denial(
            401, b'{"error": {"message": "invalid API key", "type": "t", "code": "invalid_api_key"}}', {}
        )


async def test_key_check_remembers_accepted_keys_and_raises_refusals() -> None:
    quota = _Quota(accept=True)
    check = KeyCheck(quota, ttl_s=30)  # type: ignore[arg-type]
    await check.require("lt-a")
    await check.require("lt-a")
    assert quota.calls == 1
    quota.accept = False
    await check.require("lt-a")  # still remembered: quota's admission refuses it anyway
    with pytest.raises(Exception) as err:
        await check.require("lt-b")
    assert (getattr(err.value, "status", None), getattr(err.value, "code", None)) == (401, "invalid_api_key")
