"""The built-in `mock` provider: offline, deterministic, OpenAI wire format (streaming and usage included)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

from lt_gateway.adapters.providers.base import Completion, StreamChunk, Usage
from lt_gateway.domain.models import ModelSpec
from lt_gateway.domain.tokens import (
    estimate_input_tokens,
    estimate_prompt_tokens,
    last_user_text,
    text_tokens,
)

_PREFIX = "This is mock-gpt, a deterministic offline model. You said:"
_MAX_ECHO_WORDS = 24


def reply_words(messages: list[dict[str, Any]], max_tokens: int) -> tuple[list[str], int, str]:
    """The reply's words (each with its leading space), their token count and the finish reason."""
    echo = last_user_text(messages).split()[:_MAX_ECHO_WORDS]
    words = [*_PREFIX.split(), *(echo or ["nothing"])]
    out: list[str] = []
    used = 0
    for i, word in enumerate(words):
        piece = word if i == 0 else " " + word
        cost = text_tokens(piece)
        if used + cost > max_tokens:
            return out, used, "length"
        out.append(piece)
        used += cost
    return out, used, "stop"


def _choices(body: dict[str, Any]) -> int:
    return int(body.get("n") or 1)


class MockProvider:
    """Answers every request from the prompt alone; `latency_s` simulates upstream time."""

    def __init__(self, latency_s: float = 0.0) -> None:
        self._latency_s = latency_s

    async def complete(self, spec: ModelSpec, body: dict[str, Any]) -> Completion:
        """A full `chat.completion`."""
        if self._latency_s:
            await asyncio.sleep(self._latency_s)
        messages = body["messages"]
        words, completion_tokens, finish = reply_words(
            messages,
            int(body.get("max_completion_tokens") or body.get("max_tokens") or spec.max_output_tokens),
        )
        n = _choices(body)
        usage = Usage(estimate_prompt_tokens(messages), completion_tokens * n)
        message = {"role": "assistant", "content": "".join(words), "refusal": None}
        return Completion(
            {
                "id": f"chatcmpl-{uuid4().hex}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": spec.upstream_model,
                "system_fingerprint": "fp_mock",
                "choices": [
                    {"index": i, "message": dict(message), "logprobs": None, "finish_reason": finish}
                    for i in range(n)
                ],
                "usage": {
                    "prompt_tokens": usage.prompt_tokens,
                    "completion_tokens": usage.completion_tokens,
                    "total_tokens": usage.total_tokens,
                },
            },
            usage,
        )

    async def stream(self, spec: ModelSpec, body: dict[str, Any]) -> AsyncIterator[StreamChunk]:
        """Role chunk, one chunk per word, a finish chunk, then a usage chunk with empty choices."""
        messages = body["messages"]
        words, completion_tokens, finish = reply_words(
            messages,
            int(body.get("max_completion_tokens") or body.get("max_tokens") or spec.max_output_tokens),
        )
        base = {
            "id": f"chatcmpl-{uuid4().hex}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": spec.upstream_model,
            "system_fingerprint": "fp_mock",
        }

        def chunk(delta: dict[str, Any], index: int, finish_reason: str | None = None) -> dict[str, Any]:
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return {**base, "choices": [choice]}

        n = _choices(body)
        for i in range(n):
            yield StreamChunk(chunk({"role": "assistant", "content": ""}, i))
        for word in words:
            if self._latency_s:
                await asyncio.sleep(self._latency_s / max(len(words), 1))
            else:
                await asyncio.sleep(0)
            for i in range(n):
                yield StreamChunk(chunk({"content": word}, i), completion_tokens=text_tokens(word))
        for i in range(n):
            yield StreamChunk(chunk({}, i, finish))
        usage = Usage(estimate_prompt_tokens(messages), completion_tokens * n)
        yield StreamChunk(
            {
                **base,
                "choices": [],
                "usage": {
                    "prompt_tokens": usage.prompt_tokens,
                    "completion_tokens": usage.completion_tokens,
                    "total_tokens": usage.total_tokens,
                },
            },
            usage=usage,
        )

    async def text_complete(self, spec: ModelSpec, body: dict[str, Any]) -> Completion:
        """A `text_completion` answering the prompt like the chat mock does."""
        prompt = body.get("prompt")
        text = prompt if isinstance(prompt, str) else " ".join(str(p) for p in prompt or ())
        chat = await self.complete(spec, {**body, "messages": [{"role": "user", "content": text}], "n": 1})
        choice = chat.body["choices"][0]
        # Like OpenAI: best_of choices are generated (and billed), the best n returned.
        billed = int(body.get("best_of") or _choices(body))
        usage = Usage(estimate_input_tokens(prompt), chat.usage.completion_tokens * billed)
        out = {
            "id": f"cmpl-{uuid4().hex}",
            "object": "text_completion",
            "created": chat.body["created"],
            "model": spec.upstream_model,
            "choices": [
                {
                    "index": i,
                    "text": choice["message"]["content"],
                    "logprobs": None,
                    "finish_reason": choice["finish_reason"],
                }
                for i in range(_choices(body))
            ],
            "usage": usage.openai(),
        }
        return Completion(out, usage)

    async def text_stream(self, spec: ModelSpec, body: dict[str, Any]) -> AsyncIterator[StreamChunk]:
        """The chat mock's stream as `text_completion` chunks."""
        prompt = body.get("prompt")
        text = prompt if isinstance(prompt, str) else " ".join(str(p) for p in prompt or ())
        chat_body = {**body, "messages": [{"role": "user", "content": text}]}
        base = {"id": f"cmpl-{uuid4().hex}", "object": "text_completion", "created": int(time.time()),
                "model": spec.upstream_model}  # fmt: skip
        async for chunk in self.stream(spec, chat_body):
            if chunk.usage is not None:
                usage = Usage(estimate_input_tokens(prompt), chunk.usage.completion_tokens)
                yield StreamChunk({**base, "choices": [], "usage": usage.openai()}, usage=usage)
                continue
            choice = chunk.body["choices"][0]
            content = choice["delta"].get("content") or ""
            if not content and not choice["finish_reason"]:
                continue
            out = {"index": choice["index"], "text": content, "logprobs": None,
                   "finish_reason": choice["finish_reason"]}  # fmt: skip
            yield StreamChunk({**base, "choices": [out]}, chunk.completion_tokens)

    async def embed(self, spec: ModelSpec, body: dict[str, Any]) -> Completion:
        """Deterministic 8-dimensional embeddings derived from each input's hash."""
        raw = body.get("input")
        inputs = (
            [raw]
            if isinstance(raw, str) or (isinstance(raw, list) and raw and isinstance(raw[0], int))
            else raw
        )
        data = []
        for i, item in enumerate(inputs or ()):
            digest = hashlib.blake2b(str(item).encode(), digest_size=8).digest()
            data.append({"object": "embedding", "index": i, "embedding": [b / 255 for b in digest]})
        tokens = estimate_input_tokens(raw)
        usage = Usage(tokens, 0)
        out = {
            "object": "list",
            "data": data,
            "model": spec.upstream_model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return Completion(out, usage)
