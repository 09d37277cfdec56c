"""A signed-in profile's client refreshes a stale access token once, retries, and hands the new pair over;
an API-key profile never refreshes, and a failed refresh ends in the original 401."""

from __future__ import annotations

import json

import httpx
import pytest

from leaky_cli.client import ApiClient, ApiError
from leaky_cli.config import Profile


def _error(code: str) -> httpx.Response:
    return httpx.Response(
        401, json={"error": {"message": "no", "type": "authentication_error", "code": code}}
    )


def _gateway(calls: list[str], *, refresh_ok: bool = True) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        auth = request.headers.get("authorization", "")
        calls.append(f"{request.url.path} {auth}")
        if request.url.path == "/v1/auth/refresh":
            if not refresh_ok or json.loads(request.content)["refresh_token"] != "rt-1":
                return _error("invalid_refresh_token")
            return httpx.Response(200, json={"access_token": "at-2", "refresh_token": "rt-2"})
        if auth == "Bearer at-2" or auth == "Bearer key":
            return httpx.Response(200, json={"id": "u1"})
        return _error("access_token_expired")

    return httpx.MockTransport(handle)


def test_a_stale_access_token_is_refreshed_once() -> None:
    calls: list[str] = []
    kept: list[tuple[str, str]] = []
    profile = Profile("p", "http://gw", access_token="at-1", refresh_token="rt-1")
    client = ApiClient(profile, transport=_gateway(calls), on_refresh=lambda a, r: kept.append((a, r)))
    assert client.get("/v1/users/me") == {"id": "u1"}
    assert kept == [("at-2", "rt-2")]
    assert calls == ["/v1/users/me Bearer at-1", "/v1/auth/refresh Bearer at-1", "/v1/users/me Bearer at-2"]
    assert client.get("/v1/users/me") == {"id": "u1"}  # the new token stays in use


def test_a_failed_refresh_is_the_original_401_and_is_not_retried() -> None:
    calls: list[str] = []
    profile = Profile("p", "http://gw", access_token="at-1", refresh_token="rt-1")
    client = ApiClient(profile, transport=_gateway(calls, refresh_ok=False))
    with pytest.raises(ApiError) as caught:
        client.get("/v1/users/me")
    assert caught.value.status == 401 and caught.value.code == "access_token_expired"
    with pytest.raises(ApiError):
        client.get("/v1/users/me")
    assert [c.split()[0] for c in calls] == ["/v1/users/me", "/v1/auth/refresh", "/v1/users/me"]


def test_an_api_key_profile_never_refreshes() -> None:
    calls: list[str] = []
    client = ApiClient(
        Profile("p", "http://gw", api_key="key", refresh_token="rt-1"), transport=_gateway(calls)
    )
    assert client.get("/v1/users/me") == {"id": "u1"}
    assert calls == ["/v1/users/me Bearer key"]
