"""True usage for the fake LLM providers: what the provider would bill, reckoned from the request body it
received (text, tools, response schemas, images by the provider's own rule, every generated choice).

It is written apart from the gateway's estimator on purpose: a test compares the two. Text is counted by a
`count` function the test chooses (whitespace words by default; a real tokenizer for exact figures).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Counter = Callable[[str], int]


def words(text: str) -> int:
    """The default text counter: whitespace-separated words."""
    return len(text.split())


@dataclass
class Reckoner:
    """Counts a request as its provider bills it. `remote_images` are the sizes of remote image URLs (the
    fake does not fetch them; a URL not listed is taken as 512x512)."""

    count: Counter = words
    remote_images: dict[str, tuple[int, int]] = field(default_factory=dict)

    def _json(self, value: Any) -> int:
        return self.count(json.dumps(value, separators=(",", ":")))

    def _size(self, url: str) -> tuple[int, int]:
        if url.startswith("data:"):
            return _png_size(url.partition(";base64,")[2]) or (512, 512)
        return self.remote_images.get(url, (512, 512))

    # -- OpenAI ------------------------------------------------------------------------------------------------

    def _openai_image(self, ref: dict[str, Any]) -> int:
        if ref.get("detail") == "low":
            return 85
        w, h = self._size(str(ref.get("url", "")))
        if max(w, h) > 2048:
            w, h = w * 2048 // max(w, h), h * 2048 // max(w, h)
        if min(w, h) > 768:
            w, h = w * 768 // min(w, h), h * 768 // min(w, h)
        return 85 + 170 * math.ceil(w / 512) * math.ceil(h / 512)

    def _openai_content(self, content: Any) -> int:
        if isinstance(content, str):
            return self.count(content)
        total = 0
        for part in content or ():
            if part.get("type") == "text":
                total += self.count(part.get("text", ""))
            elif part.get("type") == "image_url":
                total += self._openai_image(part.get("image_url") or {})
        return total

    def openai_prompt(self, path: str, body: dict[str, Any]) -> int:
        """Prompt tokens of a chat, completions or embeddings request."""
        if path != "chat/completions":
            value = body.get("prompt", body.get("input"))
            items = value if isinstance(value, list) else [value]
            return sum(len(v) if isinstance(v, list) else self.count(str(v)) for v in items)
        total = 3
        for m in body.get("messages") or ():
            total += 3 + self._openai_content(m.get("content"))
            for call in m.get("tool_calls") or ():
                fn = call.get("function") or {}
                total += self.count(fn.get("name", "")) + self.count(fn.get("arguments", ""))
        tools = body.get("tools") or []
        if tools:
            total += 10 + sum(3 + self._json(t) for t in tools)
        fmt = body.get("response_format") or {}
        if fmt.get("type") == "json_schema":
            total += 5 + self._json(fmt.get("json_schema") or {})
        return total

    # -- Anthropic ------------------------------------------------------------------------------------------------

    def _anthropic_image(self, source: dict[str, Any]) -> int:
        if source.get("type") == "base64":
            w, h = _png_size(str(source.get("data", ""))) or (512, 512)
        else:
            w, h = self.remote_images.get(str(source.get("url")), (512, 512))
        if max(w, h) > 1568:
            w, h = w * 1568 // max(w, h), h * 1568 // max(w, h)
        return min(1600, w * h // 750)

    def anthropic_prompt(self, body: dict[str, Any]) -> int:
        """Input tokens of a Messages request (its tool-use system prompt included when tools are offered)."""
        system = body.get("system") or ""
        total = self.count(system if isinstance(system, str) else json.dumps(system))
        for m in body.get("messages") or ():
            content = m.get("content")
            if isinstance(content, str):
                total += 3 + self.count(content)
                continue
            total += 3
            for block in content or ():
                if block.get("type") == "text":
                    total += self.count(block.get("text", ""))
                elif block.get("type") == "image":
                    total += self._anthropic_image(block.get("source") or {})
                else:
                    total += self._json(block)
        tools = body.get("tools") or []
        if tools:
            total += 346 + sum(self._json(t) for t in tools)
        return total


def generated(path: str, body: dict[str, Any]) -> int:
    """How many choices an OpenAI-shaped request generates (and is billed for): `n`, or `best_of`, for
    every prompt of a batch."""
    n = int(body.get("n") or 1)
    if path != "completions":
        return n
    prompt = body.get("prompt")
    batch = len(prompt) if isinstance(prompt, list) and not all(isinstance(p, int) for p in prompt) else 1
    return int(body.get("best_of") or n) * batch


def _png_size(b64: str) -> tuple[int, int] | None:
    try:
        head = base64.b64decode(b64[:44] + "=" * (-len(b64[:44]) % 4))
    except (binascii.Error, ValueError):
        return None
    if head[:8] != b"\x89PNG\r\n\x1a\n" or len(head) < 24:
        return None
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
