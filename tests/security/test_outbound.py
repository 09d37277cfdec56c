"""Outbound safety against a live local stack (issue 17, findings 6 and 11).

- SSRF: the notifier refuses channel URLs that point at loopback (where our own services listen), link-local
  metadata, private ranges and their disguises, follows no redirect and never echoes a receiver's answer.
- Markup injection: an approval reason reaches Slack and Teams as inert text (no `<!channel>` broadcast, no
  disguised link).
- Channel secrets: sealed in the notifier's database, never returned by the API.

The stack is started here with `LT_OUTBOUND_ALLOW_NETWORKS=["127.0.0.1:<fake port>"]`: the operator's
allow-list names exactly the fake receivers' address and port, while every service of the stack (the same
address, other ports) stays refused.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from aiohttp import web

from leaky_common.db import database_url_for
from leaky_devinfra.infra import free_port, pid_alive
from leaky_devinfra.testing import eventually

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
STACK = ROOT / "deploy" / "local" / "stack.py"
INJECTION = "<!channel> see <https://evil.example|the dashboard> or [click here](https://evil.example)"
UPSTREAM_SECRET_TEXT = "upstream-private-answer-7f3a"


@dataclass
class Live:
    gateway_url: str
    admin_key: str
    state: dict[str, Any]


@pytest.fixture(scope="module")
def fake_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def live(fake_port: int) -> Iterator[Live]:
    run_dir = Path(tempfile.mkdtemp(prefix="lt-outbound-"))
    env = {**os.environ, "LT_OUTBOUND_ALLOW_NETWORKS": json.dumps([f"127.0.0.1:{fake_port}"])}
    cmd = [sys.executable, str(STACK), "up", "--run-dir", str(run_dir), "--ports", "auto"]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180, check=False)
    state = json.loads((run_dir / "stack.json").read_text()) if (run_dir / "stack.json").exists() else {}
    try:
        if result.returncode != 0:
            logs = "\n".join(
                f"--- {p.name}\n{p.read_text()[-3000:]}" for p in (run_dir / "logs").glob("*.log")
            )
            pytest.fail(f"stack did not start:\n{result.stdout}\n{result.stderr}\n{logs}")
        stack_env = dict(
            line.split("=", 1) for line in (run_dir / "stack.env").read_text().splitlines() if line
        )
        yield Live(stack_env["LT_GATEWAY_URL"], stack_env["LT_ADMIN_KEY"], state)
    finally:
        down = [sys.executable, str(STACK), "down", "--run-dir", str(run_dir)]
        subprocess.run(down, cwd=ROOT, check=False, capture_output=True)
        left = {name: pid for name, pid in state.get("pids", {}).items() if pid_alive(int(pid))}
        assert not left, f"`stack.py down` left processes running: {left}"


@dataclass
class Receivers:
    """Requests that reached the fake platform (allowed) and a stand-in internal service (another port)."""

    fake_port: int
    internal_port: int
    fake_hits: list[tuple[str, bytes, dict[str, str]]] = field(default_factory=list)
    internal_hits: list[str] = field(default_factory=list)

    def fake(self, path: str) -> str:
        return f"http://127.0.0.1:{self.fake_port}{path}"


@pytest.fixture(scope="module")
async def receivers(fake_port: int) -> AsyncIterator[Receivers]:
    rec = Receivers(fake_port=fake_port, internal_port=free_port())

    async def fake(request: web.Request) -> web.Response:
        rec.fake_hits.append((request.path, await request.read(), dict(request.headers)))
        if request.path == "/redirect":
            return web.Response(
                status=302, headers={"Location": f"http://127.0.0.1:{rec.internal_port}/moved"}
            )
        if request.path == "/leak":
            return web.Response(status=500, text=f"stack trace with {UPSTREAM_SECRET_TEXT}")
        return web.Response(text="ok")

    async def internal(request: web.Request) -> web.Response:
        rec.internal_hits.append(request.path)
        return web.Response(text="internal")

    runners = []
    for handler, port in ((fake, rec.fake_port), (internal, rec.internal_port)):
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        runners.append(runner)
    try:
        yield rec
    finally:
        for runner in runners:
            await runner.cleanup()


@pytest.fixture
async def admin(live: Live) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {live.admin_key}"}
    async with httpx.AsyncClient(base_url=live.gateway_url, headers=headers, timeout=30) as client:
        yield client


CHANNELS = "/v1/admin/notifications/channels"
WEBHOOKS = "/v1/admin/notifications/webhooks"


async def test_finding_6_ssrf_channels_cannot_reach_internal_addresses(
    live: Live, admin: httpx.AsyncClient, receivers: Receivers
) -> None:
    p = receivers.internal_port
    quota = f"http://127.0.0.1:{live.state['ports']['quota']}/internal/admit"
    for url in (
        f"http://127.0.0.1:{p}/hook",
        f"http://localhost:{p}/hook",
        f"http://2130706433:{p}/hook",  # 127.0.0.1 as a decimal number
        f"http://[::ffff:127.0.0.1]:{p}/hook",
        f"http://evil.example@127.0.0.1:{p}/hook",
        quota,
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
    ):
        for path, body in ((CHANNELS, {"channel": "slack", "url": url}), (WEBHOOKS, {"url": url})):
            resp = await admin.post(path, json=body)
            assert resp.status_code == 400, (url, resp.status_code, resp.text)
            assert resp.json()["error"]["type"] == "invalid_request_error", resp.text
    assert receivers.internal_hits == []

    # An allowed destination that redirects inward: the redirect is not followed.
    redirect = await admin.post(CHANNELS, json={"channel": "slack", "url": receivers.fake("/redirect")})
    assert redirect.status_code == 201, redirect.text
    result = (await admin.post(f"{CHANNELS}/{redirect.json()['id']}/test")).json()
    assert result == {"ok": False, "error": "HTTP 302"}
    # A receiver's answer is never echoed back: only the status is recorded.
    leak = await admin.post(CHANNELS, json={"channel": "teams", "url": receivers.fake("/leak")})
    result = (await admin.post(f"{CHANNELS}/{leak.json()['id']}/test")).json()
    assert result == {"ok": False, "error": "HTTP 500"}
    assert receivers.internal_hits == []
    for created in (redirect, leak):
        assert (await admin.delete(f"{CHANNELS}/{created.json()['id']}")).status_code == 204


async def _member_with_team(admin: httpx.AsyncClient, live: Live) -> httpx.AsyncClient:
    team = await admin.post("/v1/admin/teams", json={"name": f"sec-{uuid.uuid4().hex[:8]}"})
    assert team.status_code == 201, team.text
    user = await admin.post(
        "/v1/admin/users",
        json={
            "email": f"sec-{uuid.uuid4().hex[:8]}@example.com",
            "name": "Member",
            "team_id": team.json()["id"],
        },
    )
    assert user.status_code == 201, user.text
    key = user.json()["api_key"]
    return httpx.AsyncClient(
        base_url=live.gateway_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )


async def test_finding_11_markup_in_approval_reasons_is_inert_on_slack_and_teams(
    live: Live, admin: httpx.AsyncClient, receivers: Receivers
) -> None:
    tag = uuid.uuid4().hex[:8]
    ids = []
    for channel in ("slack", "teams"):
        created = await admin.post(
            CHANNELS,
            json={
                "channel": channel,
                "url": receivers.fake(f"/{channel}/{tag}"),
                "event_types": ["ApprovalRequested.v1"],
            },
        )
        assert created.status_code == 201, created.text
        ids.append(created.json()["id"])
    async with await _member_with_team(admin, live) as member:
        asked = await member.post("/v1/approvals", json={"requested_credits": 10, "reason": INJECTION})
        assert asked.status_code == 201, asked.text

    async def both_arrived() -> dict[str, bytes] | None:
        got = {path.split("/")[1]: body for path, body, _ in receivers.fake_hits if path.endswith(tag)}
        return got if len(got) == 2 else None

    got = await eventually(both_arrived, timeout=30)
    slack, teams = got["slack"].decode(), got["teams"].decode()
    assert "evil.example" in slack and "evil.example" in teams  # the text arrived...
    assert "<!channel>" not in slack and "<https://evil.example|" not in slack  # ...as inert text
    assert "&lt;!channel&gt;" in slack
    assert "[click here](https://evil.example)" not in teams
    assert "\\\\[click here\\\\](https://evil.example)" in teams  # backslash-escaped (JSON-encoded)
    for channel_id in ids:
        assert (await admin.delete(f"{CHANNELS}/{channel_id}")).status_code == 204


async def test_finding_11_channel_secrets_are_sealed_at_rest_and_never_returned(
    live: Live, admin: httpx.AsyncClient, receivers: Receivers
) -> None:
    bot_token = f"{uuid.uuid4().int % 10**9}:AAH-{uuid.uuid4().hex}"
    slack_url = receivers.fake(f"/services/T0/B0/{uuid.uuid4().hex}")
    telegram = await admin.post(
        CHANNELS,
        json={"channel": "telegram", "config": {"chat_id": "42"}, "secrets": {"bot_token": bot_token}},
    )
    slack = await admin.post(CHANNELS, json={"channel": "slack", "url": slack_url})
    signing_secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    hook_path = f"/hook/{uuid.uuid4().hex}"
    hook = await admin.post(WEBHOOKS, json={"url": receivers.fake(hook_path), "secret": signing_secret})
    for resp in (telegram, slack, hook):
        assert resp.status_code == 201, resp.text

    db = await asyncpg.connect(database_url_for(live.state["postgres"], "lt_notifier"))
    try:
        rows = await db.fetch(
            "SELECT id, url, secrets::text AS secrets FROM webhook_subscriptions WHERE id = ANY($1::text[])",
            [telegram.json()["id"], slack.json()["id"], hook.json()["id"]],
        )
    finally:
        await db.close()
    stored = json.dumps([dict(r) for r in rows])
    assert len(rows) == 3
    for secret in (bot_token, slack_url.split("/B0/")[1], signing_secret):
        assert secret not in stored
    assert all(r["url"] is None or r["url"].startswith("enc:v1:") for r in rows)

    # Never returned: not in the answers, not in the lists.
    listed = [(await admin.get(CHANNELS)).text, (await admin.get(WEBHOOKS)).text, telegram.text, hook.text]
    for secret in (bot_token, slack_url, signing_secret):
        assert not any(secret in text for text in listed)

    # The webhook's requests are signed the Standard Webhooks way with that secret.
    from leaky_common.webhook_signing import verify

    sent = await admin.post(f"{CHANNELS}/{hook.json()['id']}/test")
    assert sent.json() == {"ok": True, "error": None}
    [(_, body, headers)] = [hit for hit in receivers.fake_hits if hit[0] == hook_path]
    assert verify(signing_secret, headers, body) == headers["webhook-id"]
    for resp in (telegram, slack):
        assert (await admin.delete(f"{CHANNELS}/{resp.json()['id']}")).status_code == 204
    assert (await admin.delete(f"{WEBHOOKS}/{hook.json()['id']}")).status_code == 204
