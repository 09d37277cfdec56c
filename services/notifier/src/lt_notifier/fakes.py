"""Local stand-ins for the chat platforms, for tests and demos: they check payloads the way the platforms do.

One aiohttp server answers, with each platform's documented success and error shapes:
- Slack incoming webhook `POST /slack/<path>`: `text` + Block Kit `blocks`; `ok` or 400 `invalid_blocks`.
- MS Teams incoming webhook `POST /teams/<path>`: a `message` with an Adaptive Card attachment; `1` or 400.
- Telegram Bot API `POST /telegram/bot<token>/sendMessage`: `{ok: true, result: Message}` or
  `{ok: false, error_code, description}` (401 for a wrong token).
- WhatsApp Cloud API `POST /whatsapp/<version>/<phone_number_id>/messages` (Bearer token): a template
  message; `{messaging_product, contacts, messages}` or a Graph `{error: {message, type, code}}`.
- Generic webhook `POST /hooks/<name>`: checks `X-LT-Signature` when a secret is registered for `name`.

Accepted payloads are kept in `received`, refused ones in `rejected` (with the reasons); `fail_next` scripts
error statuses to exercise retries. `python -m lt_notifier.fakes --port 8090` runs it on its own.
"""

from __future__ import annotations

import argparse
import hmac
import re
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

import orjson
from aiohttp import web

from lt_notifier.domain import sign

__all__ = [
    "FakeChannels",
    "Received",
    "slack_problems",
    "teams_problems",
    "telegram_problems",
    "whatsapp_problems",
]

_SLACK_TOP = {
    "text",
    "blocks",
    "attachments",
    "thread_ts",
    "mrkdwn",
    "username",
    "icon_emoji",
    "icon_url",
    "channel",
    "unfurl_links",
    "unfurl_media",
}
_TEXT_TYPES = {"plain_text", "mrkdwn"}


def _text_object(obj: Any, where: str, limit: int, plain_only: bool = False) -> list[str]:
    if not isinstance(obj, dict):
        return [f"{where}: must be a text object"]
    problems = []
    allowed = {"plain_text"} if plain_only else _TEXT_TYPES
    if obj.get("type") not in allowed:
        problems.append(f"{where}.type must be one of {sorted(allowed)}")
    text = obj.get("text")
    if not isinstance(text, str) or not text:
        problems.append(f"{where}.text must be a non-empty string")
    elif len(text) > limit:
        problems.append(f"{where}.text longer than {limit}")
    extra = set(obj) - {"type", "text", "emoji", "verbatim"}
    if extra:
        problems.append(f"{where}: unknown keys {sorted(extra)}")
    return problems


def slack_problems(body: Any) -> list[str]:
    """Why Slack would refuse this incoming-webhook payload (empty when valid)."""
    if not isinstance(body, dict):
        return ["payload must be a JSON object"]
    problems = [f"unknown field {k!r}" for k in sorted(set(body) - _SLACK_TOP)]
    if not isinstance(body.get("text"), str) or not body["text"]:
        problems.append("no_text: 'text' is required as the notification fallback")
    blocks = body.get("blocks")
    if not isinstance(blocks, list) or not 1 <= len(blocks) <= 50:
        return [*problems, "invalid_blocks: 'blocks' must be a list of 1 to 50 blocks"]
    for i, block in enumerate(blocks):
        where = f"blocks[{i}]"
        if not isinstance(block, dict):
            problems.append(f"{where}: must be an object")
            continue
        kind = block.get("type")
        if kind == "header":
            problems += _text_object(block.get("text"), f"{where}.text", 150, plain_only=True)
        elif kind == "section":
            if "text" not in block and "fields" not in block:
                problems.append(f"{where}: a section needs text or fields")
            if "text" in block:
                problems += _text_object(block["text"], f"{where}.text", 3000)
            if "fields" in block:
                fields = block["fields"]
                if not isinstance(fields, list) or not 1 <= len(fields) <= 10:
                    problems.append(f"{where}.fields must hold 1 to 10 text objects")
                else:
                    for j, f in enumerate(fields):
                        problems += _text_object(f, f"{where}.fields[{j}]", 2000)
        elif kind == "context":
            elements = block.get("elements")
            if not isinstance(elements, list) or not 1 <= len(elements) <= 10:
                problems.append(f"{where}.elements must hold 1 to 10 elements")
            else:
                for j, e in enumerate(elements):
                    problems += _text_object(e, f"{where}.elements[{j}]", 3000)
        elif kind == "divider":
            pass
        else:
            problems.append(f"{where}: unsupported block type {kind!r}")
        extra = set(block) - {"type", "text", "fields", "elements", "block_id", "accessory"}
        if extra:
            problems.append(f"{where}: unknown keys {sorted(extra)}")
    return problems


