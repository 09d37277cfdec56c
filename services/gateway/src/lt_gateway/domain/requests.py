"""Validation of the OpenAI requests the gateway governs; OpenAI-shaped 400s for anything it relies on.

Fields the gateway does not need pass through to the provider untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson

from leaky_common.errors import InvalidRequest, PayloadTooLarge
from lt_gateway.domain.estimate import NO_EXTRAS, Extras, chat_extras, choices, prompt_for
from lt_gateway.domain.fingerprint import prompt_digest
from lt_gateway.domain.tokens import estimate_input_tokens, estimate_prompt_tokens

Kind = Literal["chat", "completion", "embedding"]


@dataclass(frozen=True, slots=True)
class GovernanceHeaders:
    """The request headers that steer governance."""

    session_id: str | None
    privacy: str | None
    priority: str | None


def _token(value: str | None, name: str) -> str | None:
    # Quota decides what a mode or priority means; the gateway only rejects junk.
    if value is None:
        return None
    value = value.strip().lower()
    if not value or len(value) > 32 or not value.replace("-", "").replace("_", "").isalnum():
        raise InvalidRequest(f"{name} must be a short word such as 'strict' or 'critical'", param=name)
    return value


def governance(session_id: str | None, privacy: str | None, priority: str | None) -> GovernanceHeaders:
    """`X-Session-ID` (or `?session_id=`), `X-Privacy-Mode`, `X-Project-Priority` as sent, validated."""
    if session_id is not None and (len(session_id) > 128 or not session_id.isprintable()):
        raise InvalidRequest("X-Session-ID must be at most 128 printable characters", param="X-Session-ID")
    return GovernanceHeaders(
        session_id or None, _token(privacy, "X-Privacy-Mode"), _token(priority, "X-Project-Priority")
    )


def _positive_int(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidRequest(f"{name} must be a positive integer", param=name, code="invalid_value")
    return value


def _number(body: dict[str, Any], name: str, low: float, high: float) -> None:
    value = body.get(name)
    if value is None:
        return
    if not isinstance(value, int | float) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidRequest(f"{name} must be a number between {low:g} and {high:g}", param=name)


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    """A validated request and what governance needs from it."""

    kind: Kind
    body: dict[str, Any]
    model: str
    stream: bool
    include_usage: bool
    max_output_tokens: int | None
    max_tokens_field: str
    # Text, tools and schemas (the same for every provider); `estimated_prompt` adds images and tool prompts.
    prompt_tokens: int
    # Unkeyed, so it never leaves the process: events carry `Fingerprinter.fingerprint` of it.
    digest: bytes
    n: int = 1
    # Choices generated and billed: `n`, or `best_of` for legacy completions.
    generated: int = 1
    extras: Extras = NO_EXTRAS

    def estimated_prompt(self, provider: str, model: str = "") -> int:
        """The prompt tokens `provider` bills for this request to `model` (its image rule and tool prompt)."""
        return prompt_for(self.prompt_tokens, self.extras, provider, model)


def load_body(raw: bytes, max_bytes: int) -> dict[str, Any]:
    """The JSON object of a request body (413 / 400 otherwise)."""
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"request body exceeds {max_bytes} bytes")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest("request body is not valid JSON", code="invalid_json") from exc
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object", code="invalid_json")
    return body


def model_of(body: dict[str, Any]) -> str:
    """The `model` field (400 if missing)."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest(
            "you must provide a model parameter", param="model", code="missing_required_parameter"
        )
    return model


def _common(body: dict[str, Any]) -> tuple[bool, bool, int | None, str]:
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequest("stream must be a boolean", param="stream")
    _number(body, "temperature", 0, 2)
    _number(body, "top_p", 0, 1)
    _number(body, "presence_penalty", -2, 2)
    _number(body, "frequency_penalty", -2, 2)
    field = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_out = _positive_int(body, field)
    opts = body.get("stream_options")
    if opts is not None and not isinstance(opts, dict):
        raise InvalidRequest("stream_options must be an object", param="stream_options")
    include_usage = bool(stream and opts and opts.get("include_usage"))
    return stream, include_usage, max_out, field


def parse_chat(body: dict[str, Any]) -> ParsedRequest:
    """`/v1/chat/completions`."""
    model = model_of(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest(
            "messages must be a non-empty array", param="messages", code="missing_required_parameter"
        )
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise InvalidRequest(f"messages[{i}] must be an object with a role", param=f"messages[{i}]")
        content = m.get("content")
        if content is not None and not isinstance(content, str | list):
            raise InvalidRequest(
                f"messages[{i}].content must be a string or an array", param=f"messages[{i}]"
            )
    stream, include_usage, max_out, field = _common(body)
    extras = chat_extras(body, messages)
    n, generated = choices(body, "chat", stream)
    return ParsedRequest(
        "chat", body, model, stream, include_usage, max_out, field,
        estimate_prompt_tokens(messages) + extras.tokens, prompt_digest(model, messages[-3:]),
        n, generated, extras,
    )  # fmt: skip


def parse_completion(body: dict[str, Any]) -> ParsedRequest:
    """`/v1/completions`."""
    model = model_of(body)
    prompt = body.get("prompt")
    if not isinstance(prompt, str | list) or not prompt:
        raise InvalidRequest("prompt must be a non-empty string or array", param="prompt")
    stream, include_usage, max_out, field = _common(body)
    if field == "max_completion_tokens":
        field = "max_tokens"
    n, generated = choices(body, "completion", stream)
    # A list of prompts (strings or token-id lists) is a batch: each prompt gets its own choices.
    if isinstance(prompt, list) and not all(isinstance(p, int) for p in prompt):
        generated *= len(prompt)
    return ParsedRequest(
        "completion", body, model, stream, include_usage, max_out, field,
        estimate_input_tokens(prompt), prompt_digest(model, prompt), n, generated,
    )  # fmt: skip


def parse_embedding(body: dict[str, Any]) -> ParsedRequest:
    """`/v1/embeddings`."""
    model = model_of(body)
    value = body.get("input")
    if not isinstance(value, str | list) or not value:
        raise InvalidRequest("input must be a non-empty string or array", param="input")
    if isinstance(value, list) and not all(isinstance(v, str | int | list) for v in value):
        raise InvalidRequest("input must be strings or arrays of token ids", param="input")
    if body.get("encoding_format", "float") not in ("float", "base64"):
        raise InvalidRequest("encoding_format must be 'float' or 'base64'", param="encoding_format")
    return ParsedRequest(
        "embedding", body, model, False, False, None, "",
        estimate_input_tokens(value), prompt_digest(model, value),
    )  # fmt: skip


PARSERS = {"chat": parse_chat, "completion": parse_completion, "embedding": parse_embedding}
