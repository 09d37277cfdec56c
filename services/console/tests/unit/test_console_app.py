"""The console app against a fake gateway (httpx.MockTransport): sign-in, cookie flags, CSRF, signed-out
redirects, refresh of an expiring access token, and API errors rendered as messages."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from lt_console.main import create_app
from lt_console.sessions import COOKIE
from lt_console.settings import ConsoleSettings
from lt_console.web import usd

ME = {
    "id": "u-1",
    "email": "ada@example.com",
    "name": "Ada",
    "org_id": "o-1",
    "team_id": None,
    "role": "user",
    "status": "active",
}
QUOTA = {
    "pools": [
        {"id": "p-1", "owner_type": "user", "owner_id": "u-1", "unit": "tokens", "period": "none", "provider": None,
         "model": None, "limit": 100000, "used": 2500, "reserved": 500, "remaining": 97000, "resets_at": None}
    ],
    "personal_quota": 100000, "used_tokens": 2500, "reserved_tokens": 500, "available_quota": 97000,
    "team_pool_available": 0, "vacation_share_available": 0, "status": "active",
}  # fmt: skip


class FakeGateway:
    """The gateway's public API as far as these tests need it; records the calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str | None]] = []
        # (path, x-lt-client-address, x-lt-client-proof) of every call
        self.relayed: list[tuple[str, str | None, str | None]] = []
        self.expires_in = 900
        self.access = "at-1"

    def __call__(self, request: httpx.Request) -> httpx.Response:
        auth = request.headers.get("authorization")
        self.calls.append((request.method, request.url.path, auth))
        headers = request.headers
        self.relayed.append(
            (request.url.path, headers.get("x-lt-client-address"), headers.get("x-lt-client-proof"))
        )
        path = request.url.path
        if path == "/v1/auth/login":
            body = json.loads(request.content)
            if body["password"] != "right":
                return _error(401, "invalid credentials", "invalid_credentials")
            return httpx.Response(200, json=self._pair())
        if path == "/v1/auth/refresh":
            self.access = "at-2"
            return httpx.Response(200, json=self._pair())
        if path == "/v1/auth/logout":
            return httpx.Response(204)
        if auth not in (f"Bearer {self.access}", "Bearer lt-key"):
            return _error(401, "bad token", "invalid_api_key")
        if path == "/v1/users/me":
            return httpx.Response(200, json=ME)
        if path == "/v1/users/me/teams":
            return httpx.Response(200, json={"data": []})
        if path == "/v1/users/me/quota":
            return httpx.Response(200, json=QUOTA)
        if path == "/v1/analytics/usage":
            return httpx.Response(200, json={"by_model": [], "by_day": [], "total_requests": 0})
        if path == "/v1/users/me/keys" and request.method == "GET":
            return httpx.Response(200, json={"data": []})
        if path == "/v1/users/me/keys" and request.method == "POST":
            return _error(403, "Your key is frozen: keys cannot be made while frozen.", "frozen")
        if path == "/v1/admin/users":
            return _error(403, "admins only <script>alert(1)</script>", "forbidden")
        return _error(404, "no route", "unknown_url")

    def _pair(self) -> dict[str, Any]:
        return {
            "access_token": self.access,
            "token_type": "bearer",
            "expires_in": self.expires_in,
            "refresh_token": "rt",
        }


def _error(status: int, message: str, code: str) -> httpx.Response:
    return httpx.Response(
        status, json={"error": {"message": message, "type": "x", "param": None, "code": code}}
    )


@pytest.fixture
def fake() -> FakeGateway:
    return FakeGateway()


@pytest.fixture
def client(fake: FakeGateway) -> Iterator[TestClient]:
    app = create_app(ConsoleSettings(gateway_url="http://gw.test"), transport=httpx.MockTransport(fake))
    with TestClient(app, base_url="http://testserver") as c:
        yield c


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


def sign_in(client: TestClient, **fields: str) -> Any:
    page = client.get("/console/login")
    return client.post(
        "/console/login", data={"csrf_token": _csrf(page.text), **fields}, follow_redirects=False
    )


def test_signed_out_pages_redirect_to_sign_in_and_htmx_gets_hx_redirect(client: TestClient) -> None:
    for path in ("/console/overview", "/console/keys", "/console/admin/users", "/console/"):
        r = client.get(path, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/console/login", path
    r = client.get("/console/overview/pools", headers={"HX-Request": "true"}, follow_redirects=False)
    assert r.status_code == 204 and r.headers["hx-redirect"] == "/console/login"


def test_sign_in_sets_an_httponly_samesite_cookie_holding_only_an_id(client: TestClient) -> None:
    r = sign_in(client, email="ada@example.com", password="right")
    assert r.status_code == 303 and r.headers["location"] == "/console/overview"
    cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith(COOKIE + "="))
    flags = cookie.lower()
    assert "httponly" in flags and "samesite=strict" in flags and "path=/console" in flags
    assert "at-1" not in cookie and "rt" not in cookie.split(";")[0].split("=", 1)[1][:2] + "x"
    page = client.get("/console/overview")
    assert page.status_code == 200 and "97,000" in page.text and "ada@example.com" in page.text
    assert page.headers["cache-control"] == "no-store"
    assert "default-src 'self'" in page.headers["content-security-policy"]


def test_wrong_password_says_nothing_specific(client: TestClient) -> None:
    r = sign_in(client, email="ada@example.com", password="wrong")
    assert r.status_code == 401 and "did not work" in r.text and COOKIE not in r.headers.get("set-cookie", "")


