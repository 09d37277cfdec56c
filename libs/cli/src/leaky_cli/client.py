"""A small synchronous client of the gateway's public API. Errors become `ApiError` carrying the message of
the API's error body (`{"error": {"message", "type", "param", "code"}}`); the credential never appears in
an error, a repr or a log line."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx

from leaky_cli import __version__
from leaky_cli.config import Profile

__all__ = ["ApiClient", "ApiError", "BadInput", "error_message", "seg"]

Params = dict[str, str | int | float | bool | None]


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
    def __init__(
        self, profile: Profile, *, timeout: float = 30.0, transport: httpx.BaseTransport | None = None
    ):
        headers = {"User-Agent": f"leaky-cli/{__version__}", "Accept": "application/json"}
        if profile.credential:
            headers["Authorization"] = f"Bearer {profile.credential}"
        self.profile = profile
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
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self._http.request(method, path, params=query, json=json, headers=headers)
        except httpx.HTTPError as exc:
            raise ApiError(0, f"cannot reach the gateway at {self.profile.gateway_url}: {exc}") from None
        if response.is_error:
            message, code = error_message(response)
            raise ApiError(response.status_code, message, code)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ApiError(response.status_code, "the gateway answered something that is not JSON") from None

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
