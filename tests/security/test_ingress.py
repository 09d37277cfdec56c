"""Issue 17, the ingress findings, tried as an attacker would against the live local stack (the `stack` fixture
of tests/conftest.py): each of these worked before the fix.

- finding 1: a percent-encoded dot-segment path through the gateway reached quota's `/internal/admit`;
- finding 4: the gateway read (and tokenized) a whole body before it authenticated the caller, and did not
  refuse an oversized body before reading it;
- finding 11: deeply nested JSON and odd field types were 500s; `/metrics` was public through the gateway.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

pytestmark = pytest.mark.e2e


async def raw_request(
    url: str, head: str, body: bytes = b"", *, read_timeout: float = 20.0
) -> tuple[int, bytes]:
    """One HTTP/1.1 request written byte for byte (no client normalises its path); the status and body."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), read_timeout)
        status = int(status_line.split()[1])
        length = 0
        while (line := await asyncio.wait_for(reader.readline(), read_timeout)) not in (b"\r\n", b""):
            name, _, value = line.decode().partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        payload = await asyncio.wait_for(reader.readexactly(length), read_timeout) if length else b""
        return status, payload
    finally:
        writer.close()


def _post_head(path: str, host: str, key: str, length: int, content_type: str = "application/json") -> str:
    return (
        f"POST {path} HTTP/1.1\nHost: {host}\nAuthorization: Bearer {key}\n"
        f"Content-Type: {content_type}\nContent-Length: {length}\nConnection: close\n"
    )


async def _member(admin: httpx.AsyncClient) -> dict[str, Any]:
    resp = await admin.post(
        "/v1/admin/users",
        json={"email": f"sec-{uuid.uuid4().hex[:8]}@example.com", "name": "Member", "personal_quota": 1000},
    )
    assert resp.status_code == 201, resp.text
    user: dict[str, Any] = resp.json()
    return user


async def test_finding_1_no_path_reaches_internal_routes(stack: Any, admin: httpx.AsyncClient) -> None:
    member = await _member(admin)
    host = urlsplit(stack.gateway_url).netloc
    admit = json.dumps(
        {"api_key": member["api_key"], "request_id": "sec-1", "model": "mock-gpt", "provider": "mock",
         "prompt_tokens": 1}
    ).encode()  # fmt: skip
    for path in (
        "/v1/users/%2e%2e/%2e%2e/internal/admit",
        "/v1/users/%2E%2E/%2E%2E/internal/admit",
        "/v1/users/..%2f..%2finternal/admit",
        "/v1/users/me/%2e%2e/%2e%2e/%2e%2e/internal/authenticate",
        "/v1/users/..%5c..%5cinternal/admit",
        "/v1/users/%252e%252e/%252e%252e/internal/admit",
    ):
        status, body = await raw_request(
            stack.gateway_url, _post_head(path, host, member["api_key"], len(admit)), admit
        )
        assert status == 400, (path, status, body)
        assert json.loads(body)["error"]["code"] == "invalid_path", path
    # Paths that are normal but not one of an owner's public routes are simply not there.
    for path in ("/v1/users/me/internal/admit", "/v1/admin/internal", "/api/v1/tokens/internal/admit"):
        resp = await admin.post(path, content=admit)
        assert resp.status_code == 404, (path, resp.text)


async def test_finding_1_services_refuse_callers_without_a_signed_assertion(stack: Any) -> None:
    if stack.run_dir is None:
        pytest.skip("needs the stack's ports (a stack started by the tests)")
    ports = json.loads((stack.run_dir / "stack.json").read_text())["ports"]
    body = {"api_key": stack.admin_key, "request_id": "sec-2", "model": "mock-gpt", "provider": "mock",
            "prompt_tokens": 1}  # fmt: skip
    async with httpx.AsyncClient(timeout=10) as client:
        for headers in (
            {},
            {"X-LT-Internal-Token": "dev-internal-token-change-me"},
            {"X-LT-Assertion": "eyJhbGciOiJub25lIn0.eyJhdWQiOiJxdW90YSJ9."},  # alg none
        ):
            resp = await client.post(
                f"http://127.0.0.1:{ports['quota']}/internal/admit", json=body, headers=headers
            )
            assert resp.status_code == 401, (headers, resp.text)
        for name, path in (("saga", "/v1/purchases"), ("analytics", "/v1/analytics/usage"),
                           ("notifier", "/v1/admin/notifications/channels")):  # fmt: skip
            principal = json.dumps({"user_id": "u", "org_id": "o", "role": "admin"})
            resp = await client.get(
                f"http://127.0.0.1:{ports[name]}{path}", headers={"X-LT-Principal": principal}
            )
            assert resp.status_code == 401, (name, resp.text)


