"""Google Gemini (Generative Language API): OpenAI chat requests become `generateContent` requests;
answers and the `streamGenerateContent?alt=sse` stream become `chat.completion`(`.chunk`)s."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

import orjson

from leaky_common.errors import UpstreamError
from lt_gateway.models import ModelSpec
from lt_gateway.providers.base import Completion, StreamChunk, Usage, unsupported
from lt_gateway.providers.http import UpstreamHTTP, sse_events
from lt_gateway.tokens import content_text, text_tokens

FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
}


def to_generate_request(body: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat request as a `generateContent` request."""
    system: list[str] = []
    contents: list[dict[str, Any]] = []
    for m in body["messages"]:
        role = m.get("role")
        text = content_text(m.get("content"))
        if role in ("system", "developer"):
            system.append(text)
            continue
        contents.append({"role": "model" if role == "assistant" else "user", "parts": [{"text": text}]})
    config: dict[str, Any] = {}
    max_out = body.get("max_completion_tokens") or body.get("max_tokens")
    if max_out:
        config["maxOutputTokens"] = max_out
    for ours, theirs in (("temperature", "temperature"), ("top_p", "topP"), ("seed", "seed")):
        if body.get(ours) is not None:
            config[theirs] = body[ours]
    stop = body.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    out: dict[str, Any] = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
    if config:
        out["generationConfig"] = config
    return out


def parse_usage(meta: dict[str, Any]) -> Usage:
    """usageMetadata: thinking tokens are billed as output; promptTokenCount includes cached content."""
    return Usage(
        int(meta.get("promptTokenCount") or 0),
        int(meta.get("candidatesTokenCount") or 0) + int(meta.get("thoughtsTokenCount") or 0),
        int(meta.get("cachedContentTokenCount") or 0),
    )


def _candidate(data: dict[str, Any]) -> tuple[str, str | None]:
    candidates = data.get("candidates") or [{}]
    cand = candidates[0]
    parts = (cand.get("content") or {}).get("parts") or ()
    text = "".join(p.get("text", "") for p in parts if not p.get("thought"))
    reason = cand.get("finishReason")
    return text, FINISH_REASONS.get(reason, "stop") if reason else None


class GeminiProvider:
    """`POST {base}/v1beta/models/{model}:generateContent` with `x-goog-api-key`."""

    def __init__(self, http: UpstreamHTTP) -> None:
        self._http = http
        self._headers: dict[str, dict[str, str]] = {}

    def _auth(self, spec: ModelSpec) -> dict[str, str]:
        cached = self._headers.get(spec.name)
        if cached is None:
            key = os.environ.get(spec.api_key_env) if spec.api_key_env else None
            cached = {"x-goog-api-key": key} if key else {}
            self._headers[spec.name] = cached
        return cached

    def _url(self, spec: ModelSpec, method: str) -> str:
        return f"{spec.resolved_base_url()}/v1beta/models/{spec.upstream_model}:{method}"

    async def complete(self, spec: ModelSpec, body: dict[str, Any]) -> Completion:
        """A non-streamed generateContent call."""
        data = await self._http.post_json(
            spec, self._url(spec, "generateContent"), self._auth(spec), to_generate_request(body)
        )
        if "usageMetadata" not in data:
            raise UpstreamError("gemini answered without usageMetadata", code="upstream_no_usage")
        usage = parse_usage(data["usageMetadata"])
        text, finish = _candidate(data)
        out = {
            "id": f"chatcmpl-{data.get('responseId') or uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": spec.upstream_model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None},
                    "logprobs": None,
                    "finish_reason": finish or "stop",
                }
            ],
            "usage": usage.openai(),
        }
        return Completion(out, usage)

    async def text_complete(self, spec: ModelSpec, body: dict[str, Any]) -> Completion:
        """Gemini has no legacy completions endpoint."""
        raise unsupported(spec, "/v1/completions")

    async def embed(self, spec: ModelSpec, body: dict[str, Any]) -> Completion:
        """Gemini embeddings report no usage; not offered through the gateway."""
        raise unsupported(spec, "/v1/embeddings")

    async def stream(self, spec: ModelSpec, body: dict[str, Any]) -> AsyncIterator[StreamChunk]:
        """Each SSE event is a partial GenerateContentResponse; the last usageMetadata is the final count."""
        url = self._url(spec, "streamGenerateContent") + "?alt=sse"
        base: dict[str, Any] = {
            "id": f"chatcmpl-{uuid4().hex}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": spec.upstream_model,
        }

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {
                **base,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            }

        meta: dict[str, Any] | None = None
        async with self._http.request(
            spec, url, self._auth(spec), to_generate_request(body), stream=True
        ) as resp:
            yield StreamChunk(chunk({"role": "assistant", "content": ""}))
            async for _event, data in sse_events(resp):
                part = orjson.loads(data)
                if "error" in part:
                    raise UpstreamError(f"gemini: {part['error']}", code="upstream_stream_error")
                meta = part.get("usageMetadata") or meta
                text, finish = _candidate(part)
                if text:
                    yield StreamChunk(chunk({"content": text}), text_tokens(text))
                if finish:
                    yield StreamChunk(chunk({}, finish))
        if meta is not None:
            usage = parse_usage(meta)
            yield StreamChunk({**base, "choices": [], "usage": usage.openai()}, usage=usage)
