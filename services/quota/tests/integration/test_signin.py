"""Sign-in against real PostgreSQL and Redis (issue 12): passwords, access tokens (expiry, unknown kid, key
rotation), rotating refresh tokens (reuse revokes the session), logout, login rate limits, identical failures,
and what a signed-in user may reach."""

import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from leaky_common.auth import Principal, generate_signing_key, public_key_of
from leaky_common.db import create_database
from leaky_devinfra.testing import TEST_KEYS
from lt_quota.main import create_app
from lt_quota.settings import QuotaSettings

pytestmark = pytest.mark.integration

ADMIN_KEY = "lt-test-admin-" + uuid.uuid4().hex
PASSWORD = "correct horse battery staple"
KEY_1 = generate_signing_key()[0]
KEY_2 = generate_signing_key()[0]


class Clock:
    """Quota's clock (ms), moved by the tests."""

    def __init__(self) -> None:
        self.ms = int(time.time() * 1000)

    def __call__(self) -> int:
        return self.ms


@dataclass
class Harness:
    client: httpx.AsyncClient
    clock: Clock
    service: Any

    async def principal(self, credential: str) -> httpx.Response:
        if credential.startswith("eyJ"):
            path, body = "/internal/authenticate-token", {"access_token": credential}
        else:
            path, body = "/internal/authenticate", {"api_key": credential}
        return await self.client.post(path, json=body, headers=TEST_KEYS.headers("quota"))

    async def call(self, method: str, path: str, credential: str = ADMIN_KEY, **kw: Any) -> httpx.Response:
        """A management call as the gateway makes it: authenticate the credential, then forward."""
        r = await self.principal(credential)
        if r.status_code != 200:
            return r
        principal = Principal.model_validate_json(r.text)
        return await self.client.request(method, path, headers=TEST_KEYS.headers("quota", principal), **kw)

    async def internal(self, path: str, **body: Any) -> httpx.Response:
        return await self.client.post(f"/internal/auth/{path}", json=body, headers=TEST_KEYS.headers("quota"))

    async def login(self, email: str, password: str = PASSWORD, address: str = "192.0.2.1") -> httpx.Response:
        return await self.internal("login", email=email, password=password, client_address=address)

    async def user(self, credential: str = ADMIN_KEY, password: str | None = PASSWORD) -> dict[str, Any]:
        """A new user (with their API key), who has set `password` unless None."""
        body = {"email": f"{uuid.uuid4().hex[:10]}@example.com", "name": "U", "personal_quota": 1000}
        r = await self.call("POST", "/v1/admin/users", credential, json=body)
        assert r.status_code == 201, r.text
        user = dict(r.json())
        if password is not None:
            r = await self.call("PUT", "/v1/users/me/password", user["api_key"], json={"password": password})
            assert r.status_code == 204, r.text
        return user


@pytest.fixture(scope="module")
async def database_url(postgres_url: str) -> str:
    return await create_database(postgres_url, f"quota_signin_{uuid.uuid4().hex[:10]}")


@pytest.fixture
def make_settings(database_url: str, redis_url: str, kafka_bootstrap: str) -> Callable[..., QuotaSettings]:
    prefix = f"lt:{uuid.uuid4().hex[:8]}:"

    def make(**extra: Any) -> QuotaSettings:
        fields: dict[str, Any] = {
            "auth_signing_key": KEY_1,
            "auth_signing_kid": "k1",
            "access_token_ttl_s": 300,
            **extra,
        }
        return QuotaSettings(
            _env_file=None,
            environment="test",
            database_url=database_url,
            redis_url=redis_url,
            kafka_bootstrap=kafka_bootstrap,
            **TEST_KEYS.settings(),
            bootstrap_admin_key=ADMIN_KEY,
            redis_prefix=prefix,
            consumer_group=f"quota-{uuid.uuid4().hex[:8]}",
            sweep_interval_s=3600,
            key_cache_ttl_s=0,
            log_json=False,
            **fields,
        )

    return make


@contextlib.asynccontextmanager
async def running(settings: QuotaSettings, clock: Clock | None = None) -> AsyncIterator[Harness]:
    clock = clock or Clock()
    app = create_app(settings, clock=clock)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://quota") as client:
            yield Harness(client, clock, app.state.quota)


def code(r: httpx.Response) -> str:
    return str(r.json()["error"]["code"])