async def test_finding_4_no_body_is_read_before_the_caller_is_known(stack: Any) -> None:
    host = urlsplit(stack.gateway_url).netloc
    # A declared body over the limit (4 MiB) is refused from its headers: 413 before a byte of it is sent.
    status, body = await raw_request(
        stack.gateway_url,
        _post_head("/v1/chat/completions", host, "lt-anyone", 64 * 1024 * 1024),
        read_timeout=10,
    )
    assert (status, json.loads(body)["error"]["code"]) == (413, "payload_too_large")
    # An unknown key is refused before its (large, unfinished) body is read, parsed or tokenized: the answer
    # comes while the client is still sending.
    prompt = b'{"model": "mock-gpt", "messages": [{"role": "user", "content": "' + b"lorem ipsum " * 1000
    status, body = await raw_request(
        stack.gateway_url, _post_head("/v1/chat/completions", host, "lt-not-a-key", 3_900_000), prompt,
        read_timeout=10,
    )  # fmt: skip
    assert status == 401, body
    # Nesting beyond the limit is a 400 with our error body, also for a known key.
    deep = {"model": "mock-gpt", "messages": [{"role": "user", "content": "x", "name": _nest(200)}]}
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as client:
        resp = await client.post(
            "/v1/chat/completions", json=deep, headers={"Authorization": f"Bearer {stack.admin_key}"}
        )
    assert (resp.status_code, resp.json()["error"]["code"]) == (400, "json_too_deep")


def _nest(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


async def test_finding_11_deep_json_and_odd_types_are_4xx(stack: Any, admin: httpx.AsyncClient) -> None:
    deep = "DEEP"  # replaced by 500 nested arrays in the raw JSON (deeper than JSON encoders write)
    cases: list[tuple[str, str, Any]] = [
        ("POST", "/v1/admin/users", {"email": deep, "name": "x"}),
        ("POST", "/v1/admin/pools", {"owner_type": "user", "owner_id": deep, "unit": "tokens", "limit": 1}),
        ("POST", "/v1/purchases", {"tokens": deep}),
        ("PUT", "/v1/analytics/thresholds", {"thresholds": deep}),
        ("POST", "/v1/admin/notifications/channels", {"kind": deep}),
        ("POST", "/v1/admin/users", {"email": {"a": 1}, "name": ["x"], "personal_quota": "lots"}),
        ("POST", "/v1/admin/users", {"email": "a@example.com", "name": "x", "personal_quota": 10**40}),
        (
            "POST",
            "/v1/admin/pools",
            {"owner_type": "user", "owner_id": "u", "unit": "tokens", "limit": 1e308},
        ),
        ("POST", "/v1/purchases", {"tokens": -1, "amount_usd_micros": "x"}),
        (
            "POST",
            "/v1/chat/completions",
            {"model": "mock-gpt", "messages": [{"role": "user", "content": deep}]},
        ),
        ("POST", "/v1/chat/completions", {"model": ["mock-gpt"], "messages": {"role": 1}}),
        ("POST", "/v1/embeddings", {"model": "mock-gpt", "input": [[1.5, "x"]]}),
    ]
    for method, path, body in cases:
        raw = json.dumps(body).replace('"DEEP"', "[" * 500 + "1" + "]" * 500)
        resp = await admin.request(method, path, content=raw, headers={"content-type": "application/json"})
        assert 400 <= resp.status_code < 500, (method, path, resp.status_code, resp.text[:300])
        assert "Traceback" not in resp.text and set(resp.json()["error"]) >= {"message", "type", "code"}


async def test_finding_11_metrics_are_not_public(stack: Any) -> None:
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=10) as client:
        for headers in (
            {},
            {"Authorization": f"Bearer {stack.admin_key}"},
            {"Authorization": "Bearer guess"},
        ):
            resp = await client.get("/metrics", headers=headers)
            assert resp.status_code == 404, headers
            assert "lt_http_requests_total" not in resp.text
        if stack.run_dir is not None:  # the scraper's token (a file of the stack, 0600) still reads them
            token = (stack.run_dir / "metrics_token").read_text().strip()
            resp = await client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
            assert resp.status_code == 200 and "lt_http_requests_total" in resp.text
            assert (stack.run_dir / "metrics_token").stat().st_mode & 0o077 == 0
        # Every answer carries the security headers.
        health = await client.get("/health")
        assert health.headers["x-content-type-options"] == "nosniff"
        assert health.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in health.headers["content-security-policy"]
        assert health.headers["referrer-policy"] == "no-referrer"
