"""The span of one provider call, after OpenTelemetry's GenAI semantic conventions.

Attributes: `gen_ai.operation.name` (chat, text_completion, embeddings), `gen_ai.provider.name`,
`gen_ai.request.model`, `gen_ai.response.model`, `gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens`,
`server.address` and `server.port`; a stream gets a `gen_ai.first_token` event when its first chunk arrives.
Never any prompt or completion text: the span only ever sees the model names, the endpoint's host and counts.

Nothing happens unless the request's own span records (a tracer provider is installed and the trace is
sampled), so the hot path pays one `is_recording()` call per provider call when tracing is off.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from leaky_common.errors import ServiceError
from lt_gateway.domain.models import ModelSpec
from lt_gateway.domain.requests import Kind
from lt_gateway.domain.usage import StreamChunk, Usage

__all__ = ["OPERATIONS", "ProviderSpan", "error_type", "span_for"]

tracer = trace.get_tracer("lt_gateway.providers")

OPERATIONS: dict[Kind, str] = {"chat": "chat", "completion": "text_completion", "embedding": "embeddings"}


def error_type(exc: BaseException) -> str:
    """What a failure is called on a span: our error code, else the exception's class (never its message)."""
    if isinstance(exc, ServiceError) and exc.code:
        return exc.code
    return type(exc).__name__


def _server(spec: ModelSpec) -> dict[str, Any]:
    try:
        url = urlsplit(spec.resolved_base_url())
        host, port = url.hostname, url.port or (443 if url.scheme == "https" else 80)
    except ValueError:  # the mock provider has no URL
        return {}
    return {"server.address": host, "server.port": port} if host else {}


class ProviderSpan:
    """One provider call's CLIENT span; every method is a no-op when the request is not traced."""

    def __init__(self, spec: ModelSpec, kind: Kind, *, stream: bool = False) -> None:
        self.span: Span | None = None
        self._started = time.perf_counter()
        if not trace.get_current_span().is_recording():
            return
        operation = OPERATIONS[kind]
        self.span = tracer.start_span(
            f"{operation} {spec.upstream_model}",
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": operation,
                "gen_ai.provider.name": spec.provider,
                "gen_ai.request.model": spec.upstream_model,
                "gen_ai.request.stream": stream,
                "lt.model": spec.name,
                **_server(spec),
            },
        )

    def current(self) -> Any:
        """A context manager making this span current (so outbound HTTP spans nest under it)."""
        if self.span is None:
            return nullcontext()
        # No exception events: a provider error message may quote the request.
        return trace.use_span(
            self.span, end_on_exit=False, record_exception=False, set_status_on_exception=False
        )

    def usage(self, usage: Usage | None, response_model: object = None) -> None:
        """Record the tokens (and the model the provider says answered)."""
        if self.span is None:
            return
        if isinstance(response_model, str) and response_model:
            self.span.set_attribute("gen_ai.response.model", response_model[:200])
        if usage is not None:
            self.span.set_attribute("gen_ai.usage.input_tokens", usage.prompt_tokens)
            self.span.set_attribute("gen_ai.usage.output_tokens", usage.completion_tokens)

    def first_token(self) -> None:
        """The stream's first chunk arrived (time to first token, in seconds, on the event)."""
        if self.span is not None:
            elapsed = time.perf_counter() - self._started
            self.span.add_event("gen_ai.first_token", {"gen_ai.server.time_to_first_token": elapsed})

    def fail(self, error_type: str) -> None:
        """Mark the call failed (`error_type`: an error code or exception class, never a message)."""
        if self.span is not None:
            self.span.set_attribute("error.type", error_type)
            self.span.set_status(Status(StatusCode.ERROR))

    def end(self) -> None:
        """End the span (once)."""
        if self.span is not None:
            span, self.span = self.span, None
            span.end()

    def watch(self, chunks: AsyncIterator[StreamChunk], first: StreamChunk) -> AsyncIterator[StreamChunk]:
        """`chunks` as is when not traced; else a pass-through that records usage and ends the span."""
        if self.span is None:
            return chunks
        return _Watched(self, chunks, first)


class _Watched:
    """A traced stream's chunks: counts tokens on the way, ends the span when the stream ends or is closed
    (`aclose` also closes the provider's stream, as the relay expects of the iterator it is given)."""

    def __init__(self, owner: ProviderSpan, chunks: AsyncIterator[StreamChunk], first: StreamChunk) -> None:
        self._owner = owner
        self._chunks = chunks
        self._prompt, self._completion, self._final = first.prompt_usage, first.completion_tokens, first.usage
        self._model = first.body.get("model")

    def __aiter__(self) -> _Watched:
        return self

    async def __anext__(self) -> StreamChunk:
        try:
            chunk = await anext(self._chunks)
        except StopAsyncIteration:
            self._finish()
            raise
        except Exception as exc:
            self._owner.fail(error_type(exc))
            self._finish()
            raise
        self._prompt = chunk.prompt_usage or self._prompt
        self._completion += chunk.completion_tokens
        self._final = chunk.usage or self._final
        return chunk

    def _finish(self) -> None:
        owner = self._owner
        if owner.span is None:
            return
        final = self._final
        if final is None and self._prompt is not None:
            final = Usage(self._prompt.prompt_tokens, self._completion)
        owner.usage(final, self._model)
        if final is None:
            owner.span.set_attribute("gen_ai.usage.output_tokens", self._completion)
        owner.end()

    async def aclose(self) -> None:
        """End the span and close the provider's stream."""
        self._finish()
        aclose = getattr(self._chunks, "aclose", None)
        if aclose is not None:
            await aclose()


@contextmanager
def span_for(spec: ModelSpec, kind: Kind) -> Iterator[ProviderSpan]:
    """A non-streamed call's span, current inside the block and ended after it."""
    ps = ProviderSpan(spec, kind)
    try:
        with ps.current():
            yield ps
    except Exception as exc:
        ps.fail(error_type(exc))
        raise
    finally:
        ps.end()
