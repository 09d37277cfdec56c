"""Prompt token estimation for reservations.

An estimate only decides how much to reserve; settlement always uses the provider's reported usage.
This is a tokenizer-free approximation (about four characters a token, plus OpenAI's per-message framing);
the offline tiktoken encoder replaces it when present.
"""

from __future__ import annotations

from typing import Any

_PER_MESSAGE = 4
_REPLY_PRIMING = 3


def text_tokens(text: str) -> int:
    """Approximate tokens in a piece of text: one per word-ish chunk of up to four characters."""
    if not text:
        return 0
    total = 0
    for word in text.split():
        total += -(-len(word) // 4)
    return max(total, 1)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def estimate_prompt_tokens(messages: list[dict[str, Any]]) -> int:
    """Estimated prompt tokens of a chat request."""
    total = _REPLY_PRIMING
    for m in messages:
        total += (
            _PER_MESSAGE + text_tokens(_content_text(m.get("content"))) + text_tokens(str(m.get("name", "")))
        )
    return total


def last_user_text(messages: list[dict[str, Any]]) -> str:
    """The text of the last user message (the mock provider answers it)."""
    for m in reversed(messages):
        if m.get("role") == "user":
            return _content_text(m.get("content"))
    return ""
