"""The gateway's public API as the console uses it: calls made with the signed-in user's token.

Errors come back as `ApiError` carrying the API's own message (its OpenAI-shaped error body), which the
pages show as they are. An expiring access token is refreshed before the call; a 401 with a refresh token
at hand is refreshed once and retried.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any
from urllib.parse import quote

import httpx

from lt_console.sessions import Session

_SEGMENT = re.compile(r"^[A-Za-z0-9_.:@-]{1,200}$")


# The caller's address and the gateway's proof of it, as the gateway sent them with the page request; sent back
# on every API call made for that page, so the gateway counts the call against the caller, not the console.
RELAYED_HEADERS = ("x-lt-client-address", "x-lt-client-proof")
_relayed: ContextVar[tuple[tuple[str, str], ...]] = ContextVar("lt_console_relayed", default=())


def relay_from(headers: Mapping[str, str]) -> None:
    """Keep the relayed headers of the page request being served (a context variable: one per request)."""
    _relayed.set(tuple((h, headers[h]) for h in RELAYED_HEADERS if h in headers))


class ApiError(Exception):
    """The gateway refused or failed a call; `message` is what to show the user."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


class SignedOut(Exception):
    """The session's tokens no longer work: the user must sign in again."""


def seg(value: str) -> str:
    """`value` as one path segment of an API URL; ApiError(400) for anything that is not a plain id."""
    if not _SEGMENT.match(value) or value in (".", ".."):
        raise ApiError(400, "That is not a valid identifier.", "invalid_id")
    return quote(value, safe="")


def _error_of(resp: httpx.Response) -> ApiError:
    message = f"The gateway answered {resp.status_code}."
    code = None
    try:
        body = resp.json()
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            message = str(error.get("message") or message)
            code = error.get("code")
        elif isinstance(body, dict) and "detail" in body:
            message = str(body["detail"])
    except ValueError:
        pass
    return ApiError(resp.status_code, message, code if isinstance(code, str) else None)


# How long an idle connection to the gateway is kept (httpx's default is 5 s, as long as uvicorn's own keep-alive):
# below the gateway's `keep_alive_s` (over 30 s: leaky_common.settings.CLIENT_KEEPALIVE_S), so this client
# closes an idle connection first and never sends on one the gateway is closing that very moment.
GATEWAY_KEEPALIVE_S = 30


class Gateway:
    """One pooled HTTP client to the gateway's public address."""

    def __init__(
        self, base_url: str, timeout_s: float, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            timeout=timeout_s,
            transport=transport,
            limits=httpx.Limits(
                max_connections=100, max_keepalive_connections=20, keepalive_expiry=GATEWAY_KEEPALIVE_S
            ),
        )

    async def close(self) -> None:
        """Close the pool."""
        await self._client.aclose()

    async def _send(
        self,
        method: str,
        path: str,
        token: str | None,
        *,
        json: Any = None,
        params: Any = None,
        headers: Any = None,
    ) -> httpx.Response:
        hdrs = {"accept": "application/json", **(headers or {}), **dict(_relayed.get())}
        if token is not None:
            hdrs["authorization"] = f"Bearer {token}"
        try:
            return await self._client.request(method, path, json=json, params=params, headers=hdrs)
        except httpx.HTTPError as exc:
            raise ApiError(503, "The gateway cannot be reached right now; try again in a moment.") from exc

    async def login(self, email: str, password: str) -> dict[str, Any]:
        """`POST /v1/auth/login`: the token pair."""
        resp = await self._send("POST", "/v1/auth/login", None, json={"email": email, "password": password})
        if resp.status_code != 200:
            raise _error_of(resp)
        pair: dict[str, Any] = resp.json()
        return pair

    async def logout(self, refresh_token: str) -> None:
        """`POST /v1/auth/logout` (best effort: the console session ends anyway)."""
        with contextlib.suppress(ApiError):
            await self._send("POST", "/v1/auth/logout", None, json={"refresh_token": refresh_token})

    async def whoami(self, token: str) -> dict[str, Any]:
        """`GET /v1/users/me` with a bare token (sign-in)."""
        resp = await self._send("GET", "/v1/users/me", token)
        if resp.status_code != 200:
            raise _error_of(resp)
        me: dict[str, Any] = resp.json()
        return me

    async def manages_a_team(self, token: str) -> bool:
        """Whether the caller manages one of their teams."""
        resp = await self._send("GET", "/v1/users/me/teams", token)
        if resp.status_code != 200:
            return False
        return any(t.get("role") == "manager" for t in resp.json().get("data", []))

    async def _refresh(self, session: Session) -> None:
        assert session.refresh_token is not None
        resp = await self._send(
            "POST", "/v1/auth/refresh", None, json={"refresh_token": session.refresh_token}
        )
        if resp.status_code != 200:
            raise SignedOut
        pair = resp.json()
        session.access_token = pair["access_token"]
        session.refresh_token = pair["refresh_token"]
        session.expires_at = time.monotonic() + float(pair["expires_in"])

    async def call(
        self,
        session: Session,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """One API call as the session's user: the JSON body, None for 204; ApiError or SignedOut otherwise."""
        if session.needs_refresh(time.monotonic()):
            await self._refresh(session)
        resp = await self._send(method, path, session.access_token, json=json, params=params, headers=headers)
        if resp.status_code == 401 and session.refresh_token is not None:
            await self._refresh(session)
            resp = await self._send(
                method, path, session.access_token, json=json, params=params, headers=headers
            )
        if resp.status_code == 401:
            raise SignedOut
        if resp.status_code >= 400:
            raise _error_of(resp)
        if resp.status_code == 204 or not resp.content:
            return None
        return resp.json()
