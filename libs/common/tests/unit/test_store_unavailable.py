"""A store down or restarting mid-request is a 503 with Retry-After (clients and the gateway fail closed and
retry), never a 500; any other unexpected error stays a 500 without its trace in the body."""

from __future__ import annotations

import asyncpg
import pytest
import redis.exceptions
from fastapi import FastAPI
from fastapi.testclient import TestClient

from leaky_common.errors import install_error_handlers

RAISED: dict[str, BaseException] = {
    "postgres-closed": asyncpg.InterfaceError(
        "cannot call Transaction.__aexit__(): the underlying connection is closed"
    ),
    "postgres-refused": ConnectionRefusedError(111, "Connection refused"),
    "postgres-starting": asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
    "postgres-dropped": asyncpg.exceptions.InternalClientError(
        "cannot switch to state 15; another operation (2) is in progress"
    ),
    "redis-down": redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379"),
    "bug": ValueError("a bug with a secret in it"),
}


def _client() -> TestClient:
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/boom/{what}")
    async def boom(what: str) -> None:
        raise RAISED[what]

    return TestClient(app, raise_server_exceptions=False)


@pytest.mark.parametrize(
    "what", ["postgres-closed", "postgres-refused", "postgres-starting", "postgres-dropped", "redis-down"]
)
def test_a_store_down_is_503_with_retry_after(what: str) -> None:
    resp = _client().post(f"/boom/{what}")
    assert resp.status_code == 503, resp.text
    assert resp.headers["retry-after"] == "1"
    assert resp.json()["error"]["code"] == "service_unavailable"
    assert "Connection" not in resp.text and "Transaction" not in resp.text  # no exception text echoed
    assert "operation" not in resp.text


def test_anything_else_stays_a_500_without_its_text() -> None:
    resp = _client().post("/boom/bug")
    assert resp.status_code == 500
    assert resp.json()["error"]["code"] == "internal_error" and "secret" not in resp.text
