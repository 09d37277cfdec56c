"""Google Gemini (Generative Language API): OpenAI chat requests become `generateContent` requests;
answers and the `streamGenerateContent?alt=sse` stream become `chat.completion`(`.chunk`)s."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from typing import Any
from uuid import uuid4

import orjson

from leaky_common.errors import InvalidRequest, UpstreamError
from lt_gateway.adapters.providers.base import ChatOnly, Completion, StreamChunk, Usage
from lt_gateway.adapters.providers.http import UpstreamHTTP, sse_events
from lt_gateway.domain.models import ModelSpec
from lt_gateway.domain.tokens import content_text, text_tokens
from lt_gateway.domain.usage import chat_completion

FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
}


def _function_call_parts(m: dict[str, Any], call_names: dict[str, str]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for call in m.get("tool_calls") or ():
        fn = call.get("function") or {}
        call_names[str(call.get("id"))] = str(fn.get("name"))
        try:
            args = orjson.loads(fn.get("arguments") or "{}")
        except orjson.JSONDecodeError as exc:
            raise InvalidRequest("tool call arguments must be JSON", param="messages") from exc
        parts.append({"functionCall": {"name": fn.get("name"), "args": args}})
    return parts


def _contents(chat: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """System prompts (Gemini takes them apart) and the contents, tool results as function responses."""
    system: list[str] = []
    contents: list[dict[str, Any]] = []
    # Gemini answers a function call by name; OpenAI's tool messages name only the call id.
    call_names: dict[str, str] = {}
    for m in chat:
        role = m.get("role")
        text = content_text(m.get("content"))
        if role in ("system", "developer"):
            system.append(text)
            continue
        if role == "tool":
            name = call_names.get(str(m.get("tool_call_id")), "tool")
            response = {"name": name, "response": {"content": text}}
            contents.append({"role": "user", "parts": [{"functionResponse": response}]})
            continue
        parts: list[dict[str, Any]] = [{"text": text}] if text else []
        parts += _function_call_parts(m, call_names)
        contents.append(
            {"role": "model" if role == "assistant" else "user", "parts": parts or [{"text": ""}]}
        )
    return system, contents


def _generation_config(body: dict[str, Any]) -> dict[str, Any]:
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
    fmt = body.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
    return config


def _tool_options(body: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's `tools` and `tool_choice` as Gemini's `tools` and `toolConfig`."""
    out: dict[str, Any] = {}
    tools = [
        t["function"] for t in body.get("tools") or () if isinstance(t, dict) and t.get("type") == "function"
    ]
    if tools:
        out["tools"] = [
            {
                "functionDeclarations": [
                    {k: v for k, v in fn.items() if k in ("name", "description", "parameters")}
                    for fn in tools
                ]
            }
        ]
    choice = body.get("tool_choice")
    if choice in ("none", "auto", "required"):
        mode = {"none": "NONE", "auto": "AUTO", "required": "ANY"}[choice]
        out["toolConfig"] = {"functionCallingConfig": {"mode": mode}}
    elif isinstance(choice, dict) and choice.get("function"):
        allowed = [choice["function"]["name"]]
        out["toolConfig"] = {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": allowed}}
    return out


def to_generate_request(body: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat request as a `generateContent` request."""
    system, contents = _contents(body["messages"])
    config = _generation_config(body)
    out: dict[str, Any] = {"contents": contents, **_tool_options(body)}
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


def _candidate(data: dict[str, Any]) -> tuple[str, list[dict[str, Any]], str | None]:
    """Text, function calls (as OpenAI tool calls) and finish reason of the first candidate."""
    candidates = data.get("candidates") or [{}]
    cand = candidates[0]
    parts = (cand.get("content") or {}).get("parts") or ()
    text = "".join(p.get("text", "") for p in parts if not p.get("thought"))
    calls = [
        {
            "id": f"call_{uuid4().hex[:24]}",
            "type": "function",
            "function": {
                "name": p["functionCall"].get("name"),
                "arguments": orjson.dumps(p["functionCall"].get("args") or {}).decode(),
            },
        }
        for p in parts
        if isinstance(p.get("functionCall"), dict)
    ]
    reason = cand.get("finishReason")
    finish = FINISH_REASONS.get(reason, "stop") if reason else None
    if calls and finish == "stop":
        finish = "tool_calls"
    return text, calls, finish


class GeminiProvider(ChatOnly):
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
        text, calls, finish = _candidate(data)
        completion_id = str(data.get("responseId") or uuid4().hex)
        return chat_completion(
            completion_id, spec.upstream_model, int(time.time()), text, calls, finish or "stop", usage
        )

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
        tool_index = 0
        async with self._http.request(
            spec, url, self._auth(spec), to_generate_request(body), stream=True
        ) as resp:
            yield StreamChunk(chunk({"role": "assistant", "content": ""}))
            async for _event, data in sse_events(resp):
                part = orjson.loads(data)
                if "error" in part:
                    raise UpstreamError(f"gemini: {part['error']}", code="upstream_stream_error")
                meta = part.get("usageMetadata") or meta
                text, calls, finish = _candidate(part)
                if text:
                    yield StreamChunk(chunk({"content": text}), text_tokens(text))
                if calls:
                    delta = [{"index": tool_index + i, **c} for i, c in enumerate(calls)]
                    tool_index += len(calls)
                    counted = sum(text_tokens(c["function"]["arguments"]) for c in calls)
                    yield StreamChunk(chunk({"tool_calls": delta}), counted)
                if finish:
                    yield StreamChunk(chunk({}, finish))
        if meta is not None:
            usage = parse_usage(meta)
            yield StreamChunk({**base, "choices": [], "usage": usage.openai()}, usage=usage)
