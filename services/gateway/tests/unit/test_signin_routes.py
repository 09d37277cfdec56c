"""The gateway's sign-in routes: the body is checked here (400 before quota is asked), the client's address is
added for quota's attempt counters, quota's answer (status, body, Retry-After) is passed on and never cached;
an access token on a governed endpoint is refused before anything else happens."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from lt_gateway.main import create_app
from lt_gateway.settings import GatewaySettings

PAIR = {"access_token": "eyJ.a.b", "token_type": "bearer", "expires_in": 900, "refresh_token": "lt_rt_x"}


class SignInQuota:
    """Quota's `/internal/auth/*` as the gateway's client sees it: records each call, answers what it is told."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.answer: tuple[int, bytes, dict[str, str]] = (200, json.dumps(PAIR).encode(), {})

    async def sign_in(self, path: str, payload: bytes) -> tuple[int, bytes, dict[str, str]]:
        self.calls.append((path, json.loads(payload) if payload else {}))
        return self.answer


@pytest.fixture
def quota() -> SignInQuota:
    return SignInQuota()


@pytest.fixture
def client(quota: SignInQuota) -> TestClient:
    app = create_app(GatewaySettings(_env_file=None))
    app.state.quota = quota
    return TestClient(app)  # no `with`: no lifespan, no connections


def test_login_adds_the_address_and_is_never_cached(client: TestClient, quota: SignInQuota) -> None:
    r = client.post("/v1/auth/login", json={"email": "a@example.com", "password": "pw"})
    assert r.status_code == 200 and r.json() == PAIR
    assert r.headers["cache-control"] == "no-store"
    assert quota.calls == [
        ("/internal/auth/login", {"email": "a@example.com", "password": "pw", "client_address": "testclient"})
    ]


def test_quotas_refusals_pass_through_with_retry_after(client: TestClient, quota: SignInQuota) -> None:
    body = {"error": {"message": "too many", "type": "rate_limit_error", "code": "too_many_login_attempts"}}
    quota.answer = (429, json.dumps(body).encode(), {"retry-after": "120"})
    r = client.post("/v1/auth/login", json={"email": "a@example.com", "password": "pw"})
    assert r.status_code == 429 and r.headers["retry-after"] == "120" and r.json() == body


@pytest.mark.parametrize(
    "body",
    [{}, {"email": "a@example.com"}, {"email": "a@example.com", "password": "pw", "client_address": "1.2.3.4"},
     {"email": "a@example.com", "password": ""}, {"email": "a@example.com", "password": "x" * 2000}, [1]],
)  # fmt: skip
def test_bad_login_bodies_are_400_without_asking_quota(
    client: TestClient, quota: SignInQuota, body: Any
) -> None:
    r = client.post("/v1/auth/login", json=body)
    assert r.status_code == 400, r.text
    assert quota.calls == []


def test_refresh_logout_and_the_key_set(client: TestClient, quota: SignInQuota) -> None:
    assert client.post("/v1/auth/refresh", json={"refresh_token": "lt_rt_x"}).json() == PAIR
    quota.answer = (204, b"", {})
    r = client.post("/v1/auth/logout", json={"refresh_token": "lt_rt_x"})
    assert r.status_code == 204 and r.content == b""
    assert client.post("/v1/auth/logout", json={"refresh_token": ""}).status_code == 400
    quota.answer = (200, b'{"keys": []}', {})
    r = client.get("/.well-known/jwks.json")
    assert r.json() == {"keys": []} and r.headers["cache-control"] == "public, max-age=300"
    assert [path for path, _ in quota.calls] == [
        "/internal/auth/refresh",
        "/internal/auth/logout",
        "/internal/auth/jwks",
    ]


def test_an_access_token_cannot_spend(client: TestClient, quota: SignInQuota) -> None:
    chat = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}
    r = client.post(
        "/v1/chat/completions", json=chat, headers={"authorization": "Bearer eyJhbGci.eyJzdWIi.c2ln"}
    )
    assert r.status_code == 401 and r.json()["error"]["code"] == "api_key_required"
