"""The fake chat platforms on one aiohttp server: documented success and error answers, scripted failures."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from leaky_devinfra.fakes.chat.payloads import (
    slack_problems,
    teams_problems,
    telegram_problems,
    whatsapp_problems,
)

__all__ = ["FakeChannels", "Received"]


@dataclass(frozen=True, slots=True)
class Received:
    """One request a fake platform accepted (or refused)."""

    channel: str
    path: str
    headers: dict[str, str]
    body: Any
    problems: tuple[str, ...] = ()


@dataclass
class FakeChannels:
    """The fake platforms on one local port; `base_url` once started."""

    telegram_token: str = "123456:fake-telegram-token"
    whatsapp_token: str = "fake-whatsapp-access-token"
    webhook_secrets: dict[str, str] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    rejected: list[Received] = field(default_factory=list)
    # channel -> statuses to answer before accepting again (e.g. {"slack": [500, 503]}).
    fail_next: dict[str, list[int]] = field(default_factory=dict)
    _runner: web.AppRunner | None = None
    base_url: str = ""

    def of(self, channel: str) -> list[Received]:
        """Accepted requests of one channel, oldest first."""
        return [r for r in self.received if r.channel == channel]

    def app(self) -> web.Application:
        """The aiohttp application."""
        app = web.Application()
        app.router.add_post("/slack/{path:.*}", self._slack)
        app.router.add_post("/teams/{path:.*}", self._teams)
        app.router.add_post("/telegram/bot{token}/sendMessage", self._telegram)
        app.router.add_post("/whatsapp/{version}/{phone_number_id}/messages", self._whatsapp)
        app.router.add_post("/hooks/{name}", self._webhook)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on `port` (0 = a free one); returns the base URL."""
        self._runner = web.AppRunner(self.app())
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.base_url = f"http://{host}:{self._runner.addresses[0][1]}"
        return self.base_url

    async def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            await self._runner.cleanup()

    async def _body(self, request: web.Request) -> Any:
        try:
            return orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return None

    def _scripted(self, channel: str) -> int | None:
        statuses = self.fail_next.get(channel)
        return statuses.pop(0) if statuses else None

    def _keep(self, channel: str, request: web.Request, body: Any, problems: list[str]) -> None:
        entry = Received(channel, request.path, dict(request.headers), body, tuple(problems))
        (self.rejected if problems else self.received).append(entry)

    async def _slack(self, request: web.Request) -> web.Response:
        if (status := self._scripted("slack")) is not None:
            return web.Response(status=status, text="service_unavailable")
        body = await self._body(request)
        problems = slack_problems(body) if body is not None else ["invalid_payload"]
        self._keep("slack", request, body, problems)
        if problems:
            code = (
                problems[0].split(":")[0]
                if problems[0].startswith(("no_text", "invalid_"))
                else "invalid_blocks"
            )
            return web.Response(status=400, text=code)
        return web.Response(text="ok")

    async def _teams(self, request: web.Request) -> web.Response:
        if (status := self._scripted("teams")) is not None:
            return web.Response(status=status)
        body = await self._body(request)
        problems = teams_problems(body) if body is not None else ["invalid JSON"]
        self._keep("teams", request, body, problems)
        if problems:
            return web.Response(status=400, text="Bad payload received by generic incoming webhook.")
        return web.Response(text="1")

    async def _telegram(self, request: web.Request) -> web.Response:
        if (status := self._scripted("telegram")) is not None:
            return web.json_response(
                {"ok": False, "error_code": status, "description": "scripted"}, status=status
            )
        if not hmac.compare_digest(request.match_info["token"], self.telegram_token):
            return web.json_response(
                {"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401
            )
        body = await self._body(request)
        problems = telegram_problems(body)
        self._keep("telegram", request, body, problems)
        if problems:
            return web.json_response({"ok": False, "error_code": 400, "description": problems[0]}, status=400)
        message = {
            "message_id": len(self.of("telegram")),
            "date": int(time.time()),
            "chat": {"id": body["chat_id"], "type": "private"},
            "text": body["text"],
        }
        return web.json_response({"ok": True, "result": message})

    async def _whatsapp(self, request: web.Request) -> web.Response:
        if (status := self._scripted("whatsapp")) is not None:
            return _graph_error(status, "scripted failure", 2)
        if request.headers.get("Authorization") != f"Bearer {self.whatsapp_token}":
            return _graph_error(401, "Invalid OAuth access token - Cannot parse access token", 190)
        if not re.match(r"^v\d+\.\d+$", request.match_info["version"]):
            return _graph_error(400, "Unknown path components", 2500)
        body = await self._body(request)
        problems = whatsapp_problems(body)
        self._keep("whatsapp", request, body, problems)
        if problems:
            return _graph_error(400, problems[0], 100)
        to = body["to"]
        return web.json_response(
            {
                "messaging_product": "whatsapp",
                "contacts": [{"input": to, "wa_id": to.lstrip("+")}],
                "messages": [{"id": f"wamid.fake{len(self.of('whatsapp'))}"}],
            }
        )

    async def _webhook(self, request: web.Request) -> web.Response:
        if (status := self._scripted("webhook")) is not None:
            return web.Response(status=status)
        raw = await request.read()
        secret = self.webhook_secrets.get(request.match_info["name"])
        problems = []
        if secret is not None and not _signed(secret, request.headers, raw):
            problems.append("bad signature")
        body = await self._body(request)
        self._keep("webhook", request, body, problems)
        return web.Response(status=401 if problems else 204)


def _graph_error(status: int, message: str, code: int) -> web.Response:
    error = {"message": message, "type": "OAuthException", "code": code, "fbtrace_id": "fake"}
    return web.json_response({"error": error}, status=status)


def _signed(secret: str, headers: Any, body: bytes, tolerance_s: int = 300) -> bool:
    # Checked here as a receiver would, from the Standard Webhooks scheme (base64 HMAC-SHA256 of
    # "<webhook-id>.<webhook-timestamp>.<body>" keyed by the base64 part of a `whsec_` secret, timestamp
    # within 5 minutes), so the fake checks the notifier's signing rather than reusing it.
    msg_id, stamp = headers.get("webhook-id", ""), headers.get("webhook-timestamp", "")
    if not msg_id or not stamp.isdigit() or abs(time.time() - int(stamp)) > tolerance_s:
        return False
    key = base64.b64decode(secret.removeprefix("whsec_")) if secret.startswith("whsec_") else secret.encode()
    digest = hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
    expected = "v1," + base64.b64encode(digest).decode()
    return any(hmac.compare_digest(expected, s) for s in headers.get("webhook-signature", "").split(" "))
