"""The governed hot path: `/v1/chat/completions`, `/v1/completions` and `/v1/embeddings`.

validate -> one call to quota (auth, freezes, buckets, reservation) -> provider (capped at the granted output
budget; retries and fallbacks inside) -> respond with usage and cost -> queue a UsageRecorded event, which
quota settles the reservation from. Every request produces exactly one usage event and one JSON log line:
malformed and keyless ones too (`status` error/blocked, no reservation).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from leaky_common.contracts import AdmitRequest, AdmitResponse
from leaky_common.errors import InvalidRequest, NotFound, ServiceError, Unauthorized, UpstreamError
from leaky_common.events import UsageRecorded
from lt_gateway.headers import ratelimit_headers
from lt_gateway.metrics import COST_MICROS, TOKENS
from lt_gateway.models import ModelSpec, ModelTable, format_usd
from lt_gateway.providers import Completion, Provider, StreamChunk, Usage
from lt_gateway.providers.http import FALLBACK_STATUS
from lt_gateway.quota_client import Denial, QuotaClient
from lt_gateway.requests import (
    PARSERS,
    Kind,
    ParsedRequest,
    api_key_from,
    governance_headers,
    load_body,
    request_id_from,
)
from lt_gateway.usage import UsageSink

# Exactly one line per request goes to `lt_gateway.requests`; everything else to this module's logger.
request_log = logging.getLogger("lt_gateway.requests")
logger = logging.getLogger(__name__)

_JSON = "application/json"
_ENDPOINT = {"chat": "/v1/chat/completions", "completion": "/v1/completions", "embedding": "/v1/embeddings"}
_ZERO_COST = format_usd(0)
# Which model modes each endpoint serves (OpenAI-compatible servers answer legacy completions for chat models).
_SERVES: dict[str, frozenset[str]] = {
    "chat": frozenset({"chat"}),
    "completion": frozenset({"chat", "completion"}),
    "embedding": frozenset({"embedding"}),
}


@dataclass(slots=True)
class _Call:
    """One admitted request on its way through a provider."""

    parsed: ParsedRequest
    # The deployment serving the request: the requested model's, or the fallback that answered.
    spec: ModelSpec
    admitted: AdmitResponse
    request_id: str
    session_id: str | None
    started: float
    estimated_cost: int


class ChatHandler:
    """Wires the hot path's collaborators; one instance per app."""

    def __init__(
        self,
        *,
        models: ModelTable,
        providers: dict[str, Provider],
        quota: QuotaClient,
        usage: UsageSink,
        max_body_bytes: int,
    ) -> None:
        self.models = models
        self.providers = providers
        self.quota = quota
        self.usage = usage
        self.max_body_bytes = max_body_bytes

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
            api_key = api_key_from(request)
            body = load_body(await request.body(), self.max_body_bytes)
            model = body.get("model") if isinstance(body.get("model"), str) else None
            parsed = PARSERS[kind](body)
            spec = self._spec(parsed)
        except ServiceError as exc:
            self._record_rejected(request_id, session_id, model, kind, exc, started)
            return _error(exc.status, exc.body(), request_id, exc.headers)

        embedding = kind == "embedding"
        admit_req = AdmitRequest(
            api_key=api_key,
            request_id=request_id,
            model=spec.name,
            provider=spec.provider,
            prompt_tokens=parsed.prompt_tokens,
            max_output_tokens=1 if embedding else parsed.max_output_tokens,
            model_max_output_tokens=1 if embedding else spec.max_output_tokens,
            min_output_tokens=1 if embedding else min(16, parsed.max_output_tokens or 16),
            input_usd_micros_per_mtok=spec.input_usd_micros_per_mtok,
            output_usd_micros_per_mtok=spec.output_usd_micros_per_mtok,
            session_id=session_id,
            priority=gov.priority,
            privacy=gov.privacy,
        )
        try:
            admitted = await self.quota.admit(admit_req)
        except ServiceError as exc:
            self._record_rejected(request_id, session_id, spec.name, kind, exc, started, spec.provider)
            return _error(exc.status, exc.body(), request_id, exc.headers)
        if isinstance(admitted, Denial):
            self._record_blocked(admit_req, parsed, admitted, started)
            headers = {"x-request-id": request_id, "x-leaky-tokens-cost-usd": _ZERO_COST, **admitted.headers}
            return Response(admitted.body, status_code=admitted.status, media_type=_JSON, headers=headers)

        granted = 0 if embedding else admitted.granted_output_tokens
        call = _Call(
            parsed, spec, admitted, request_id, session_id, started,
            spec.cost_usd_micros(parsed.prompt_tokens, granted),
        )  # fmt: skip
        headers = {
            "x-request-id": request_id,
            "x-leaky-tokens-quota-source": admitted.quota_source,
            "x-leaky-tokens-cost-usd-estimated": format_usd(call.estimated_cost),
            **ratelimit_headers(admitted.ratelimit),
        }
        try:
            if parsed.stream:
                return await self._start_stream(call, headers)
            completion = await self._complete(call)
        except ServiceError as exc:
            # Nothing was generated: the event settles the reservation at zero.
            self._record(call, Usage(0, 0), "error", exc.status, exc.code)
            headers["x-leaky-tokens-cost-usd"] = _ZERO_COST
            return _error(exc.status, exc.body(), request_id, {**headers, **exc.headers})
        cost = self._record(call, completion.usage, "ok", 200, None)
        body = completion.body
        body["model"] = parsed.model
        body["leaky_tokens"] = self._cost_field(cost, admitted)
        headers["x-leaky-tokens-cost-usd"] = format_usd(cost)
        return Response(orjson.dumps(body), media_type=_JSON, headers=headers)

    def _spec(self, parsed: ParsedRequest) -> ModelSpec:
        spec = self.models.get(parsed.model)
        if spec is None:
            raise NotFound(
                f"The model '{parsed.model}' does not exist", param="model", code="model_not_found"
            )
        if spec.mode not in _SERVES[parsed.kind]:
            raise InvalidRequest(
                f"'{spec.name}' is a {spec.mode} model; call {_ENDPOINT[spec.mode]}",
                param="model",
                code="unsupported_model",
            )
        if parsed.prompt_tokens > spec.context_window:
            raise InvalidRequest(
                f"This model's maximum context length is {spec.context_window} tokens; "
                f"the request has about {parsed.prompt_tokens}.",
                param="messages",
                code="context_length_exceeded",
            )
        return spec

    def _candidates(self, call: _Call) -> list[tuple[ModelSpec, dict[str, Any]]]:
        """The deployment and its fallbacks, each with the upstream body (output capped at the grant)."""
        out = []
        for spec in (call.spec, *(s for s in map(self.models.get, call.spec.fallbacks) if s is not None)):
            body = dict(call.parsed.body)
            body["model"] = spec.upstream_model
            if call.parsed.kind != "embedding":
                cap = min(call.admitted.granted_output_tokens, spec.max_output_tokens)
                field = call.parsed.max_tokens_field
                if call.parsed.max_output_tokens is None and call.parsed.kind == "chat":
                    # The client set no limit; OpenAI's reasoning models refuse the legacy max_tokens.
                    field = "max_completion_tokens" if spec.provider in ("openai", "azure") else "max_tokens"
                body[field] = cap
            out.append((spec, body))
        return out

    async def _complete(self, call: _Call) -> Completion:
        candidates = self._candidates(call)
        for i, (spec, body) in enumerate(candidates):
            provider = self.providers[spec.provider]
            try:
                if call.parsed.kind == "chat":
                    result = await provider.complete(spec, body)
                elif call.parsed.kind == "completion":
                    result = await provider.text_complete(spec, body)
                else:
                    result = await provider.embed(spec, body)
            except Exception as exc:
                err = self._upstream_error(exc, call, spec)
                if err.status not in FALLBACK_STATUS or i == len(candidates) - 1:
                    raise err from exc
                logger.warning(
                    "deployment failed; falling back",
                    extra={"request_id": call.request_id, "model": spec.name, "error": err.code},
                )
            else:
                # Priced and recorded as the deployment that answered.
                call.spec = spec
                return result
        raise AssertionError("unreachable")

    async def _start_stream(self, call: _Call, headers: dict[str, str]) -> Response:
        """Open the upstream stream (with fallbacks) up to its first chunk, so failures keep their status."""
        candidates = self._candidates(call)
        for i, (spec, body) in enumerate(candidates):
            provider = self.providers[spec.provider]
            opener = provider.stream if call.parsed.kind == "chat" else provider.text_stream
            chunks = opener(spec, body)
            try:
                first = await anext(chunks)
            except StopAsyncIteration:
                err: ServiceError = UpstreamError(
                    f"{spec.provider} sent an empty stream", code="upstream_error"
                )
            except Exception as exc:
                err = self._upstream_error(exc, call, spec)
            else:
                call.spec = spec
                max_cost = spec.cost_usd_micros(
                    call.parsed.prompt_tokens, call.admitted.granted_output_tokens
                )
                headers["x-leaky-tokens-cost-usd-max"] = format_usd(max_cost)
                return ClosingStreamingResponse(
                    self._stream(call, chunks, first),
                    media_type="text/event-stream",
                    headers={**headers, "cache-control": "no-cache", "x-accel-buffering": "no"},
                )
            if err.status not in FALLBACK_STATUS or i == len(candidates) - 1:
                raise err
            logger.warning(
                "deployment failed; falling back",
                extra={"request_id": call.request_id, "model": spec.name, "error": err.code},
            )
        raise AssertionError("unreachable")

    @staticmethod
    def _upstream_error(exc: Exception, call: _Call, spec: ModelSpec) -> ServiceError:
        if isinstance(exc, ServiceError):
            return exc
        logger.exception("provider failure", extra={"request_id": call.request_id, "provider": spec.provider})
        return UpstreamError(f"upstream provider error: {type(exc).__name__}")

    @staticmethod
    def _cost_field(cost: int, admitted: AdmitResponse) -> dict[str, Any]:
        return {"cost_usd": format_usd(cost), "cost_usd_micros": cost, "quota_source": admitted.quota_source}

    def _final_usage_chunk(self, call: _Call, chunk: dict[str, Any], usage: Usage, cost: int) -> bytes:
        chunk["model"] = call.parsed.model
        chunk["usage"] = usage.openai()
        chunk["leaky_tokens"] = self._cost_field(cost, call.admitted)
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    async def _stream(
        self, call: _Call, chunks: AsyncIterator[StreamChunk], first: StreamChunk
    ) -> AsyncGenerator[bytes, None]:
        """Forward chunks as they arrive. The last chunk carries usage and cost: the usage chunk when the
        client asked for `include_usage`, else the finish chunk (held back until usage is known)."""
        counted = 0
        usage: Usage | None = None
        prompt = Usage(call.parsed.prompt_tokens, 0)
        held: dict[str, Any] | None = None
        sent_final = False
        status, http_status, error_code = "ok", 200, None
        name = call.parsed.model
        include_usage = call.parsed.include_usage
        try:
            chunk: StreamChunk | None = first
            while chunk is not None:
                body = chunk.body
                counted += chunk.completion_tokens
                if chunk.usage is not None:
                    usage = chunk.usage
                if chunk.prompt_usage is not None:
                    prompt = chunk.prompt_usage
                choices = body.get("choices")
                if not choices:
                    if usage is not None and include_usage:
                        cost = self._cost(call, usage)
                        yield self._final_usage_chunk(call, body, usage, cost)
                        sent_final = True
                    elif usage is not None and held is not None:
                        yield self._final_usage_chunk(call, held, usage, self._cost(call, usage))
                        held, sent_final = None, True
                elif not include_usage and choices[0].get("finish_reason"):
                    if usage is not None:
                        yield self._final_usage_chunk(call, body, usage, self._cost(call, usage))
                        sent_final = True
                    else:
                        held = body
                else:
                    body["model"] = name
                    yield b"data: " + orjson.dumps(body) + b"\n\n"
                chunk = await anext(chunks, None)
            if not sent_final:
                # The upstream reported no usage: count what was streamed.
                final = usage or _counted(prompt, counted)
                template = held or {
                    "id": first.body.get("id"), "object": first.body.get("object", "chat.completion.chunk"),
                    "created": first.body.get("created"), "choices": [],
                }  # fmt: skip
                usage = final
                yield self._final_usage_chunk(call, template, final, self._cost(call, final))
            yield b"data: [DONE]\n\n"
        except BaseException as exc:
            if isinstance(exc, Exception):
                err = self._upstream_error(exc, call, call.spec)
                status, http_status, error_code = "error", err.status, err.code
                yield b"data: " + orjson.dumps(err.body()) + b"\n\n"
            else:
                # Cancelled (client went away) or closed: charge what was generated, never free.
                status, http_status, error_code = "error", 499, "client_disconnected"
                raise
        finally:
            if usage is None:
                usage = _counted(prompt, counted)
            self._record(call, usage, status, http_status, error_code)
            # Closing the provider's generator closes its upstream connection: generation stops there too.
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()

    def _cost(self, call: _Call, usage: Usage) -> int:
        return call.spec.cost_usd_micros(
            usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens, usage.cache_write_tokens
        )

    def _record(
        self, call: _Call, usage: Usage, status: str, http_status: int, error_code: str | None
    ) -> int:
        spec, p, admitted = call.spec, call.admitted.principal, call.admitted
        cost = self._cost(call, usage)
        latency_ms = int((time.perf_counter() - call.started) * 1000)
        self.usage.record(
            UsageRecorded(
                producer="gateway",
                correlation_id=call.request_id,
                request_id=call.request_id,
                reservation_id=admitted.reservation_id,
                org_id=p.org_id,
                team_id=p.team_id,
                user_id=p.user_id,
                key_id=p.key_id,
                session_id=call.session_id,
                pool_id=admitted.pool_id,
                quota_source=admitted.quota_source,
                model=spec.name,
                provider=spec.provider,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                total_tokens=usage.total_tokens,
                cached_tokens=usage.cached_tokens,
                cost_usd_micros=cost,
                latency_ms=latency_ms,
                status=status,
                http_status=http_status,
                error_code=error_code,
                stream=call.parsed.stream,
                privacy_strict=admitted.privacy_strict,
                prompt_fingerprint=call.parsed.fingerprint,
            )
        )
        prompt_counter, completion_counter, cost_counter = _model_metrics(spec.name)
        prompt_counter.inc(usage.prompt_tokens)
        completion_counter.inc(usage.completion_tokens)
        cost_counter.inc(cost)
        _log(
            call.request_id, call.session_id, spec.name, "allowed", error_code, http_status, latency_ms,
            call.estimated_cost, cost, usage.prompt_tokens, usage.completion_tokens, p.user_id,
        )  # fmt: skip
        return cost

    def _record_blocked(
        self, req: AdmitRequest, parsed: ParsedRequest, denial: Denial, started: float
    ) -> None:
        code = denial.code()
        latency_ms = int((time.perf_counter() - started) * 1000)
        self.usage.record(
            UsageRecorded(
                producer="gateway",
                correlation_id=req.request_id,
                request_id=req.request_id,
                session_id=req.session_id,
                model=req.model,
                provider=req.provider,
                latency_ms=latency_ms,
                status="blocked",
                http_status=denial.status,
                error_code=code,
                stream=parsed.stream,
                prompt_fingerprint=parsed.fingerprint,
            )
        )
        _log(
            req.request_id, req.session_id, req.model, "blocked", code, denial.status, latency_ms, 0, 0, 0, 0
        )

    def _record_rejected(
        self,
        request_id: str,
        session_id: str | None,
        model: str | None,
        kind: Kind,
        exc: ServiceError,
        started: float,
        provider: str | None = None,
    ) -> None:
        """A request refused before admission (malformed, keyless, unknown model, quota unreachable)."""
        spec = self.models.get(model) if model else None
        latency_ms = int((time.perf_counter() - started) * 1000)
        blocked = isinstance(exc, Unauthorized)
        self.usage.record(
            UsageRecorded(
                producer="gateway",
                correlation_id=request_id,
                request_id=request_id,
                session_id=session_id,
                model=(model or "")[:200],
                provider=provider or (spec.provider if spec else ""),
                latency_ms=latency_ms,
                status="blocked" if blocked else "error",
                http_status=exc.status,
                error_code=exc.code,
                stream=False,
            )
        )
        _log(
            request_id, session_id, model, "blocked" if blocked else "rejected", exc.code or kind, exc.status,
            latency_ms, 0, 0, 0, 0,
        )  # fmt: skip