def test_sign_in_with_an_api_key(client: TestClient, fake: FakeGateway) -> None:
    assert sign_in(client, api_key="lt-key").status_code == 303
    assert client.get("/console/overview").status_code == 200
    assert ("GET", "/v1/users/me/quota", "Bearer lt-key") in fake.calls


def test_a_login_post_without_the_form_token_is_403(client: TestClient) -> None:
    client.get("/console/login")
    r = client.post("/console/login", data={"api_key": "lt-key"}, follow_redirects=False)
    assert r.status_code == 403 and "CSRF" in r.text


def test_a_post_without_the_session_csrf_token_is_403_and_nothing_is_called(
    client: TestClient, fake: FakeGateway
) -> None:
    sign_in(client, api_key="lt-key")
    before = len(fake.calls)
    r = client.post("/console/keys", data={"name": "x"}, follow_redirects=False)
    assert r.status_code == 403
    r = client.post("/console/keys", data={"name": "x", "csrf_token": "forged"}, follow_redirects=False)
    assert r.status_code == 403
    assert len(fake.calls) == before


def test_an_api_refusal_is_shown_as_its_message(client: TestClient) -> None:
    sign_in(client, api_key="lt-key")
    token = _csrf(client.get("/console/keys").text)
    r = client.post("/console/keys", data={"name": "x", "csrf_token": token})
    assert r.status_code == 200 and "keys cannot be made while frozen" in r.text  # the redirected-to page
    page = client.get("/console/admin/users")
    assert (
        "Not for your role." in page.text and "admins only &lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    )
    assert "<script>alert(1)" not in page.text  # the API's words are text, never markup


def test_an_expiring_access_token_is_refreshed(client: TestClient, fake: FakeGateway) -> None:
    fake.expires_in = 10  # inside the refresh margin: the next call refreshes first
    sign_in(client, email="ada@example.com", password="right")
    assert client.get("/console/overview").status_code == 200
    assert ("POST", "/v1/auth/refresh", None) in fake.calls
    assert ("GET", "/v1/users/me/quota", "Bearer at-2") in fake.calls


def test_logout_needs_the_token_ends_the_gateway_session_and_clears_the_cookie(
    client: TestClient, fake: FakeGateway
) -> None:
    sign_in(client, email="ada@example.com", password="right")
    assert client.post("/console/logout", data={}, follow_redirects=False).status_code == 403
    token = _csrf(client.get("/console/overview").text)
    r = client.post("/console/logout", data={"csrf_token": token}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/console/login"
    assert ("POST", "/v1/auth/logout", None) in fake.calls
    assert client.get("/console/overview", follow_redirects=False).status_code == 303


def test_ids_that_are_not_plain_segments_never_reach_the_api(client: TestClient, fake: FakeGateway) -> None:
    sign_in(client, api_key="lt-key")
    token = _csrf(client.get("/console/keys").text)
    before = len(fake.calls)
    r = client.post("/console/keys/%3Cx%3E/revoke", data={"csrf_token": token}, follow_redirects=False)
    assert r.status_code == 303
    assert len(fake.calls) == before
    assert "not a valid identifier" in client.get("/console/keys").text


def test_static_assets_are_shipped(client: TestClient) -> None:
    assert client.get("/console/static/htmx.min.js").status_code == 200
    assert client.get("/console/static/console.css").status_code == 200


def test_the_cookie_is_secure_when_configured(fake: FakeGateway) -> None:
    settings = ConsoleSettings(gateway_url="http://gw.test", console_secure_cookie=True)
    app = create_app(settings, transport=httpx.MockTransport(fake))
    with TestClient(app, base_url="https://testserver") as c:
        r = sign_in(c, api_key="lt-key")
    cookie = next(v for v in r.headers.get_list("set-cookie") if v.startswith(COOKIE + "="))
    assert "secure" in cookie.lower()


def test_the_callers_address_and_proof_go_back_to_the_gateway_with_that_pages_calls_only(
    client: TestClient, fake: FakeGateway
) -> None:
    relayed = {"x-lt-client-address": "203.0.113.7", "x-lt-client-proof": "p" * 64}
    page = client.get("/console/login", headers=relayed)
    r = client.post(
        "/console/login",
        data={"csrf_token": _csrf(page.text), "email": "ada@example.com", "password": "right"},
        headers=relayed,
        follow_redirects=False,
    )
    assert r.status_code == 303
    login = [row for row in fake.relayed if row[0] == "/v1/auth/login"]
    assert login == [("/v1/auth/login", "203.0.113.7", "p" * 64)]
    fake.relayed.clear()
    client.get(
        "/console/overview", headers={"x-lt-client-address": "198.51.100.4", "x-lt-client-proof": "q" * 64}
    )
    assert fake.relayed and {(a, p) for _, a, p in fake.relayed} == {("198.51.100.4", "q" * 64)}
    # A page request without them sends none: nothing carries over from another request.
    fake.relayed.clear()
    client.get("/console/overview")
    assert fake.relayed and {(a, p) for _, a, p in fake.relayed} == {(None, None)}


def test_small_spend_is_shown_to_the_micro_dollar_not_as_zero() -> None:
    assert usd(33) == "$0.000033"  # three mock requests: 4 decimals showed "$0.0000"
    assert usd(0) == "$0.000000"
    assert usd(9_999) == "$0.009999"
    assert usd(1_234_567) == "$1.2346"