_CARD_ELEMENTS = {"TextBlock", "FactSet", "Container", "ColumnSet", "Image", "RichTextBlock", "ActionSet"}
_CARD_VERSION = re.compile(r"^1\.[0-6]$")


def teams_problems(body: Any) -> list[str]:
    """Why a Teams incoming webhook would refuse this message (empty when valid)."""
    if not isinstance(body, dict):
        return ["payload must be a JSON object"]
    problems = []
    if body.get("type") != "message":
        problems.append("type must be 'message'")
    attachments = body.get("attachments")
    if not isinstance(attachments, list) or not attachments:
        return [*problems, "attachments must be a non-empty list"]
    for i, att in enumerate(attachments):
        where = f"attachments[{i}]"
        if not isinstance(att, dict):
            problems.append(f"{where}: must be an object")
            continue
        if att.get("contentType") != "application/vnd.microsoft.card.adaptive":
            problems.append(f"{where}.contentType must be application/vnd.microsoft.card.adaptive")
        card = att.get("content")
        if not isinstance(card, dict):
            problems.append(f"{where}.content must be an Adaptive Card object")
            continue
        if card.get("type") != "AdaptiveCard":
            problems.append(f"{where}.content.type must be 'AdaptiveCard'")
        if not isinstance(card.get("version"), str) or not _CARD_VERSION.match(card["version"]):
            problems.append(f"{where}.content.version must be '1.0' to '1.6'")
        schema = card.get("$schema")
        if schema is not None and schema != "http://adaptivecards.io/schemas/adaptive-card.json":
            problems.append(f"{where}.content.$schema is not the Adaptive Card schema")
        elements = card.get("body")
        if not isinstance(elements, list) or not elements:
            problems.append(f"{where}.content.body must be a non-empty list")
            continue
        for j, element in enumerate(elements):
            at = f"{where}.content.body[{j}]"
            kind = element.get("type") if isinstance(element, dict) else None
            if kind not in _CARD_ELEMENTS:
                problems.append(f"{at}: unsupported element {kind!r}")
            elif kind == "TextBlock" and (not isinstance(element.get("text"), str) or not element["text"]):
                problems.append(f"{at}.text must be a non-empty string")
            elif kind == "FactSet":
                facts = element.get("facts")
                if not isinstance(facts, list) or not all(
                    isinstance(f, dict)
                    and isinstance(f.get("title"), str)
                    and isinstance(f.get("value"), str)
                    for f in facts
                ):
                    problems.append(f"{at}.facts must be a list of {{title, value}} strings")
    return problems


_TELEGRAM_TAGS = {
    "b", "strong", "i", "em", "u", "ins", "s", "strike", "del", "span", "tg-spoiler", "a", "code", "pre",
    "blockquote", "tg-emoji",
}  # fmt: skip