async def test_login_gives_a_bearer_pair_that_reaches_the_users_own_data(
    make_settings: Callable[..., QuotaSettings],
) -> None:
    async with running(make_settings()) as h:
        user = await h.user()
        r = await h.login(user["email"].upper())  # emails match in any case
        assert r.status_code == 200, r.text
        pair = r.json()
        assert pair["token_type"] == "bearer" and pair["expires_in"] == 300
        assert pair["refresh_token"].startswith("lt_rt_")
        header = jwt.get_unverified_header(pair["access_token"])
        assert header["kid"] == "k1" and header["alg"] == "EdDSA"
        me = await h.call("GET", "/v1/users/me", pair["access_token"])
        assert me.status_code == 200 and me.json()["id"] == user["id"]
        principal = (await h.principal(pair["access_token"])).json()
        assert principal["key_id"] is None and principal["role"] == "user"
        # The key set names the signing key, and it verifies the token.
        keys = (await h.internal("jwks")).json()["keys"]
        assert [(k["kid"], k["kty"], k["crv"]) for k in keys] == [("k1", "OKP", "Ed25519")]
        assert keys[0]["x"] == public_key_of(KEY_1)


async def test_wrong_password_and_unknown_email_answer_the_same(
    make_settings: Callable[..., QuotaSettings],
) -> None:
    async with running(make_settings()) as h:
        user = await h.user()
        wrong = await h.login(user["email"], "not the password at all")
        unknown = await h.login(f"nobody-{uuid.uuid4().hex[:6]}@example.com")
        no_password = await h.login((await h.user(password=None))["email"])
        assert wrong.status_code == unknown.status_code == no_password.status_code == 401
        assert wrong.content == unknown.content == no_password.content
        assert code(wrong) == "invalid_credentials"
        assert "password" not in wrong.headers and "retry-after" not in wrong.headers


async def test_an_access_token_expires(make_settings: Callable[..., QuotaSettings]) -> None:
    async with running(make_settings()) as h:
        user = await h.user()
        token = (await h.login(user["email"])).json()["access_token"]
        h.clock.ms += 290_000
        assert (await h.principal(token)).status_code == 200
        h.clock.ms += 20_000  # past 300 s and the 5 s leeway
        r = await h.principal(token)
        assert r.status_code == 401 and code(r) == "access_token_expired"


async def test_unknown_kid_and_forged_tokens_are_refused(make_settings: Callable[..., QuotaSettings]) -> None:
    async with running(make_settings()) as h:
        user = await h.user()
        good = (await h.login(user["email"])).json()["access_token"]
        claims = jwt.decode(good, options={"verify_signature": False})
        stranger = Ed25519PrivateKey.generate()
        unknown_kid = jwt.encode(claims, stranger, algorithm="EdDSA", headers={"kid": "k9"})
        r = await h.principal(unknown_kid)
        assert r.status_code == 401 and code(r) == "invalid_access_token"
        forged = jwt.encode(claims, stranger, algorithm="EdDSA", headers={"kid": "k1"})
        r = await h.principal(forged)
        assert r.status_code == 401 and code(r) == "invalid_access_token"
        no_kid = jwt.encode(claims, stranger, algorithm="EdDSA")
        assert (await h.principal(no_kid)).status_code == 401
        wrong_alg = jwt.encode(claims, "a-shared-secret-long-enough-for-hs256!!", algorithm="HS256")
        assert (await h.principal(wrong_alg)).status_code == 401


async def test_rotating_the_key_signs_nobody_out(make_settings: Callable[..., QuotaSettings]) -> None:
    clock = Clock()
    async with running(make_settings(), clock) as h:
        user = await h.user()
        before = (await h.login(user["email"])).json()
    rotated = make_settings(
        auth_signing_key=KEY_2, auth_signing_kid="k2", auth_public_keys={"k1": public_key_of(KEY_1)}
    )
    async with running(rotated, clock) as h:
        # The old token and the old refresh token still work; new tokens are signed with the new key.
        assert (await h.call("GET", "/v1/users/me", before["access_token"])).status_code == 200
        refreshed = await h.internal("refresh", refresh_token=before["refresh_token"])
        assert refreshed.status_code == 200, refreshed.text
        assert jwt.get_unverified_header(refreshed.json()["access_token"])["kid"] == "k2"
        after = (await h.login(user["email"])).json()
        assert jwt.get_unverified_header(after["access_token"])["kid"] == "k2"
        assert {k["kid"] for k in (await h.internal("jwks")).json()["keys"]} == {"k1", "k2"}
    # Once the old key is dropped, tokens it signed are refused; the new ones still pass.
    async with running(make_settings(auth_signing_key=KEY_2, auth_signing_kid="k2"), clock) as h:
        r = await h.principal(before["access_token"])
        assert r.status_code == 401 and code(r) == "invalid_access_token"
        assert (await h.principal(after["access_token"])).status_code == 200


