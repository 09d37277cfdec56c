"""A small synchronous client of the gateway's public API. Errors become `ApiError` carrying the message of
the API's error body (`{"error": {"message", "type", "param", "code"}}`); the credential never appears in
an error, a repr or a log line."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx

from leaky_cli import __version__
from leaky_cli.config import Profile

__all__ = ["ApiClient", "ApiError", "BadInput", "error_message", "seg"]

Params = dict[str, str | int | float | bool | None]
# Called with the new (access token, refresh token) after a refresh, to keep them in the profile.
OnRefresh = Callable[[str, str], None]
_STALE_TOKEN = frozenset({"access_token_expired", "invalid_access_token"})


class BadInput(ValueError):
    """Something the user typed cannot be sent (bad usage: exit 2)."""


class ApiError(Exception):
    """A non-2xx answer (or no answer at all: `status` 0)."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code

    def __str__(self) -> str:
        where = f"HTTP {self.status}" if self.status else "error"
        return f"{where}: {self.message}" + (f" ({self.code})" if self.code else "")


def seg(value: str) -> str:
    """`value` as one URL path segment: percent-encoded, so an id can never add a segment or a query."""
    if not value or value in (".", "..") or len(value) > 500:
        raise BadInput(f"invalid id {value!r}")
    return quote(value, safe="")


def error_message(response: httpx.Response) -> tuple[str, str | None]:
    """The message and code of an error answer, from our error body when it is one."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"]), (str(error["code"]) if error.get("code") else None)
        if isinstance(body.get("detail"), str):
            return str(body["detail"]), None
    text = response.text.strip()[:300]
    return (text or response.reason_phrase or "request failed"), None


class ApiClient:
    """Sends the profile's credential; a signed-in profile whose access token expired (or was refused) is
    refreshed once with its refresh token, the request retried, and the new pair handed to `on_refresh`."""

    def __init__(
        self,
        profile: Profile,
        *,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
        on_refresh: OnRefresh | None = None,
    ):
        headers = {"User-Agent": f"leaky-cli/{__version__}", "Accept": "application/json"}
        if profile.credential:
            headers["Authorization"] = f"Bearer {profile.credential}"
        self.profile = profile
        self._refresh_token = profile.refresh_token if profile.access_token else None
        self._on_refresh = on_refresh
        self._http = httpx.Client(
            base_url=profile.gateway_url, headers=headers, timeout=timeout, transport=transport
        )

    def __repr__(self) -> str:
        return f"ApiClient({self.profile.gateway_url!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Params | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """The decoded JSON body of a 2xx answer (None when empty), else `ApiError`."""
        query: Params = {k: v for k, v in (params or {}).items() if v is not None}
        response = self._send(method, path, query, json, headers)
        if response.status_code == 401 and error_message(response)[1] in _STALE_TOKEN and self._refreshed():
            response = self._send(method, path, query, json, headers)
        if response.is_error:
            message, code = error_message(response)
            raise ApiError(response.status_code, message, code)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ApiError(response.status_code, "the gateway answered something that is not JSON") from None

    def _send(
        self, method: str, path: str, query: Params, json: Any, headers: dict[str, str] | None
    ) -> httpx.Response:
        try:
            return self._http.request(method, path, params=query, json=json, headers=headers)
        except httpx.HTTPError as exc:
            raise ApiError(0, f"cannot reach the gateway at {self.profile.gateway_url}: {exc}") from None

    def _refreshed(self) -> bool:
        """Exchange the refresh token for a new pair (once per client); False if there is none or it failed."""
        token, self._refresh_token = self._refresh_token, None
        if not token:
            return False
        response = self._send("POST", "/v1/auth/refresh", {}, {"refresh_token": token}, None)
        if response.status_code != 200:
            return False
        pair = response.json()
        self._http.headers["Authorization"] = f"Bearer {pair['access_token']}"
        if self._on_refresh is not None:
            self._on_refresh(pair["access_token"], pair["refresh_token"])
        return True

    def get(self, path: str, **params: str | int | float | bool | None) -> Any:
        return self.request("GET", path, params=params)

    def post(self, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        return self.request("POST", path, json=body, headers=headers)

    def put(self, path: str, body: Any) -> Any:
        return self.request("PUT", path, json=body)

    def patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, json=body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)
