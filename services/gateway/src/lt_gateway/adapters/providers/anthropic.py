"""Anthropic Messages API, translated both ways: OpenAI chat requests become Messages requests, and
Messages answers and stream events (message_start, content_block_*, message_delta, message_stop, ping,
error) become `chat.completion` bodies and `chat.completion.chunk`s."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from leaky_common.errors import InvalidRequest, UpstreamError
from lt_gateway.adapters.providers.base import ChatOnly, Completion, StreamChunk, Usage
from lt_gateway.adapters.providers.http import UpstreamHTTP, sse_events
from lt_gateway.domain.models import ModelSpec
from lt_gateway.domain.tokens import content_text, text_tokens
from lt_gateway.domain.usage import chat_completion

ANTHROPIC_VERSION = "2023-06-01"
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "stop",
}


def _parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    out: list[dict[str, Any]] = []
    for part in content or ():
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text":
            out.append({"type": "text", "text": str(part.get("text", ""))})
        elif part.get("type") == "image_url":
            url = str((part.get("image_url") or {}).get("url", ""))
            if url.startswith("data:") and ";base64," in url:
                media, _, data = url[5:].partition(";base64,")
                out.append({"type": "image", "source": {"type": "base64", "media_type": media, "data": data}})
            else:
                out.append({"type": "image", "source": {"type": "url", "url": url}})
    return out


def _tool_use_parts(m: dict[str, Any]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for call in m.get("tool_calls") or ():
        fn = call.get("function") or {}
        try:
            args = orjson.loads(fn.get("arguments") or "{}")
        except orjson.JSONDecodeError as exc:
            raise InvalidRequest("tool call arguments must be JSON", param="messages") from exc
        parts.append({"type": "tool_use", "id": call.get("id"), "name": fn.get("name"), "input": args})
    return parts


def _conversation(chat: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """System prompts (Anthropic takes them apart) and the messages, tool results as user turns."""
    system: list[str] = []
    messages: list[dict[str, Any]] = []
    for m in chat:
        role = m.get("role")
        if role in ("system", "developer"):
            system.append(content_text(m.get("content")))
            continue
        if role == "tool":
            block = {
                "type": "tool_result",
                "tool_use_id": m.get("tool_call_id"),
                "content": content_text(m.get("content")),
            }
            messages.append({"role": "user", "content": [block]})
            continue
        parts = _parts(m.get("content")) + _tool_use_parts(m)
        messages.append({"role": "assistant" if role == "assistant" else "user", "content": parts})
    return system, messages


def _tool_options(body: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's `tools` and `tool_choice` as Anthropic's."""
    out: dict[str, Any] = {}
    if body.get("tools"):
        out["tools"] = [
            {
                "name": t["function"]["name"],
                "description": t["function"].get("description", ""),
                "input_schema": t["function"].get("parameters") or {"type": "object", "properties": {}},
            }
            for t in body["tools"]
            if isinstance(t, dict) and t.get("type") == "function"
        ]
    choice = body.get("tool_choice")
    if choice == "required":
        out["tool_choice"] = {"type": "any"}
    elif choice == "auto":
        out["tool_choice"] = {"type": "auto"}
    elif isinstance(choice, dict) and choice.get("function"):
        out["tool_choice"] = {"type": "tool", "name": choice["function"]["name"]}
    return out


def to_messages_request(spec: ModelSpec, body: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat request as an Anthropic Messages request."""
    system, messages = _conversation(body["messages"])
    out: dict[str, Any] = {
        "model": spec.upstream_model,
        "messages": messages,
        "max_tokens": body.get("max_completion_tokens") or body.get("max_tokens") or spec.max_output_tokens,
    }
    if system:
        out["system"] = "\n\n".join(system)
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            out[key] = body[key]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    out.update(_tool_options(body))
    if isinstance(body.get("user"), str):
        out["metadata"] = {"user_id": body["user"]}
    return out


def parse_usage(raw: dict[str, Any], output_tokens: int | None = None) -> Usage:
    """Anthropic usage: input_tokens excludes cache reads and writes, which OpenAI's prompt_tokens includes."""
    cached = int(raw.get("cache_read_input_tokens") or 0)
    written = int(raw.get("cache_creation_input_tokens") or 0)
    prompt = int(raw.get("input_tokens") or 0) + cached + written
    completion = output_tokens if output_tokens is not None else int(raw.get("output_tokens") or 0)
    return Usage(prompt, completion, cached, written)


def to_chat_completion(spec: ModelSpec, msg: dict[str, Any]) -> Completion:
    """An Anthropic message as a `chat.completion`."""
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in msg.get("content") or ():
        if block.get("type") == "text":
            text.append(block.get("text", ""))
        elif block.get("type") == "tool_use":
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {
                        "name": block.get("name"),
                        "arguments": orjson.dumps(block.get("input")).decode(),
                    },
                }
            )
    finish = FINISH_REASONS.get(str(msg.get("stop_reason")), "stop")
    usage = parse_usage(msg.get("usage") or {})
    return chat_completion(
        str(msg.get("id", "")), spec.upstream_model, int(time.time()), "".join(text), calls, finish, usage
    )


