"""The endpoints of the governed hot path: `/v1/chat/completions` (served by HotRoute, outside FastAPI's
routing), `/v1/completions` and `/v1/embeddings`. Plain Starlette endpoints that read the request, hand it
to the completion flow and render its reply; no FastAPI validation on the way."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from typing import Any

import anyio
import anyio.to_thread
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from leaky_common.errors import ServiceError
from lt_gateway.api.http import governance_headers, governed_key_from, request_id_from
from lt_gateway.domain.requests import PARSERS, Kind, load_body
from lt_gateway.usecases.completion.flow import CompletionFlow, Reply
from lt_gateway.usecases.completion.keycheck import KeyCheck


class ChatHandler:
    """Serves the governed endpoints; one instance per app."""

    def __init__(
        self,
        flow: CompletionFlow,
        keys: KeyCheck,
        *,
        max_body_bytes: int,
        max_json_depth: int = 32,
        offload_bytes: int = 64 * 1024,
    ) -> None:
        self.flow = flow
        self.keys = keys
        self.max_body_bytes = max_body_bytes
        self.max_json_depth = max_json_depth
        self.offload_bytes = offload_bytes
        # Large prompts are tokenized in worker threads, two at a time: the event loop keeps serving.
        self._tokenizers = anyio.CapacityLimiter(2)

    async def handle(self, request: Request) -> Response:
        """Serve `/v1/chat/completions`."""
        return await self.serve(request, "chat")

    async def handle_completion(self, request: Request) -> Response:
        """Serve `/v1/completions`."""
        return await self.serve(request, "completion")

    async def handle_embedding(self, request: Request) -> Response:
        """Serve `/v1/embeddings`."""
        return await self.serve(request, "embedding")

    async def serve(self, request: Request, kind: Kind) -> Response:
        """Validate, admit, call the provider and account for one request."""
        started = time.perf_counter()
        request_id = request_id_from(request)
        session_id: str | None = None
        model: str | None = None
        try:
            gov = governance_headers(request)
            session_id = gov.session_id
            api_key = governed_key_from(request)
            # Authenticated before the body is read: a request without a key quota accepts costs no parsing,
            # no tokenizing (the body read is bounded while reading by leaky_common.guard.RequestGuard).
            org_id = await self.keys.require(api_key)
            raw = await request.body()
            body = load_body(raw, self.max_body_bytes, self.max_json_depth)
            model = body.get("model") if isinstance(body.get("model"), str) else None
            if len(raw) > self.offload_bytes:
                parsed = await anyio.to_thread.run_sync(PARSERS[kind], body, limiter=self._tokenizers)
            else:
                parsed = PARSERS[kind](body)
            spec = self.flow.resolve(parsed)
        except ServiceError as exc:
            return render(self.flow.reject(request_id, session_id, model, kind, exc, started))
        return render(await self.flow.run(parsed, spec, gov, api_key, request_id, started, org_id))


def render(reply: Reply) -> Response:
    """The reply as a Starlette response."""
    if reply.stream is not None:
        return ClosingStreamingResponse(reply.stream, media_type=reply.media_type, headers=reply.headers)
    return Response(reply.body, status_code=reply.status, media_type=reply.media_type, headers=reply.headers)


class ClosingStreamingResponse(StreamingResponse):
    """A StreamingResponse that always closes its generator, also when the client went away mid-stream
    (Starlette cancels the sending task and leaves the generator suspended, to be finalised by GC)."""

    def __init__(self, content: AsyncGenerator[bytes, None], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._generator = content

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._generator.aclose()
