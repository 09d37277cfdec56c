"""What each chat platform refuses: the checks the fakes apply to a payload, one function per platform."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

__all__ = ["slack_problems", "teams_problems", "telegram_problems", "whatsapp_problems"]

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
        problems += _slack_block_problems(block, f"blocks[{i}]")
    return problems


def _slack_block_problems(block: Any, where: str) -> list[str]:
    if not isinstance(block, dict):
        return [f"{where}: must be an object"]
    kind = block.get("type")
    problems: list[str] = []
    if kind == "header":
        problems += _text_object(block.get("text"), f"{where}.text", 150, plain_only=True)
    elif kind == "section":
        problems += _slack_section_problems(block, where)
    elif kind == "context":
        problems += _text_objects(block.get("elements"), f"{where}.elements", "elements", 3000)
    elif kind != "divider":
        problems.append(f"{where}: unsupported block type {kind!r}")
    extra = set(block) - {"type", "text", "fields", "elements", "block_id", "accessory"}
    if extra:
        problems.append(f"{where}: unknown keys {sorted(extra)}")
    return problems


def _slack_section_problems(block: dict[str, Any], where: str) -> list[str]:
    problems: list[str] = []
    if "text" not in block and "fields" not in block:
        problems.append(f"{where}: a section needs text or fields")
    if "text" in block:
        problems += _text_object(block["text"], f"{where}.text", 3000)
    if "fields" in block:
        problems += _text_objects(block["fields"], f"{where}.fields", "text objects", 2000)
    return problems


def _text_objects(items: Any, where: str, what: str, limit: int) -> list[str]:
    """A list of 1 to 10 text objects (section fields, context elements)."""
    if not isinstance(items, list) or not 1 <= len(items) <= 10:
        return [f"{where} must hold 1 to 10 {what}"]
    problems: list[str] = []
    for j, item in enumerate(items):
        problems += _text_object(item, f"{where}[{j}]", limit)
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
        problems += _teams_attachment_problems(att, f"attachments[{i}]")
    return problems


def _teams_attachment_problems(att: Any, where: str) -> list[str]:
    if not isinstance(att, dict):
        return [f"{where}: must be an object"]
    problems = []
    if att.get("contentType") != "application/vnd.microsoft.card.adaptive":
        problems.append(f"{where}.contentType must be application/vnd.microsoft.card.adaptive")
    card = att.get("content")
    if not isinstance(card, dict):
        return [*problems, f"{where}.content must be an Adaptive Card object"]
    if card.get("type") != "AdaptiveCard":
        problems.append(f"{where}.content.type must be 'AdaptiveCard'")
    if not isinstance(card.get("version"), str) or not _CARD_VERSION.match(card["version"]):
        problems.append(f"{where}.content.version must be '1.0' to '1.6'")
    schema = card.get("$schema")
    if schema is not None and schema != "http://adaptivecards.io/schemas/adaptive-card.json":
        problems.append(f"{where}.content.$schema is not the Adaptive Card schema")
    elements = card.get("body")
    if not isinstance(elements, list) or not elements:
        return [*problems, f"{where}.content.body must be a non-empty list"]
    for j, element in enumerate(elements):
        problems += _card_element_problems(element, f"{where}.content.body[{j}]")
    return problems


def _card_element_problems(element: Any, at: str) -> list[str]:
    kind = element.get("type") if isinstance(element, dict) else None
    if kind not in _CARD_ELEMENTS:
        return [f"{at}: unsupported element {kind!r}"]
    if kind == "TextBlock" and (not isinstance(element.get("text"), str) or not element["text"]):
        return [f"{at}.text must be a non-empty string"]
    if kind == "FactSet":
        facts = element.get("facts")
        if not isinstance(facts, list) or not all(
            isinstance(f, dict) and isinstance(f.get("title"), str) and isinstance(f.get("value"), str)
            for f in facts
        ):
            return [f"{at}.facts must be a list of {{title, value}} strings"]
    return []


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
    return problems + _template_problems(template)


def _template_problems(template: dict[str, Any]) -> list[str]:
    problems = []
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
            problems += _template_parameter_problems(param, i, j)
    return problems


def _template_parameter_problems(param: Any, i: int, j: int) -> list[str]:
    text = param.get("text") if isinstance(param, dict) else None
    if not isinstance(param, dict) or param.get("type") != "text" or not isinstance(text, str) or not text:
        return [f"(#100) components[{i}].parameters[{j}] must be a non-empty text parameter"]
    if "\n" in text or "\t" in text or "     " in text:
        return [f"(#132018) components[{i}].parameters[{j}]: no new lines, tabs or more than 4 spaces"]
    return []