async def test_reusing_a_refresh_token_revokes_the_whole_session(
    make_settings: Callable[..., QuotaSettings],
) -> None:
    async with running(make_settings()) as h:
        user = await h.user()
        first = (await h.login(user["email"])).json()
        second = (await h.internal("refresh", refresh_token=first["refresh_token"])).json()
        assert second["refresh_token"] != first["refresh_token"]
        assert (await h.principal(second["access_token"])).status_code == 200
        # The stolen first token comes back: the session ends, for the thief and the rightful holder alike.
        r = await h.internal("refresh", refresh_token=first["refresh_token"])
        assert r.status_code == 401 and code(r) == "refresh_token_reused"
        r = await h.internal("refresh", refresh_token=second["refresh_token"])
        assert r.status_code == 401 and code(r) == "invalid_refresh_token"
        for token in (first["access_token"], second["access_token"]):
            assert (await h.principal(token)).status_code == 401
        # Another sign-in session of the same user is untouched.
        other = (await h.login(user["email"])).json()
        assert (await h.principal(other["access_token"])).status_code == 200
        r = await h.internal("refresh", refresh_token="lt_rt_" + "x" * 43)
        assert r.status_code == 401 and code(r) == "invalid_refresh_token"


async def test_logout_ends_the_session_at_once(make_settings: Callable[..., QuotaSettings]) -> None:
    async with running(make_settings()) as h:
        user = await h.user()
        pair = (await h.login(user["email"])).json()
        assert (await h.internal("logout", refresh_token=pair["refresh_token"])).status_code == 204
        assert (await h.principal(pair["access_token"])).status_code == 401
        r = await h.internal("refresh", refresh_token=pair["refresh_token"])
        assert r.status_code == 401
        # Unknown tokens: nothing to end, the same 204.
        assert (await h.internal("logout", refresh_token="lt_rt_unknown")).status_code == 204


async def test_logins_are_rate_limited_per_account_and_per_address(
    make_settings: Callable[..., QuotaSettings],
) -> None:
    settings = make_settings(login_attempts_per_account=3, login_attempts_per_address=6, login_window_s=600)
    async with running(settings) as h:
        user = await h.user()
        for _ in range(3):
            r = await h.login(user["email"], "wrong password!!", address="198.51.100.7")
            assert r.status_code == 401
        r = await h.login(user["email"], address="198.51.100.8")  # even the right password, elsewhere
        assert r.status_code == 429 and code(r) == "too_many_login_attempts"
        assert 0 < int(r.headers["retry-after"]) <= 600
        # Per address: other accounts from one address (3 attempts left there), then 429 for anyone.
        for _ in range(2):
            r = await h.login(f"x{uuid.uuid4().hex[:6]}@example.com", address="198.51.100.7")
            assert r.status_code == 401
        r = await h.login(f"y{uuid.uuid4().hex[:6]}@example.com", address="198.51.100.7")
        assert r.status_code == 401  # the sixth from this address
        r = await h.login(f"z{uuid.uuid4().hex[:6]}@example.com", address="198.51.100.7")
        assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
        # Guessing the current password over an access token counts against the account too.
        third = await h.user()
        token = (await h.login(third["email"], address="203.0.113.9")).json()["access_token"]
        body = {"password": "a new long password", "current_password": "a wrong guess"}
        for _ in range(3):
            r = await h.call("PUT", "/v1/users/me/password", token, json=body)
            assert r.status_code == 401 and code(r) == "invalid_current_password"
        r = await h.call("PUT", "/v1/users/me/password", token, json={**body, "current_password": PASSWORD})
        assert r.status_code == 429 and code(r) == "too_many_login_attempts"
        # A success clears the account's count (another user, another address).
        other = await h.user()
        for _ in range(2):
            assert (
                await h.login(other["email"], "wrong password!!", address="203.0.113.1")
            ).status_code == 401
        assert (await h.login(other["email"], address="203.0.113.2")).status_code == 200
        for _ in range(3):
            assert (
                await h.login(other["email"], "wrong password!!", address="203.0.113.3")
            ).status_code == 401


