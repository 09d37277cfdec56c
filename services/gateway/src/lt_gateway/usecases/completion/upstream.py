"""Calling the provider for an admitted request: the deployment first, then its fallbacks on 502/503/504."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from leaky_common.errors import ServiceError, UpstreamError
from lt_gateway.adapters.genai_trace import ProviderSpan, error_type, span_for
from lt_gateway.adapters.metrics import provider_metrics
from lt_gateway.adapters.model_table import ModelTable
from lt_gateway.adapters.providers import Provider
from lt_gateway.adapters.providers.http import FALLBACK_STATUS
from lt_gateway.domain.admission import serves_choices, upstream_body
from lt_gateway.domain.call import Call
from lt_gateway.domain.models import ModelSpec
from lt_gateway.domain.requests import ParsedRequest
from lt_gateway.domain.usage import Completion, StreamChunk

logger = logging.getLogger(__name__)


def upstream_error(exc: Exception, call: Call, spec: ModelSpec) -> ServiceError:
    """A provider failure as the client sees it (unexpected ones logged, their details kept inside)."""
    if isinstance(exc, ServiceError):
        return exc
    logger.exception("provider failure", extra={"request_id": call.request_id, "provider": spec.provider})
    return UpstreamError(f"upstream provider error: {type(exc).__name__}")


class Upstream:
    """The providers by kind, and the routing table for fallbacks."""

    def __init__(self, models: ModelTable, providers: dict[str, Provider]) -> None:
        self.models = models
        self.providers = providers

    def chain(self, parsed: ParsedRequest, spec: ModelSpec) -> list[ModelSpec]:
        """The deployment and the fallbacks that may answer the request (the reservation covers them all)."""
        fallbacks = (s for s in map(self.models.get, spec.fallbacks) if s is not None)
        return [spec, *(s for s in fallbacks if serves_choices(parsed, s))]

    def _candidates(self, call: Call) -> list[tuple[ModelSpec, dict[str, Any]]]:
        """The deployment and its fallbacks, each with the upstream body (output capped at the grant)."""
        granted = call.admitted.granted_output_tokens
        specs = self.chain(call.parsed, call.spec)
        return [(spec, upstream_body(call.parsed, spec, granted)) for spec in specs]

    @staticmethod
    def _give_up(err: ServiceError, call: Call, spec: ModelSpec, last: bool) -> bool:
        """Whether `err` ends the request (else the next deployment is tried)."""
        if err.status not in FALLBACK_STATUS or last:
            return True
        logger.warning(
            "deployment failed; falling back",
            extra={"request_id": call.request_id, "model": spec.name, "error": err.code},
        )
        return False

    async def complete(self, call: Call) -> Completion:
        """A non-streamed answer; `call.spec` becomes the deployment that answered (it is priced so)."""
        candidates = self._candidates(call)
        for i, (spec, body) in enumerate(candidates):
            provider = self.providers[spec.provider]
            metrics = provider_metrics(spec.name, spec.provider)
            started = time.perf_counter()
            try:
                with span_for(spec, call.parsed.kind) as span:  # one span per deployment tried
                    if call.parsed.kind == "chat":
                        result = await provider.complete(spec, body)
                    elif call.parsed.kind == "completion":
                        result = await provider.text_complete(spec, body)
                    else:
                        result = await provider.embed(spec, body)
                    span.usage(result.usage, result.body.get("model"))
            except Exception as exc:
                err = upstream_error(exc, call, spec)
                metrics.failed(err.status, time.perf_counter() - started)
                if self._give_up(err, call, spec, i == len(candidates) - 1):
                    raise err from exc
            else:
                metrics.ok.observe(time.perf_counter() - started)
                call.spec = spec
                return result
        raise AssertionError("unreachable")

    async def open_stream(self, call: Call) -> tuple[AsyncIterator[StreamChunk], StreamChunk]:
        """The upstream stream (with fallbacks) opened up to its first chunk, so failures keep their status."""
        candidates = self._candidates(call)
        for i, (spec, body) in enumerate(candidates):
            provider = self.providers[spec.provider]
            opener = provider.stream if call.parsed.kind == "chat" else provider.text_stream
            span = ProviderSpan(spec, call.parsed.kind, stream=True)
            metrics = provider_metrics(spec.name, spec.provider)
            started = time.perf_counter()
            chunks = opener(spec, body)
            try:
                with span.current():
                    first = await anext(chunks)
            except StopAsyncIteration:
                err: ServiceError = UpstreamError(
                    f"{spec.provider} sent an empty stream", code="upstream_error"
                )
            except Exception as exc:
                err = upstream_error(exc, call, spec)
            else:
                elapsed = time.perf_counter() - started
                metrics.ok.observe(elapsed)
                metrics.first_token.observe(elapsed)
                call.spec = spec
                span.first_token()
                # The span ends with the stream (the relay closes it however it ends).
                return span.watch(chunks, first), first
            metrics.failed(err.status, time.perf_counter() - started)
            span.fail(error_type(err))
            span.end()
            if self._give_up(err, call, spec, i == len(candidates) - 1):
                raise err
        raise AssertionError("unreachable")
