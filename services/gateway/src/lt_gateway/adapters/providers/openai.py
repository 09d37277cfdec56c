"""OpenAI wire format: OpenAI, Azure OpenAI, Qwen (DashScope compatible mode) and any OpenAI-compatible server
(vLLM, Ollama, Groq, DeepSeek, ...). Requests pass through; usage is read from the answer."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import orjson

from leaky_common.errors import UpstreamError
from lt_gateway.adapters.providers.base import Completion, StreamChunk, Usage
from lt_gateway.adapters.providers.http import UpstreamHTTP, sse_events
from lt_gateway.domain.models import ModelSpec
from lt_gateway.domain.tokens import text_tokens


def parse_usage(raw: Any) -> Usage | None:
    """OpenAI `usage` (cached tokens from prompt_tokens_details, or DeepSeek's prompt_cache_hit_tokens)."""
    if not isinstance(raw, dict) or "prompt_tokens" not in raw:
        return None
    details = raw.get("prompt_tokens_details") or {}
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    if cached is None:
        cached = raw.get("prompt_cache_hit_tokens")
    return Usage(int(raw["prompt_tokens"]), int(raw.get("completion_tokens") or 0), int(cached or 0))


def chunk_tokens(chunk: dict[str, Any]) -> int:
    """Tokens of the content a chunk carries (text, refusal, tool-call arguments)."""
    total = 0
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        text = choice.get("text")
        if isinstance(text, str):
            total += text_tokens(text)
        for key in ("content", "refusal", "reasoning_content"):
            value = delta.get(key)
            if isinstance(value, str):
                total += text_tokens(value)
        for call in delta.get("tool_calls") or ():
            fn = call.get("function") or {}
            total += text_tokens(fn.get("name") or "") + text_tokens(fn.get("arguments") or "")
    return total


class OpenAIProvider:
    """One adapter for every OpenAI-shaped API; `azure=True` switches URL scheme and auth header."""

    def __init__(self, http: UpstreamHTTP, *, azure: bool = False) -> None:
        self._http = http
        self._azure = azure
        self._headers: dict[str, dict[str, str]] = {}

    def _auth(self, spec: ModelSpec) -> dict[str, str]:
        cached = self._headers.get(spec.name)
        if cached is None:
            key = os.environ.get(spec.api_key_env) if spec.api_key_env else None
            if not key:
                cached = {}
            elif self._azure:
                cached = {"api-key": key}
            else:
                cached = {"authorization": f"Bearer {key}"}
            self._headers[spec.name] = cached
        return cached

    def _url(self, spec: ModelSpec, path: str) -> str:
        base = spec.resolved_base_url()
        if self._azure:
            version = spec.api_version or "2024-10-21"
            return f"{base}/openai/deployments/{spec.upstream_model}/{path}?api-version={version}"
        return f"{base}/{path}"

    async def _call(self, spec: ModelSpec, path: str, body: dict[str, Any]) -> Completion:
        data = await self._http.post_json(spec, self._url(spec, path), self._auth(spec), body)
        usage = parse_usage(data.get("usage"))
        if usage is None:
            raise UpstreamError(f"{spec.provider} answered without usage", code="upstream_no_usage")
        return Completion(data, usage)

    async def complete(self, spec: ModelSpec, body: dict[str, Any]) -> Completion:
        """`POST /chat/completions`."""
        return await self._call(spec, "chat/completions", body)

    async def text_complete(self, spec: ModelSpec, body: dict[str, Any]) -> Completion:
        """`POST /completions`."""
        return await self._call(spec, "completions", body)

    async def embed(self, spec: ModelSpec, body: dict[str, Any]) -> Completion:
        """`POST /embeddings` (usage has prompt tokens only)."""
        return await self._call(spec, "embeddings", body)

    def stream(self, spec: ModelSpec, body: dict[str, Any]) -> AsyncIterator[StreamChunk]:
        """Chat chunks as they arrive; the usage chunk (asked for with stream_options) carries usage."""
        return self._stream(spec, "chat/completions", body)

    def text_stream(self, spec: ModelSpec, body: dict[str, Any]) -> AsyncIterator[StreamChunk]:
        """`text_completion` chunks as they arrive, usage chunk last."""
        return self._stream(spec, "completions", body)

    async def _stream(self, spec: ModelSpec, path: str, body: dict[str, Any]) -> AsyncIterator[StreamChunk]:
        body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        url = self._url(spec, path)
        async with self._http.request(spec, url, self._auth(spec), body, stream=True) as resp:
            async for _event, data in sse_events(resp):
                if data == b"[DONE]":
                    return
                try:
                    chunk = orjson.loads(data)
                except orjson.JSONDecodeError as exc:
                    raise UpstreamError(f"{spec.provider} sent an invalid stream chunk") from exc
                if "error" in chunk:
                    raise UpstreamError(f"{spec.provider}: {chunk['error']}", code="upstream_stream_error")
                # Groq reports stream usage under x_groq.usage on the last chunk.
                raw_usage = chunk.get("usage") or (chunk.get("x_groq") or {}).get("usage")
                yield StreamChunk(chunk, chunk_tokens(chunk), parse_usage(raw_usage))
