"""The console and the gateway never race over an idle connection: each side's client closes an idle one before
the server at the other end would (a request sent on a connection the server is closing fails outright)."""

from __future__ import annotations

from typing import Any

import pytest
import uvicorn
from pydantic import ValidationError

from lt_console import __main__ as console_main
from lt_console.gateway import GATEWAY_KEEPALIVE_S, Gateway
from lt_console.settings import ConsoleSettings


async def test_the_client_to_the_gateway_closes_idle_connections_first() -> None:
    gateway = Gateway("http://127.0.0.1:1", 5.0)
    try:
        pool: Any = gateway._client._transport._pool  # type: ignore[attr-defined]
        assert pool._keepalive_expiry == GATEWAY_KEEPALIVE_S == 30
    finally:
        await gateway.close()


def test_the_console_keeps_idle_connections_longer_than_the_gateway_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(kw))
    console_main.main()
    assert seen["timeout_keep_alive"] == 75  # the gateway's pool keeps one 30 s (CLIENT_KEEPALIVE_S)
    with pytest.raises(ValidationError):
        ConsoleSettings(keep_alive_s=30)
