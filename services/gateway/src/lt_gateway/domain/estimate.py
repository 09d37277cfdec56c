"""What a request can cost beyond its text: tools, response schemas, images, several choices.

Reservations must cover the bill, so every part of a prompt a provider bills is counted (tools and schemas
as their JSON, which is longer than the forms providers render them in), images by each provider's rule,
and the output budget once per generated choice (`n`, or `best_of` for legacy completions). What cannot be
estimated (audio, files) is refused with a 400 rather than admitted on a guess.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson

from leaky_common.errors import InvalidRequest
from lt_gateway.domain.images import ImagePart, image_part, image_tokens
from lt_gateway.domain.tokens import text_tokens

# OpenAI's framing around the tool definitions and around each one (measured: a few tokens each).
_TOOLS_FRAMING, _PER_TOOL = 12, 8
# Anthropic adds a tool-use system prompt whenever tools are offered (346 tokens, its documented maximum).
TOOL_SYSTEM_PROMPT = {"anthropic": 346}
# OpenAI's limits: chat n up to 128, completions best_of up to 20.
MAX_N, MAX_BEST_OF = 128, 20
_UNESTIMATED_PARTS = {"input_audio": "audio input", "file": "file inputs", "audio": "audio input"}


@dataclass(frozen=True, slots=True)
class Extras:
    """What a chat prompt holds beside its messages' text."""

    tokens: int = 0
    images: tuple[ImagePart, ...] = ()
    tools: bool = False


NO_EXTRAS = Extras()


@lru_cache(maxsize=4096)
def _cached_tokens(text: str) -> int:
    return text_tokens(text)


def _json_tokens(value: Any) -> int:
    # Agents send the same tool definitions and schemas with every request: count each once.
    return _cached_tokens(orjson.dumps(value).decode())


def _tools_tokens(body: dict[str, Any]) -> tuple[int, bool]:
    total, offered = 0, False
    for field in ("tools", "functions"):
        items = body.get(field)
        if items is None:
            continue
        if not isinstance(items, list):
            raise InvalidRequest(f"{field} must be an array", param=field)
        if items:
            offered = True
            total += _TOOLS_FRAMING + sum(_PER_TOOL + _json_tokens(item) for item in items)
    for field in ("tool_choice", "function_call"):
        if isinstance(body.get(field), dict):
            total += _json_tokens(body[field])
    return total, offered


def _response_format_tokens(body: dict[str, Any]) -> int:
    fmt = body.get("response_format")
    if fmt is None:
        return 0
    if not isinstance(fmt, dict):
        raise InvalidRequest("response_format must be an object", param="response_format")
    if fmt.get("type") == "json_schema":
        return _TOOLS_FRAMING + _json_tokens(fmt.get("json_schema") or {})
    return 0


def _refuse_audio(body: dict[str, Any]) -> None:
    modalities = body.get("modalities")
    if body.get("audio") is not None or (isinstance(modalities, list) and "audio" in modalities):
        raise InvalidRequest(
            "audio output cannot be estimated before the call, so the gateway does not offer it",
            param="modalities",
            code="unsupported_value",
        )


def _images(messages: list[dict[str, Any]]) -> tuple[ImagePart, ...]:
    images: list[ImagePart] = []
    for i, m in enumerate(messages):
        content = m.get("content")
        if not isinstance(content, list):
            continue
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            where = f"messages[{i}].content[{j}]"
            if kind in _UNESTIMATED_PARTS:
                raise InvalidRequest(
                    f"{_UNESTIMATED_PARTS[kind]} cannot be estimated before the call, so the gateway "
                    "does not offer it",
                    param=where,
                    code="unsupported_value",
                )
            if kind == "image_url" and isinstance(part, dict):
                images.append(image_part(part, where))
    return tuple(images)


def chat_extras(body: dict[str, Any], messages: list[dict[str, Any]]) -> Extras:
    """Tools, functions and response schema tokens, the images, and whether tools are offered (400 for
    what cannot be estimated)."""
    _refuse_audio(body)
    tools, offered = _tools_tokens(body)
    return Extras(tools + _response_format_tokens(body), _images(messages), offered)


def _count(body: dict[str, Any], name: str, high: int) -> int:
    value = body.get(name, 1)
    if value is None:
        return 1
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= high:
        raise InvalidRequest(f"{name} must be an integer from 1 to {high}", param=name, code="invalid_value")
    return value


def choices(body: dict[str, Any], kind: str, stream: bool) -> tuple[int, int]:
    """`n` and the number of choices generated (and billed): `n`, or `best_of` for legacy completions."""
    n = _count(body, "n", MAX_N)
    if kind != "completion":
        if body.get("best_of") is not None:
            raise InvalidRequest("best_of is only for /v1/completions", param="best_of")
        return n, n
    best_of = _count(body, "best_of", MAX_BEST_OF) if body.get("best_of") is not None else n
    if best_of < n:
        raise InvalidRequest("best_of must be greater than or equal to n", param="best_of")
    if stream and best_of > 1 and best_of != n:
        raise InvalidRequest("best_of cannot be used with stream", param="best_of")
    return n, best_of


def prompt_for(prompt_tokens: int, extras: Extras, provider: str, model: str = "") -> int:
    """The prompt as `provider` bills it for `model`: text, tools and schemas, its tool prompt, its image
    rule."""
    tool_prompt = TOOL_SYSTEM_PROMPT.get(provider, 0) if extras.tools else 0
    return prompt_tokens + tool_prompt + image_tokens(extras.images, provider, model)