class _TelegramHtml(HTMLParser):
    """Checks Telegram's HTML subset: known tags only, properly nested."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _TELEGRAM_TAGS:
            self.problems.append(f"Bad Request: can't parse entities: unsupported start tag {tag!r}")
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack.pop() != tag:
            self.problems.append(f"Bad Request: can't parse entities: unexpected end tag {tag!r}")


def telegram_problems(body: Any) -> list[str]:
    """Why the Bot API's sendMessage would answer 400 Bad Request (empty when valid)."""
    if not isinstance(body, dict):
        return ["Bad Request: parameters must be a JSON object"]
    problems = []
    chat_id = body.get("chat_id")
    if not isinstance(chat_id, int | str) or chat_id == "":
        problems.append("Bad Request: chat_id is empty")
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        problems.append("Bad Request: message text is empty")
    elif len(text) > 4096:
        problems.append("Bad Request: message is too long")
    mode = body.get("parse_mode")
    if mode is not None and mode not in ("HTML", "MarkdownV2", "Markdown"):
        problems.append(f"Bad Request: unsupported parse_mode {mode!r}")
    if mode == "HTML" and isinstance(text, str):
        parser = _TelegramHtml()
        parser.feed(text)
        parser.close()
        problems += parser.problems
        if parser.stack:
            problems.append(f"Bad Request: can't parse entities: unclosed tags {parser.stack}")
    return problems


_TEMPLATE_NAME = re.compile(r"^[a-z0-9_]{1,512}$")
_PHONE = re.compile(r"^\+?[0-9]{6,15}$")


def whatsapp_problems(body: Any) -> list[str]:
    """Why the Cloud API would refuse this template message with error 100 (empty when valid)."""
    if not isinstance(body, dict):
        return ["(#100) The parameter body must be a JSON object"]
    problems = []
    if body.get("messaging_product") != "whatsapp":
        problems.append("(#100) The parameter messaging_product is required and must be 'whatsapp'")
    if body.get("recipient_type", "individual") != "individual":
        problems.append("(#100) recipient_type must be 'individual'")
    if not isinstance(body.get("to"), str) or not _PHONE.match(body["to"]):
        problems.append("(#100) The parameter to must be a phone number")
    if body.get("type") != "template":
        problems.append("(#100) type must be 'template' (business-initiated messages need a template)")
    template = body.get("template")
    if not isinstance(template, dict):
        return [*problems, "(#100) The parameter template is required"]
    if not isinstance(template.get("name"), str) or not _TEMPLATE_NAME.match(template["name"]):
        problems.append("(#100) template.name must be lower-case letters, digits and underscores")
    language = template.get("language")
    if not isinstance(language, dict) or not isinstance(language.get("code"), str) or not language["code"]:
        problems.append("(#100) template.language.code is required")
    for i, component in enumerate(template.get("components") or []):
        if not isinstance(component, dict) or component.get("type") not in ("header", "body", "button"):
            problems.append(f"(#100) template.components[{i}].type must be header, body or button")
            continue
        for j, param in enumerate(component.get("parameters") or []):
            text = param.get("text") if isinstance(param, dict) else None
            if (
                not isinstance(param, dict)
                or param.get("type") != "text"
                or not isinstance(text, str)
                or not text
            ):
                problems.append(f"(#100) components[{i}].parameters[{j}] must be a non-empty text parameter")
            elif "\n" in text or "\t" in text or "     " in text:
                problems.append(
                    f"(#132018) components[{i}].parameters[{j}]: no new lines, tabs or more than 4 spaces"
                )
    return problems


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
        if secret is not None and not hmac.compare_digest(
            request.headers.get("X-LT-Signature", ""), sign(secret, raw)
        ):
            problems.append("bad signature")
        body = await self._body(request)
        self._keep("webhook", request, body, problems)
        return web.Response(status=401 if problems else 204)


def _graph_error(status: int, message: str, code: int) -> web.Response:
    error = {"message": message, "type": "OAuthException", "code": code, "fbtrace_id": "fake"}
    return web.json_response({"error": error}, status=status)


def main() -> None:
    """Run the fakes until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args()
    web.run_app(FakeChannels().app(), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
