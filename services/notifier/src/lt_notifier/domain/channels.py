"""Channel wire formats (no I/O): what is sent to Slack, MS Teams, Telegram, WhatsApp, email and webhooks.

- Slack incoming webhook: JSON `{text, blocks}` (Block Kit: header, section, section fields, context).
- MS Teams incoming webhook: `{type: "message", attachments: [{contentType:
  "application/vnd.microsoft.card.adaptive", content: <Adaptive Card 1.4>}]}`.
- Telegram Bot API: `POST <base>/bot<token>/sendMessage` with `{chat_id, text, parse_mode: "HTML"}`.
- WhatsApp Cloud API: `POST <base>/<version>/<phone_number_id>/messages`, Bearer token, a template message.
- Email: a plain-text message over SMTP.
- Generic webhook: `{id, type, occurred_at, data}`, signed the Standard Webhooks way (`webhook-id`,
  `webhook-timestamp`, `webhook-signature`; see `leaky_common.webhook_signing`).

Every piece of text that can come from a user (approval reasons, session, key and user ids, ...) is escaped for
the platform that reads it: Slack mrkdwn (`&`, `<`, `>`, so `<!channel>` and `<https://x|click>` are inert),
Teams Markdown (backslash before the Markdown and HTML metacharacters, so `[click](https://x)` stays text),
Telegram HTML (`html.escape`). WhatsApp template parameters and plain-text email carry no markup.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any, Literal

import orjson

from leaky_common.webhook_signing import signed_headers
from lt_notifier.domain.notification import Notification

__all__ = [
    "ChannelName",
    "EmailOut",
    "Endpoints",
    "HttpOut",
    "email_message",
    "render",
    "slack_body",
    "slack_escape",
    "teams_body",
    "teams_escape",
    "telegram_body",
    "whatsapp_body",
]

ChannelName = Literal["webhook", "slack", "teams", "telegram", "whatsapp", "email"]

_EMOJI = {
    "info": ":information_source:",
    "warning": ":warning:",
    "error": ":rotating_light:",
    "critical": ":fire:",
}
_CARD_COLOR = {"info": "Default", "warning": "Warning", "error": "Attention", "critical": "Attention"}


@dataclass(frozen=True, slots=True)
class HttpOut:
    """One HTTP POST; `redact` lists secrets that must never appear in a log or an error message."""

    url: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    redact: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class EmailOut:
    """One email to send over SMTP."""

    message: EmailMessage


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def slack_escape(text: str) -> str:
    """Slack's required escaping for mrkdwn text: no mention, channel broadcast or link can be formed."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# Links and images need `[...]`, autolinks and HTML `<...>`; also emphasis, code and headings.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]#~<>])")


def teams_escape(text: str) -> str:
    """Backslash-escape the Markdown (and HTML) metacharacters that form links, images, tags and emphasis,
    so a Teams card shows the text literally."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


def slack_body(n: Notification) -> dict[str, Any]:
    """Block Kit message; `text` is the notification fallback Slack requires alongside blocks."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _clip(n.title, 150), "emoji": True}},
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": _clip(f"{_EMOJI[n.severity]} {slack_escape(n.text)}", 3000)},
        },
    ]
    if n.facts:
        blocks.append(
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": _clip(f"*{slack_escape(label)}*\n{slack_escape(value)}", 2000)}
                    for label, value in n.facts[:10]
                ],
            }
        )
    blocks.append(
        {
            "type": "context",
            "elements": [
                {"type": "mrkdwn", "text": slack_escape(f"{n.severity} · {n.event_type} · {n.event_id}")}
            ],
        }
    )
    return {"text": _clip(slack_escape(f"[{n.severity}] {n.title}: {n.text}"), 3000), "blocks": blocks}


def teams_body(n: Notification) -> dict[str, Any]:
    """A message with one Adaptive Card attachment (what Teams incoming webhooks and Workflows accept)."""
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": [
            {
                "type": "TextBlock",
                "text": teams_escape(n.title),
                "weight": "Bolder",
                "size": "Medium",
                "wrap": True,
                "color": _CARD_COLOR[n.severity],
            },
            {"type": "TextBlock", "text": teams_escape(n.text), "wrap": True},
            {
                "type": "FactSet",
                "facts": [
                    {"title": teams_escape(label), "value": teams_escape(value)} for label, value in n.facts
                ],
            },
            {
                "type": "TextBlock",
                "text": teams_escape(f"{n.severity} · {n.event_type}"),
                "isSubtle": True,
                "size": "Small",
            },
        ],
    }
    return {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}
        ],
    }


