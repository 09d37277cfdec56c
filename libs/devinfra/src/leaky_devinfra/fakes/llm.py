"""Fake LLM provider servers for tests: each speaks its provider's real wire format (JSON bodies, error
bodies, auth headers, SSE event formats) on a local port, answers with a fixed reply and fixed usage, and
can be told to fail the next requests, stall, or hold a stream open after N chunks.

    fake = FakeProvider("anthropic", api_key="sk-test")
    base_url = await fake.start()
    ...
    await fake.close()
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Literal
from uuid import uuid4

import orjson
from aiohttp import web

from leaky_devinfra.fakes.llm_usage import Reckoner, generated

FakeKind = Literal["openai", "azure", "anthropic", "gemini", "qwen", "openai_compatible"]
DEFAULT_WORDS = ("Hello", " from", " the", " fake", " upstream", ".")


@dataclass
class FakeUsage:
    """What the fake reports; `prompt` includes `cached` and `cache_write` (OpenAI semantics)."""

    prompt: int = 21
    completion: int = len(DEFAULT_WORDS)
    cached: int = 0
    cache_write: int = 0


@dataclass
class FakeProvider:
    """One fake upstream. `base_url` (after `start`) is what a routing file's `base_url` should be."""

    kind: FakeKind
    api_key: str = "sk-fake"
    words: tuple[str, ...] = DEFAULT_WORDS
    usage: FakeUsage = field(default_factory=FakeUsage)
    # OpenAI-shaped servers only: whether a stream honours stream_options.include_usage (vLLM-era servers may not).
    stream_usage: bool = True
    # Statuses to answer the next requests with, in order (e.g. [503, 429]).
    fail_next: list[int] = field(default_factory=list)
    # Seconds to wait before answering (to trigger the gateway's timeout).
    delay_s: float = 0.0
    # After this many content chunks, keep the stream open until the client goes away.
    hold_after: int | None = None
    # Anthropic and Gemini: answer requests that offer tools with this call (name, arguments) instead of text.
    tool_call: tuple[str, dict[str, Any]] | None = None
    # When set, usage is reckoned from each request body (see `llm_usage`) instead of `usage`, and replies
    # honour max_tokens (one word a token); `n` and `best_of` are honoured either way.
    reckoner: Reckoner | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    stream_closed_early: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None
    base_url: str = ""

    async def start(self) -> str:
        """Listen on a free local port; returns the base URL."""
        app = web.Application()
        if self.kind == "anthropic":
            app.router.add_post("/v1/messages", self._anthropic)
            root = ""
        elif self.kind == "gemini":
            app.router.add_post("/v1beta/models/{call}", self._gemini)
            root = ""
        elif self.kind == "azure":
            app.router.add_post("/openai/deployments/{deployment}/{path:.*}", self._openai)
            root = ""
        else:
            prefix = "/compatible-mode/v1" if self.kind == "qwen" else "/v1"
            app.router.add_post(prefix + "/{path:.*}", self._openai)
            root = prefix
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}{root}"
        return self.base_url

    async def close(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def text(self) -> str:
        """The reply text."""
        return "".join(self.words)

    # -- shared -------------------------------------------------------------------------------------------

    async def _admit(
        self, request: web.Request, key: str | None
    ) -> tuple[dict[str, Any], web.Response | None]:
        body = await request.json()
        self.requests.append({"path": request.path_qs, "headers": dict(request.headers), "json": body})
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if key != self.api_key:
            return body, self._error(401, "invalid api key")
        if self.fail_next:
            status = self.fail_next.pop(0)
            headers = {"retry-after": "0"} if status == 429 else None
            return body, self._error(status, f"fake {status}", headers)
        return body, None

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
        if self.kind == "anthropic":
            body: dict[str, Any] = {"type": "error", "error": {"type": "api_error", "message": message}}
        elif self.kind == "gemini":
            body = {"error": {"code": status, "message": message, "status": "UNAVAILABLE"}}
        else:
            body = {"error": {"message": message, "type": "server_error", "param": None, "code": None}}
        return web.json_response(
            body, status=status, headers=headers, dumps=lambda o: orjson.dumps(o).decode()
        )

    async def _sse(
        self, request: web.Request, events: list[tuple[str | None, dict[str, Any] | str]]
    ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"content-type": "text/event-stream", "cache-control": "no-cache"})
        await resp.prepare(request)
        content = 0
        for name, data in events:
            payload = data if isinstance(data, str) else orjson.dumps(data).decode()
            head = f"event: {name}\n" if name else ""
            await resp.write(f"{head}data: {payload}\n\n".encode())
            if isinstance(data, dict) and _is_content(data):
                content += 1
                if self.hold_after is not None and content >= self.hold_after:
                    try:
                        await asyncio.Event().wait()
                    except asyncio.CancelledError:
                        self.stream_closed_early.set()
                        raise
        await resp.write_eof()
        return resp

    # -- OpenAI, Azure, Qwen, OpenAI-compatible --------------------------------------------------------------

    def _words(self, body: dict[str, Any]) -> tuple[str, ...]:
        """The reply of one choice (cut at max_tokens when reckoning)."""
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        return self.words[:limit] if self.reckoner is not None and limit else self.words

    def _reckoned(self, path: str, body: dict[str, Any]) -> FakeUsage:
        """What this request is billed: `usage`, or the reckoning of its body."""
        if self.reckoner is None:
            return self.usage
        if self.kind == "anthropic":
            return FakeUsage(self.reckoner.anthropic_prompt(body), len(self._words(body)))
        completion = 0 if path == "embeddings" else len(self._words(body)) * generated(path, body)
        return FakeUsage(self.reckoner.openai_prompt(path, body), completion)

    def _openai_usage(self, u: FakeUsage) -> dict[str, Any]:
        out: dict[str, Any] = {
            "prompt_tokens": u.prompt,
            "completion_tokens": u.completion,
            "total_tokens": u.prompt + u.completion,
        }
        if u.cached:
            out["prompt_tokens_details"] = {"cached_tokens": u.cached}
        return out

    async def _openai(self, request: web.Request) -> web.StreamResponse:
        if self.kind == "azure":
            key = request.headers.get("api-key")
            if "api-version" not in request.query:
                return self._error(404, "missing api-version")
        else:
            auth = request.headers.get("authorization", "")
            key = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None
        body, error = await self._admit(request, key)
        if error is not None:
            return error
        path = request.match_info["path"]
        model = body.get("model") or request.match_info.get("deployment")
        if path == "embeddings":
            return self._openai_embeddings(body, model)
        if path == "completions":
            return await self._openai_completions(request, body, model)
        if path != "chat/completions":
            return self._error(404, f"no route {path}")
        return await self._openai_chat(request, body, model)

    def _openai_embeddings(self, body: dict[str, Any], model: Any) -> web.Response:
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [{"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]} for i in range(len(inputs))]
        prompt = self._reckoned("embeddings", body).prompt
        usage = {"prompt_tokens": prompt, "total_tokens": prompt}
        return _json({"object": "list", "data": data, "model": model, "usage": usage})

    async def _openai_completions(
        self, request: web.Request, body: dict[str, Any], model: Any
    ) -> web.StreamResponse:
        created = int(time.time())
        u, words, n = self._reckoned("completions", body), self._words(body), int(body.get("n") or 1)
        if not body.get("stream"):
            choices = [{"index": i, "text": "".join(words), "logprobs": None, "finish_reason": "stop"}
                       for i in range(n)]  # fmt: skip
            return _json({"id": f"cmpl-{uuid4().hex}", "object": "text_completion", "created": created,
                          "model": model, "choices": choices, "usage": self._openai_usage(u)})  # fmt: skip
        cid = f"cmpl-{uuid4().hex}"

        def text_chunk(text: str, i: int, finish: str | None = None) -> dict[str, Any]:
            return {"id": cid, "object": "text_completion", "created": created, "model": model,
                    "choices": [{"index": i, "text": text, "logprobs": None, "finish_reason": finish}]}  # fmt: skip

        texts: list[tuple[str | None, dict[str, Any] | str]] = [
            (None, text_chunk(w, i)) for w in words for i in range(n)
        ]
        texts += [(None, text_chunk("", i, "stop")) for i in range(n)]
        if self.stream_usage and (body.get("stream_options") or {}).get("include_usage"):
            texts.append((None, {"id": cid, "object": "text_completion", "created": created, "model": model,
                                  "choices": [], "usage": self._openai_usage(u)}))  # fmt: skip
        texts.append((None, "[DONE]"))
        return await self._sse(request, texts)

    async def _openai_chat(
        self, request: web.Request, body: dict[str, Any], model: Any
    ) -> web.StreamResponse:
        created = int(time.time())
        cid = f"chatcmpl-{uuid4().hex}"
        u, words, n = self._reckoned("chat/completions", body), self._words(body), int(body.get("n") or 1)
        if not body.get("stream"):
            message = {"role": "assistant", "content": "".join(words), "refusal": None}
            choices = [{"index": i, "message": message, "logprobs": None, "finish_reason": "stop"}
                       for i in range(n)]  # fmt: skip
            return _json({"id": cid, "object": "chat.completion", "created": created, "model": model,
                          "choices": choices, "usage": self._openai_usage(u)})  # fmt: skip

        def chunk(delta: dict[str, Any], i: int, finish: str | None = None) -> dict[str, Any]:
            return {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [{"index": i, "delta": delta, "logprobs": None, "finish_reason": finish}]}  # fmt: skip

        events: list[tuple[str | None, dict[str, Any] | str]] = [
            (None, chunk({"role": "assistant", "content": ""}, i)) for i in range(n)
        ]
        events += [(None, chunk({"content": w}, i)) for w in words for i in range(n)]
        events += [(None, chunk({}, i, "stop")) for i in range(n)]
        opts = body.get("stream_options") or {}
        if self.stream_usage and opts.get("include_usage"):
            events.append((None, {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                                  "choices": [], "usage": self._openai_usage(u)}))  # fmt: skip
        events.append((None, "[DONE]"))
        return await self._sse(request, events)

    # -- Anthropic Messages -----------------------------------------------------------------------------------

    async def _anthropic(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("anthropic-version") is None:
            return self._error(400, "anthropic-version header is required")
        body, error = await self._admit(request, request.headers.get("x-api-key"))
        if error is not None:
            return error
        u = self._reckoned("messages", body)
        usage = {
            "input_tokens": u.prompt - u.cached - u.cache_write,
            "cache_creation_input_tokens": u.cache_write,
            "cache_read_input_tokens": u.cached,
            "output_tokens": u.completion,
        }
        mid = f"msg_{uuid4().hex[:24]}"
        call = self.tool_call if body.get("tools") else None
        if not body.get("stream"):
            content: list[dict[str, Any]] = [{"type": "text", "text": "".join(self._words(body))}]
            if call:
                content = [{"type": "tool_use", "id": "toolu_1", "name": call[0], "input": call[1]}]
            return _json({"id": mid, "type": "message", "role": "assistant", "model": body["model"],
                          "content": content, "stop_reason": "tool_use" if call else "end_turn",
                          "stop_sequence": None, "usage": usage})  # fmt: skip
        start = {"id": mid, "type": "message", "role": "assistant", "model": body["model"], "content": [],
                 "stop_reason": None, "stop_sequence": None, "usage": {**usage, "output_tokens": 1}}  # fmt: skip
        events: list[tuple[str | None, dict[str, Any] | str]] = [
            ("message_start", {"type": "message_start", "message": start}),
            ("content_block_start", {"type": "content_block_start", "index": 0,
                                     "content_block": {"type": "text", "text": ""}}),
            ("ping", {"type": "ping"}),
        ]  # fmt: skip
        events += [
            ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                     "delta": {"type": "text_delta", "text": w}})
            for w in self._words(body)
        ]  # fmt: skip
        events.append(("content_block_stop", {"type": "content_block_stop", "index": 0}))
        if call:
            args = orjson.dumps(call[1]).decode()
            events += [
                ("content_block_start", {"type": "content_block_start", "index": 1, "content_block":
                                         {"type": "tool_use", "id": "toolu_1", "name": call[0], "input": {}}}),
                ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                         "delta": {"type": "input_json_delta", "partial_json": args[:5]}}),
                ("content_block_delta", {"type": "content_block_delta", "index": 1,
                                         "delta": {"type": "input_json_delta", "partial_json": args[5:]}}),
                ("content_block_stop", {"type": "content_block_stop", "index": 1}),
            ]  # fmt: skip
        events += [
            ("message_delta", {"type": "message_delta", "usage": {"output_tokens": u.completion},
                               "delta": {"stop_reason": "tool_use" if call else "end_turn", "stop_sequence": None}}),
            ("message_stop", {"type": "message_stop"}),
        ]  # fmt: skip
        return await self._sse(request, events)

    # -- Gemini ---------------------------------------------------------------------------------------------------

    async def _gemini(self, request: web.Request) -> web.StreamResponse:
        body, error = await self._admit(request, request.headers.get("x-goog-api-key"))
        if error is not None:
            return error
        model, _, method = request.match_info["call"].partition(":")
        u = self.usage
        final_usage = {"promptTokenCount": u.prompt, "candidatesTokenCount": u.completion,
                       "totalTokenCount": u.prompt + u.completion}  # fmt: skip
        if u.cached:
            final_usage["cachedContentTokenCount"] = u.cached

        call = self.tool_call if body.get("tools") else None

        def part(
            text: str, finish: str | None, usage: dict[str, Any], with_call: bool = False
        ) -> dict[str, Any]:
            parts: list[dict[str, Any]] = [{"text": text}]
            if with_call and call:
                parts.append({"functionCall": {"name": call[0], "args": call[1]}})
            cand: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
            if finish:
                cand["finishReason"] = finish
            return {"candidates": [cand], "usageMetadata": usage, "modelVersion": model, "responseId": "r1"}

        if method == "generateContent":
            return _json(part(self.text, "STOP", final_usage, with_call=True))
        if method != "streamGenerateContent" or request.query.get("alt") != "sse":
            return self._error(404, f"unsupported method {method}")
        partial = {"promptTokenCount": u.prompt, "totalTokenCount": u.prompt}
        events: list[tuple[str | None, dict[str, Any] | str]] = [
            (None, part(w, None, partial)) for w in self.words[:-1]
        ]
        events.append((None, part(self.words[-1], "STOP", final_usage, with_call=True)))
        return await self._sse(request, events)


def _is_content(event: dict[str, Any]) -> bool:
    """Whether an event carries generated text (counted for `hold_after`)."""
    if event.get("type") == "content_block_delta":
        return True
    choices = event.get("choices") or ()
    if choices and ((choices[0].get("delta") or {}).get("content") or choices[0].get("text")):
        return True
    cands = event.get("candidates") or ()
    return bool(cands and cands[0].get("content", {}).get("parts", [{}])[0].get("text"))


def _json(body: dict[str, Any]) -> web.Response:
    return web.Response(body=orjson.dumps(body), content_type="application/json")
