"""What a provider answers, in OpenAI's shape: token usage, a whole completion, or one stream chunk."""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Usage:
    """Provider-reported token usage. `prompt_tokens` includes cached and cache-written prompt tokens."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    def openai(self) -> dict[str, Any]:
        """The `usage` object in OpenAI's shape."""
        out: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }
        if self.cached_tokens:
            out["prompt_tokens_details"] = {"cached_tokens": self.cached_tokens}
        return out


@dataclass(frozen=True, slots=True)
class Completion:
    """A non-streamed answer in OpenAI's shape (`chat.completion`, `text_completion` or an embedding list)."""

    body: dict[str, Any]
    usage: Usage


def chat_completion(
    completion_id: str,
    model: str,
    created: int,
    text: str,
    tool_calls: list[dict[str, Any]],
    finish_reason: str,
    usage: Usage,
) -> Completion:
    """A translated provider answer (Anthropic, Gemini) as OpenAI's `chat.completion` with one choice."""
    message: dict[str, Any] = {"role": "assistant", "content": text or None, "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    body = {
        "id": f"chatcmpl-{completion_id}",
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
        "usage": usage.openai(),
    }
    return Completion(body, usage)


@dataclass(slots=True)
class StreamChunk:
    """One `chat.completion.chunk`; `completion_tokens` counts its content for when no usage comes.

    `usage` is the final usage (on the last chunk). `prompt_usage` is the prompt side when a provider reports
    it up front (Anthropic's message_start), so a stream cut short is charged the exact prompt.
    """

    body: dict[str, Any]
    completion_tokens: int = 0
    usage: Usage | None = None
    prompt_usage: Usage | None = None


def base64_embeddings(body: dict[str, Any]) -> dict[str, Any]:
    """An embedding list with each vector as base64 of little-endian float32s (OpenAI's `base64` format);
    vectors the provider already sent as base64 stay as they are."""
    for item in body.get("data") or ():
        vector = item.get("embedding") if isinstance(item, dict) else None
        if isinstance(vector, list):
            item["embedding"] = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return body