def telegram_body(n: Notification, chat_id: str) -> dict[str, Any]:
    """sendMessage parameters; HTML parse mode with every dynamic part escaped (4096 characters at most)."""
    lines = [f"<b>{html.escape(n.title)}</b>", html.escape(n.text)]
    lines += [f"<b>{html.escape(label)}:</b> {html.escape(value)}" for label, value in n.facts]
    lines.append(f"<i>{html.escape(n.severity)} · {html.escape(n.event_type)}</i>")
    text = "\n".join(lines)
    if len(text) > 4096:
        text = html.escape(_clip(f"{n.title}\n{n.text}", 4000))
    return {"chat_id": chat_id, "text": text, "parse_mode": "HTML", "disable_web_page_preview": True}


_SPACES = re.compile(r"\s{4,}")


def _template_param(text: str) -> str:
    # WhatsApp rejects template parameters with newlines, tabs or more than 4 consecutive spaces.
    return _clip(_SPACES.sub("   ", text.replace("\n", " ").replace("\t", " ")).strip() or "-", 1024)


def whatsapp_body(n: Notification, to: str, template: str, language: str) -> dict[str, Any]:
    """A template message: body parameters {{1}} = title, {{2}} = text (an approved template must take them)."""
    return {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": "template",
        "template": {
            "name": template,
            "language": {"code": language},
            "components": [
                {
                    "type": "body",
                    "parameters": [
                        {"type": "text", "text": _template_param(f"[{n.severity}] {n.title}")},
                        {"type": "text", "text": _template_param(n.text)},
                    ],
                }
            ],
        },
    }


def email_message(n: Notification, sender: str, to: list[str]) -> EmailMessage:
    """A plain-text email."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(to)
    subject = " ".join(f"[Leaky Tokens] {n.severity}: {n.title}".split())  # no header line breaks
    message["Subject"] = _clip(subject, 200)
    facts = "\n".join(f"{label}: {value}" for label, value in n.facts)
    message.set_content(f"{n.text}\n\n{facts}\n\n{n.event_type} {n.event_id}\n")
    return message


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where the platform APIs live (configurable so tests and proxies can point elsewhere)."""

    telegram_base: str
    whatsapp_base: str
    whatsapp_version: str
    email_sender: str


def render(
    channel: str,
    n: Notification,
    webhook_body: bytes,
    url: str | None,
    config: dict[str, Any],
    secrets: dict[str, str],
    endpoints: Endpoints,
    message_id: str = "",
) -> HttpOut | EmailOut:
    """The request a subscription of `channel` makes for notification `n`; `message_id` (the same on every
    retry) is the signed `webhook-id` of a webhook."""
    json_headers = {"Content-Type": "application/json"}
    match channel:
        case "slack" | "teams":
            assert url is not None
            body = slack_body(n) if channel == "slack" else teams_body(n)
            return HttpOut(url, orjson.dumps(body), json_headers)
        case "telegram":
            token = secrets["bot_token"]
            return HttpOut(
                f"{endpoints.telegram_base.rstrip('/')}/bot{token}/sendMessage",
                orjson.dumps(telegram_body(n, str(config["chat_id"]))),
                json_headers,
                redact=(token,),
            )
        case "whatsapp":
            token = secrets["access_token"]
            body = whatsapp_body(
                n, config["to"], config.get("template", "leaky_tokens_alert"), config.get("language", "en_US")
            )
            return HttpOut(
                f"{endpoints.whatsapp_base.rstrip('/')}/{endpoints.whatsapp_version}/{config['phone_number_id']}/messages",
                orjson.dumps(body),
                {**json_headers, "Authorization": f"Bearer {token}"},
                redact=(token,),
            )
        case "email":
            return EmailOut(email_message(n, endpoints.email_sender, list(config["to"])))
        case _:
            assert url is not None
            headers = {**json_headers, "X-LT-Event-Type": n.event_type}
            secret = secrets.get("secret")
            if secret:
                headers.update(signed_headers(secret, message_id, webhook_body))
            return HttpOut(url, webhook_body, headers, redact=(secret,) if secret else ())