@lru_cache(maxsize=1024)
def _model_metrics(model: str) -> tuple[Any, Any, Any]:
    """The per-model counters (label lookups cached: they hash and lock on every call)."""
    return TOKENS.labels(model, "prompt"), TOKENS.labels(model, "completion"), COST_MICROS.labels(model)


def _counted(prompt: Usage, completion_tokens: int) -> Usage:
    """Usage of a stream the upstream reported no final usage for: the prompt side as known, plus what was
    streamed (counted with the tokenizer)."""
    return Usage(prompt.prompt_tokens, completion_tokens, prompt.cached_tokens, prompt.cache_write_tokens)


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


def _log(
    request_id: str,
    session_id: str | None,
    model: str | None,
    decision: str,
    error: str | None,
    status_code: int,
    latency_ms: int,
    estimated_cost: int,
    actual_cost: int,
    input_tokens: int,
    output_tokens: int,
    user_id: str | None = None,
) -> None:
    """One JSON line per request with TokenGate's fields (costs in USD). Never any prompt or completion text."""
    request_log.info(
        "request",
        extra={
            "timestamp": datetime.now(UTC).isoformat(),
            "request_id": request_id,
            "session_id": session_id,
            "user_id": user_id,
            "model": model,
            "estimated_cost": format_usd(estimated_cost),
            "actual_cost": format_usd(actual_cost),
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "decision": decision,
            "error": error,
            "status_code": status_code,
            "latency_ms": latency_ms,
        },
    )


def _error(
    status: int, body: dict[str, Any], request_id: str, headers: dict[str, str] | None = None
) -> Response:
    hdrs = {"x-request-id": request_id, "x-leaky-tokens-cost-usd": _ZERO_COST, **(headers or {})}
    return Response(orjson.dumps(body), status_code=status, media_type=_JSON, headers=hdrs)


__all__ = ["ChatHandler", "api_key_from", "request_id_from"]
