"""`/console/...` on the gateway: forwarded to the console service with only the headers a page needs (cookies
both ways, several Set-Cookie kept apart), never the caller's API key; paths that are not plain segments and
odd queries are a 400 before anything is sent; large bodies are a 413."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from lt_gateway.main import create_app
from lt_gateway.settings import GatewaySettings


class FakeConsole:
    """The console service as the gateway's client sees it: records each request, answers a page."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def send_console(
        self, method: str, path: str, query: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, bytes, list[tuple[str, str]]]:
        self.calls.append({"method": method, "path": path, "query": query, "body": body, "headers": headers})
        out = [
            ("content-type", "text/html; charset=utf-8"),
            ("set-cookie", "a=1; HttpOnly; Path=/console; SameSite=strict"),
            ("set-cookie", "b=2; HttpOnly; Path=/console; SameSite=strict"),
            ("location", "/console/overview"),
        ]
        return 303, b"<p>ok</p>", out


@pytest.fixture
def console() -> FakeConsole:
    return FakeConsole()


@pytest.fixture
def client(console: FakeConsole) -> TestClient:
    app = create_app(GatewaySettings(_env_file=None))
    app.state.console = console
    return TestClient(app)  # no `with`: no lifespan, no connections


def test_a_form_post_is_forwarded_with_cookies_both_ways(client: TestClient, console: FakeConsole) -> None:
    r = client.post(
        "/console/login?next=overview",
        content=b"api_key=x",
        headers={
            "content-type": "application/x-www-form-urlencoded",
            "cookie": "lt_console_session=abc",
            "authorization": "Bearer lt-secret",
            "x-forwarded-host": "evil.example",
        },
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"] == "/console/overview"
    assert r.headers.get_list("set-cookie") == [
        "a=1; HttpOnly; Path=/console; SameSite=strict",
        "b=2; HttpOnly; Path=/console; SameSite=strict",
    ]
    (call,) = console.calls
    assert call["method"] == "POST" and call["path"] == "/console/login" and call["query"] == "next=overview"
    assert call["body"] == b"api_key=x"
    assert call["headers"]["cookie"] == "lt_console_session=abc"
    assert "authorization" not in call["headers"] and "x-forwarded-host" not in call["headers"]


def test_the_root_and_static_files_are_forwarded(client: TestClient, console: FakeConsole) -> None:
    assert client.get("/console", follow_redirects=False).headers["location"] == "/console/"
    client.get("/console/", follow_redirects=False)
    client.get("/console/static/htmx.min.js", follow_redirects=False)
    assert [c["path"] for c in console.calls] == ["/console/", "/console/static/htmx.min.js"]


@pytest.mark.parametrize(
    "path",
    [
        "/console/%2e%2e/internal/x",
        "/console/a%2Fb",
        "/console/..%5cx",
        "/console//x",
        "/console/a%20b",
        "/console/keys/%3Cscript%3E/revoke",
        "/console/x?next=/../internal",
    ],
)
def test_paths_and_queries_that_are_not_plain_are_400(
    client: TestClient, console: FakeConsole, path: str
) -> None:
    r = client.get(path, follow_redirects=False)
    assert r.status_code == 400, path
    assert console.calls == []


def test_other_methods_are_405_and_big_bodies_413(client: TestClient, console: FakeConsole) -> None:
    assert client.delete("/console/keys").status_code == 405
    r = client.post("/console/keys", content=b"x" * (65 * 1024), headers={"content-type": "text/plain"})
    assert r.status_code == 413
    assert console.calls == []
