"""Sign-in through the public gateway (issue 12): set a password with an API key, log in, use the access token
on management routes (not on chat), refresh, log out; the key set is published on the gateway's address."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import jwt
import pytest

pytestmark = pytest.mark.e2e

PASSWORD = "e2e sign-in password"
CHAT = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_sign_in_with_a_password_and_manage_with_the_token(
    stack: Any, admin: httpx.AsyncClient
) -> None:
    email = f"signin-{uuid.uuid4().hex[:8]}@example.com"
    r = await admin.post("/v1/admin/users", json={"email": email, "name": "Signs in"})
    assert r.status_code == 201, r.text
    user = r.json()
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as client:
        r = await client.put(
            "/v1/users/me/password", json={"password": PASSWORD}, headers=bearer(user["api_key"])
        )
        assert r.status_code == 204, r.text

        r = await client.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
        assert r.status_code == 200, r.text
        assert r.headers["cache-control"] == "no-store"
        pair = r.json()
        assert pair["token_type"] == "bearer" and pair["expires_in"] > 0
        token = pair["access_token"]

        # The token verifies against the key set the gateway publishes.
        keys = (await client.get("/.well-known/jwks.json")).json()["keys"]
        kid = jwt.get_unverified_header(token)["kid"]
        jwk = next(k for k in keys if k["kid"] == kid)
        claims = jwt.decode(token, jwt.PyJWK(jwk), algorithms=["EdDSA"], audience="leaky-tokens-api")
        assert claims["sub"] == user["id"]

        me = await client.get("/v1/users/me", headers=bearer(token))
        assert me.status_code == 200, me.text
        assert me.json()["email"] == email
        # Management routes of the other services take it too; admin routes refuse a user.
        assert (await client.get("/v1/purchases", headers=bearer(token))).status_code == 200
        r = await client.get("/v1/admin/users", headers=bearer(token))
        assert r.status_code == 403
        # Spending takes an API key.
        r = await client.post("/v1/chat/completions", json=CHAT, headers=bearer(token))
        assert r.status_code == 401 and r.json()["error"]["code"] == "api_key_required"

        r = await client.post("/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
        assert r.status_code == 200, r.text
        renewed = r.json()
        r = await client.post("/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
        assert r.status_code == 401 and r.json()["error"]["code"] == "refresh_token_reused"
        assert (await client.get("/v1/users/me", headers=bearer(renewed["access_token"]))).status_code == 401

        again = (await client.post("/v1/auth/login", json={"email": email, "password": PASSWORD})).json()
        r = await client.post("/v1/auth/logout", json={"refresh_token": again["refresh_token"]})
        assert r.status_code == 204
        assert (await client.get("/v1/users/me", headers=bearer(again["access_token"]))).status_code == 401


async def test_failed_logins_say_nothing_and_bad_bodies_are_400(stack: Any, admin: httpx.AsyncClient) -> None:
    email = f"signin-{uuid.uuid4().hex[:8]}@example.com"
    user = (await admin.post("/v1/admin/users", json={"email": email, "name": "U"})).json()
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as client:
        await client.put(
            "/v1/users/me/password", json={"password": PASSWORD}, headers=bearer(user["api_key"])
        )
        wrong = await client.post("/v1/auth/login", json={"email": email, "password": "wrong password"})
        unknown = await client.post(
            "/v1/auth/login", json={"email": f"no-{uuid.uuid4().hex[:8]}@example.com", "password": PASSWORD}
        )
        assert wrong.status_code == unknown.status_code == 401
        assert wrong.json() == unknown.json()
        for body in ({"email": email}, {"email": email, "password": PASSWORD, "role": "admin"}, [1]):
            r = await client.post("/v1/auth/login", json=body)
            assert r.status_code == 400, r.text
        assert (await client.post("/v1/auth/refresh", json={})).status_code == 400
        forged = jwt.encode({"sub": user["id"], "sid": "x"}, "not-the-key-at-all-but-long-enough!", "HS256")
        assert (await client.get("/v1/users/me", headers=bearer(forged))).status_code == 401