async def test_changing_the_password(make_settings: Callable[..., QuotaSettings]) -> None:
    async with running(make_settings()) as h:
        user = await h.user()
        pair = (await h.login(user["email"])).json()
        token = pair["access_token"]
        # Over an access token the current password is needed.
        r = await h.call("PUT", "/v1/users/me/password", token, json={"password": "a new long password"})
        assert r.status_code == 401 and code(r) == "invalid_current_password"
        body = {"password": "a new long password", "current_password": "not it at all"}
        r = await h.call("PUT", "/v1/users/me/password", token, json=body)
        assert r.status_code == 401 and code(r) == "invalid_current_password"
        body["current_password"] = PASSWORD
        assert (await h.call("PUT", "/v1/users/me/password", token, json=body)).status_code == 204
        # Every session ended; the old password no longer works, the new one does.
        assert (await h.principal(token)).status_code == 401
        assert (await h.internal("refresh", refresh_token=pair["refresh_token"])).status_code == 401
        assert (await h.login(user["email"])).status_code == 401
        assert (await h.login(user["email"], "a new long password")).status_code == 200
        async with h.service.db.acquire() as conn:
            rows = await conn.fetch(
                "SELECT detail FROM audit_log WHERE actor_user_id = $1 AND action = 'password.self' ORDER BY id",
                user["id"],
            )
        details = [json.loads(r["detail"]) for r in rows]
        assert details == [
            {"changed": False, "sessions_ended": 0, "with_key": True},
            {"changed": True, "sessions_ended": 1, "with_key": False},
        ]


async def test_bad_input_is_a_400(make_settings: Callable[..., QuotaSettings]) -> None:
    async with running(make_settings()) as h:
        user = await h.user(password=None)
        for body in ({"password": "short"}, {"password": ""}, {"password": "x" * 2000}, {"pass": PASSWORD}):
            r = await h.call("PUT", "/v1/users/me/password", user["api_key"], json=body)
            assert r.status_code == 400, (body, r.text)
        r = await h.call("PUT", "/v1/users/me/password", user["api_key"], json={"password": "short"})
        assert code(r) == "password_too_short"
        for login in ({"email": user["email"]}, {"password": PASSWORD}, {"email": 3, "password": PASSWORD}):
            r = await h.internal("login", client_address="192.0.2.1", **login)
            assert r.status_code == 400, (login, r.text)
        assert (await h.internal("refresh")).status_code == 400
        assert (await h.principal("eyJ.not.ajwt")).status_code == 401


async def test_a_signed_in_user_stays_within_their_rights_and_org(
    make_settings: Callable[..., QuotaSettings],
) -> None:
    async with running(make_settings()) as h:
        user = await h.user()
        token = (await h.login(user["email"])).json()["access_token"]
        # An admin-only route refuses a user's access token.
        r = await h.call("GET", "/v1/admin/users", token)
        assert r.status_code == 403 and code(r) == "admin_required"
        # Another org's admin, signed in, sees only their own org.
        other = await h.call(
            "POST",
            "/v1/admin/orgs",
            json={"name": uuid.uuid4().hex[:8], "admin_email": f"{uuid.uuid4().hex[:8]}@b.example"},
        )
        assert other.status_code == 201, other.text
        other_admin = other.json()["admin"]
        r = await h.call(
            "PUT", "/v1/users/me/password", other_admin["api_key"], json={"password": "the other admins pw"}
        )
        assert r.status_code == 204
        admin_token = (await h.login(other_admin["email"], "the other admins pw")).json()["access_token"]
        assert (await h.principal(admin_token)).json()["role"] == "admin"
        r = await h.call("GET", f"/v1/admin/users/{user['id']}/keys", admin_token)
        assert r.status_code == 404
        r = await h.call("PATCH", f"/v1/admin/users/{user['id']}", admin_token, json={"status": "suspended"})
        assert r.status_code == 404
        listed = (await h.call("GET", "/v1/admin/users", admin_token)).json()["data"]
        assert user["id"] not in [u["id"] for u in listed]
        # A suspended user's token still reads but changes nothing.
        r = await h.call("PATCH", f"/v1/admin/users/{user['id']}", json={"status": "suspended"})
        assert r.status_code == 200, r.text
        assert (await h.call("GET", "/v1/users/me", token)).status_code == 200
        r = await h.call("POST", "/v1/users/me/keys", token, json={"name": "k"})
        assert r.status_code == 403 and code(r) == "user_suspended"


async def test_one_sign_in_email_across_orgs(make_settings: Callable[..., QuotaSettings]) -> None:
    async with running(make_settings()) as h:
        user = await h.user()
        other = await h.call(
            "POST", "/v1/admin/orgs", json={"name": uuid.uuid4().hex[:8], "admin_email": user["email"]}
        )
        assert other.status_code == 201, other.text
        r = await h.call(
            "PUT", "/v1/users/me/password", other.json()["admin"]["api_key"], json={"password": PASSWORD}
        )
        assert r.status_code == 409 and code(r) == "sign_in_email_taken"


async def test_without_a_signing_key_sign_in_is_unavailable(
    make_settings: Callable[..., QuotaSettings],
) -> None:
    async with running(make_settings(auth_signing_key=None, auth_signing_kid="")) as h:
        user = await h.user()
        r = await h.login(user["email"])
        assert r.status_code == 503 and code(r) == "sign_in_unavailable"
        assert (await h.internal("jwks")).json() == {"keys": []}
