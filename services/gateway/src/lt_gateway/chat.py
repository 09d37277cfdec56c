"""`POST /v1/chat/completions`: the governed hot path.

validate -> one call to quota (auth, freezes, buckets, reservation) -> provider (capped at the granted output
budget) -> respond with usage and cost -> queue a UsageRecorded event, which quota settles the reservation from.
Every request that reaches quota, allowed, blocked or failed, produces exactly one usage event (requests
rejected before that, as malformed or without a key, produce none yet).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from leaky_common.contracts import AdmitRequest, AdmitResponse
from leaky_common.errors import (
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    ServiceError,
    Unauthorized,
    UpstreamError,
    error_body,
)
from leaky_common.events import UsageRecorded
from lt_gateway.headers import ratelimit_headers
from lt_gateway.metrics import COST_MICROS, TOKENS
from lt_gateway.models import ModelSpec, ModelTable, format_usd
from lt_gateway.providers import Provider, Usage
from lt_gateway.quota_client import Denial, QuotaClient
from lt_gateway.tokens import estimate_prompt_tokens
from lt_gateway.usage import UsageSink

logger = logging.getLogger("lt_gateway.requests")

_JSON = "application/json"


def api_key_from(request: Request) -> str:
    """The API key from `Authorization: Bearer` or `X-API-Key`; 401 if neither."""
    auth = request.headers.get("authorization")
    if auth:
        scheme, _, token = auth.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    key = request.headers.get("x-api-key")
    if key:
        return key.strip()
    raise Unauthorized(
        "Missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key'.", code="missing_api_key"
    )


def request_id_from(request: Request) -> str:
    """The client's `X-Request-ID` if sane, else a new one."""
    rid = request.headers.get("x-request-id")
    if rid and len(rid) <= 128 and rid.isprintable():
        return rid
    return f"req_{uuid4().hex}"