class AnthropicProvider(ChatOnly):
    """`POST {base}/v1/messages` with `x-api-key` and `anthropic-version`."""

    def __init__(self, http: UpstreamHTTP) -> None:
        self._http = http
        self._headers: dict[str, dict[str, str]] = {}

    def _auth(self, spec: ModelSpec) -> dict[str, str]:
        cached = self._headers.get(spec.name)
        if cached is None:
            cached = {"anthropic-version": ANTHROPIC_VERSION}
            key = os.environ.get(spec.api_key_env) if spec.api_key_env else None
            if key:
                cached["x-api-key"] = key
            self._headers[spec.name] = cached
        return cached

    async def complete(self, spec: ModelSpec, body: dict[str, Any]) -> Completion:
        """A non-streamed Messages call."""
        url = f"{spec.resolved_base_url()}/v1/messages"
        data = await self._http.post_json(spec, url, self._auth(spec), to_messages_request(spec, body))
        return to_chat_completion(spec, data)

    async def stream(self, spec: ModelSpec, body: dict[str, Any]) -> AsyncIterator[StreamChunk]:
        """Messages stream events as OpenAI chunks; usage comes from message_start and message_delta."""
        url = f"{spec.resolved_base_url()}/v1/messages"
        payload = {**to_messages_request(spec, body), "stream": True}
        translate = _StreamTranslator(spec)
        async with self._http.request(spec, url, self._auth(spec), payload, stream=True) as resp:
            async for event, data in sse_events(resp):
                if event == "ping":
                    continue
                msg = orjson.loads(data)
                kind = msg.get("type", event)
                if kind == "message_stop":
                    return
                if kind == "message_delta":
                    # The finish chunk goes out before the usage is parsed, so text always ends first.
                    yield translate.finish(msg)
                    yield translate.final_usage(msg)
                    continue
                chunk = translate.event(kind, msg)
                if chunk is not None:
                    yield chunk


class _StreamTranslator:
    """One Messages stream's events as `chat.completion.chunk`s (keeps the ids and usage seen so far)."""

    def __init__(self, spec: ModelSpec) -> None:
        self.base: dict[str, Any] = {
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": spec.upstream_model,
        }
        self.start_usage: dict[str, Any] = {}
        self.tool_index: dict[int, int] = {}

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        """A chunk with one choice carrying `delta`."""
        return {
            **self.base,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    def event(self, kind: str, msg: dict[str, Any]) -> StreamChunk | None:
        """The chunk one stream event becomes (None for events that carry nothing for the client)."""
        if kind == "message_start":
            return self._message_start(msg)
        if kind == "content_block_start":
            return self._block_start(msg)
        if kind == "content_block_delta":
            return self._block_delta(msg)
        if kind == "error":
            err = msg.get("error") or {}
            raise UpstreamError(
                f"anthropic: {err.get('message', 'stream error')}", code="upstream_stream_error"
            )
        return None

    def _message_start(self, msg: dict[str, Any]) -> StreamChunk:
        message = msg.get("message") or {}
        self.base["id"] = f"chatcmpl-{message.get('id', '')}"
        self.start_usage = message.get("usage") or {}
        role = self.chunk({"role": "assistant", "content": ""})
        return StreamChunk(role, prompt_usage=parse_usage(self.start_usage, 0))

    def _block_start(self, msg: dict[str, Any]) -> StreamChunk | None:
        block = msg.get("content_block") or {}
        if block.get("type") != "tool_use":
            return None
        idx = self.tool_index.setdefault(int(msg.get("index", 0)), len(self.tool_index))
        call = {"index": idx, "id": block.get("id"), "type": "function",
                "function": {"name": block.get("name"), "arguments": ""}}  # fmt: skip
        return StreamChunk(self.chunk({"tool_calls": [call]}), text_tokens(block.get("name") or ""))

    def _block_delta(self, msg: dict[str, Any]) -> StreamChunk | None:
        delta = msg.get("delta") or {}
        if delta.get("type") == "text_delta":
            text = delta.get("text", "")
            return StreamChunk(self.chunk({"content": text}), text_tokens(text))
        if delta.get("type") == "input_json_delta":
            part = delta.get("partial_json", "")
            idx = self.tool_index.get(int(msg.get("index", 0)), 0)
            call = {"index": idx, "function": {"arguments": part}}
            return StreamChunk(self.chunk({"tool_calls": [call]}), text_tokens(part))
        return None

    def finish(self, msg: dict[str, Any]) -> StreamChunk:
        """`message_delta`'s finish chunk."""
        reason = (msg.get("delta") or {}).get("stop_reason")
        return StreamChunk(self.chunk({}, FINISH_REASONS.get(str(reason), "stop")))

    def final_usage(self, msg: dict[str, Any]) -> StreamChunk:
        """`message_delta`'s usage, on a chunk without choices."""
        raw = msg.get("usage") or {}
        usage = parse_usage({**self.start_usage, **raw}, int(raw.get("output_tokens") or 0))
        return StreamChunk({**self.base, "choices": [], "usage": usage.openai()}, usage=usage)