def _positive_int(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise InvalidRequest(f"{name} must be a positive integer", param=name, code="invalid_value")
    return value


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A validated chat request and what governance needs from it."""

    body: dict[str, Any]
    model: str
    messages: list[dict[str, Any]]
    stream: bool
    include_usage: bool
    max_output_tokens: int | None
    max_tokens_field: str


def parse_chat_request(raw: bytes, max_bytes: int) -> ChatRequest:
    """Validate the parts of an OpenAI chat request the gateway relies on; pass the rest through."""
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"request body exceeds {max_bytes} bytes")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest("request body is not valid JSON", code="invalid_json") from exc
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object", code="invalid_json")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest(
            "you must provide a model parameter", param="model", code="missing_required_parameter"
        )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest(
            "messages must be a non-empty array", param="messages", code="missing_required_parameter"
        )
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise InvalidRequest(f"messages[{i}] must be an object with a role", param=f"messages[{i}]")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequest("stream must be a boolean", param="stream")
    n = body.get("n", 1)
    if n != 1:
        raise InvalidRequest("only n=1 is supported", param="n", code="unsupported_value")
    field = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_out = _positive_int(body, field)
    opts = body.get("stream_options")
    include_usage = bool(stream and isinstance(opts, dict) and opts.get("include_usage"))
    return ChatRequest(body, model, messages, stream, include_usage, max_out, field)


def prompt_fingerprint(model: str, messages: list[dict[str, Any]]) -> str:
    """A hash identifying a repeated prompt (loop detection) without revealing its text."""
    return hashlib.blake2b(orjson.dumps([model, messages[-3:]]), digest_size=12).hexdigest()


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
        """Serve one chat completion request."""
        started = time.perf_counter()
        request_id = request_id_from(request)
        try:
            api_key = api_key_from(request)
            chat = parse_chat_request(await request.body(), self.max_body_bytes)
            spec = self.models.get(chat.model)
            if spec is None:
                raise NotFound(
                    f"The model '{chat.model}' does not exist", param="model", code="model_not_found"
                )
        except ServiceError as exc:
            return _error(exc.status, exc.body(), request_id, exc.headers)

        session_id = request.headers.get("x-session-id") or request.query_params.get("session_id")
        prompt_tokens = estimate_prompt_tokens(chat.messages)
        fingerprint = prompt_fingerprint(chat.model, chat.messages)
        admit_req = AdmitRequest(
            api_key=api_key,
            request_id=request_id,
            model=spec.name,
            provider=spec.provider,
            prompt_tokens=prompt_tokens,
            max_output_tokens=chat.max_output_tokens,
            model_max_output_tokens=spec.max_output_tokens,
            min_output_tokens=min(16, chat.max_output_tokens or 16),
            input_usd_micros_per_mtok=spec.input_usd_micros_per_mtok,
            output_usd_micros_per_mtok=spec.output_usd_micros_per_mtok,
            session_id=session_id,
            priority=request.headers.get("x-project-priority"),
            privacy=request.headers.get("x-privacy-mode"),
        )
        try:
            admitted = await self.quota.admit(admit_req)
        except ServiceError as exc:
            return _error(exc.status, exc.body(), request_id, exc.headers)
        if isinstance(admitted, Denial):
            self._record_blocked(admit_req, spec, admitted, started, chat.stream, fingerprint)
            headers = {"x-request-id": request_id, **admitted.headers}
            return Response(admitted.body, status_code=admitted.status, media_type=_JSON, headers=headers)

        upstream_body = dict(chat.body)
        upstream_body[chat.max_tokens_field] = admitted.granted_output_tokens
        upstream_body["model"] = spec.upstream_model
        headers = {
            "x-request-id": request_id,
            "x-leaky-tokens-quota-source": admitted.quota_source,
            **ratelimit_headers(admitted.ratelimit),
        }
        provider = self.providers[spec.provider]
        if chat.stream:
            upstream_body["stream_options"] = {"include_usage": True}
            max_cost = spec.cost_usd_micros(
                admitted.reserved_tokens - admitted.granted_output_tokens, admitted.granted_output_tokens
            )
            headers["x-leaky-tokens-cost-usd-max"] = format_usd(max_cost)
            return StreamingResponse(
                self._stream(
                    provider,
                    spec,
                    upstream_body,
                    chat,
                    admitted,
                    request_id,
                    session_id,
                    started,
                    fingerprint,
                    prompt_tokens,
                ),
                media_type="text/event-stream",
                headers={**headers, "cache-control": "no-cache"},
            )
        try:
            completion = await provider.complete(spec, upstream_body)
        except Exception as exc:
            if isinstance(exc, ServiceError):
                err: ServiceError = exc
            else:
                logger.exception(
                    "provider failure", extra={"request_id": request_id, "provider": spec.provider}
                )
                err = UpstreamError(f"upstream provider error: {type(exc).__name__}")
            # Nothing was generated: the event settles the reservation at zero.
            self._record(
                admitted, spec, request_id, session_id, Usage(0, 0), started, "error", err.status, False,
                fingerprint, err.code,
            )  # fmt: skip
            return _error(err.status, err.body(), request_id, {**headers, **err.headers})
        cost = self._record(
            admitted,
            spec,
            request_id,
            session_id,
            completion.usage,
            started,
            "ok",
            200,
            False,
            fingerprint,
            None,
        )
        body = completion.body
        body["model"] = spec.name
        body["leaky_tokens"] = {
            "cost_usd": format_usd(cost),
            "cost_usd_micros": cost,
            "quota_source": admitted.quota_source,
        }
        headers["x-leaky-tokens-cost-usd"] = format_usd(cost)
        return Response(orjson.dumps(body), media_type=_JSON, headers=headers)

    async def _stream(
        self,
        provider: Provider,
        spec: ModelSpec,
        upstream_body: dict[str, Any],
        chat: ChatRequest,
        admitted: AdmitResponse,
        request_id: str,
        session_id: str | None,
        started: float,
        fingerprint: str,
        prompt_estimate: int,
    ) -> AsyncIterator[bytes]:
        counted = 0
        usage: Usage | None = None
        status, http_status, error_code = "ok", 200, None
        try:
            async for chunk in provider.stream(spec, upstream_body):
                if chunk.usage is not None:
                    usage = chunk.usage
                    if not chat.include_usage:
                        continue
                    cost = spec.cost_usd_micros(
                        usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens
                    )
                    chunk.body["leaky_tokens"] = {
                        "cost_usd": format_usd(cost),
                        "cost_usd_micros": cost,
                        "quota_source": admitted.quota_source,
                    }
                counted += chunk.completion_tokens
                chunk.body["model"] = spec.name
                yield b"data: " + orjson.dumps(chunk.body) + b"\n\n"
            yield b"data: [DONE]\n\n"
        except (asyncio.CancelledError, GeneratorExit):
            # The client went away: charge what was generated, never free.
            status, http_status, error_code = "error", 499, "client_disconnected"
            raise
        except Exception as exc:
            if isinstance(exc, ServiceError):
                err: ServiceError = exc
            else:
                logger.exception("provider stream failure", extra={"request_id": request_id})
                err = UpstreamError(f"upstream provider error: {type(exc).__name__}")
            status, http_status, error_code = "error", err.status, err.code
            yield b"data: " + orjson.dumps(err.body()) + b"\n\n"
        finally:
            if usage is None:
                usage = Usage(prompt_estimate, counted)
            self._record(
                admitted,
                spec,
                request_id,
                session_id,
                usage,
                started,
                status,
                http_status,
                True,
                fingerprint,
                error_code,
            )

    def _record(
        self,
        admitted: AdmitResponse,
        spec: ModelSpec,
        request_id: str,
        session_id: str | None,
        usage: Usage,
        started: float,
        status: str,
        http_status: int,
        stream: bool,
        fingerprint: str,
        error_code: str | None,
    ) -> int:
        cost = spec.cost_usd_micros(usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens)
        p = admitted.principal
        latency_ms = int((time.perf_counter() - started) * 1000)
        self.usage.record(
            UsageRecorded(
                producer="gateway",
                correlation_id=request_id,
                request_id=request_id,
                reservation_id=admitted.reservation_id,
                org_id=p.org_id,
                team_id=p.team_id,
                user_id=p.user_id,
                key_id=p.key_id,
                session_id=session_id,
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
                stream=stream,
                privacy_strict=admitted.privacy_strict,
                prompt_fingerprint=fingerprint,
            )
        )
        TOKENS.labels(spec.name, "prompt").inc(usage.prompt_tokens)
        TOKENS.labels(spec.name, "completion").inc(usage.completion_tokens)
        COST_MICROS.labels(spec.name).inc(cost)
        logger.info(
            "request",
            extra={
                "request_id": request_id,
                "session_id": session_id,
                "model": spec.name,
                "input_tokens": usage.prompt_tokens,
                "output_tokens": usage.completion_tokens,
                "actual_cost": format_usd(cost),
                "decision": "allowed",
                "status": status,
                "error": error_code,
                "latency_ms": latency_ms,
            },
        )
        return cost

    def _record_blocked(
        self,
        req: AdmitRequest,
        spec: ModelSpec,
        denial: Denial,
        started: float,
        stream: bool,
        fingerprint: str,
    ) -> None:
        code = denial.code()
        self.usage.record(
            UsageRecorded(
                producer="gateway",
                correlation_id=req.request_id,
                request_id=req.request_id,
                session_id=req.session_id,
                model=spec.name,
                provider=spec.provider,
                latency_ms=int((time.perf_counter() - started) * 1000),
                status="blocked",
                http_status=denial.status,
                error_code=code,
                stream=stream,
                prompt_fingerprint=fingerprint,
            )
        )
        logger.info(
            "request",
            extra={
                "request_id": req.request_id,
                "session_id": req.session_id,
                "model": spec.name,
                "decision": "blocked",
                "error": code,
                "status_code": denial.status,
            },
        )


def _error(
    status: int, body: dict[str, Any], request_id: str, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        orjson.dumps(body),
        status_code=status,
        media_type=_JSON,
        headers={"x-request-id": request_id, **(headers or {})},
    )


__all__ = ["ChatHandler", "api_key_from", "error_body", "parse_chat_request", "request_id_from"]
