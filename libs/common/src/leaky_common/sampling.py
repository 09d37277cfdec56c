"""Trace sampling: a parent-based ratio that still keeps the spans that failed.

Head sampling decides when a trace starts, before anyone knows whether it will fail. `KeepErrorsSampler`
turns each "drop" of the parent-based ratio sampler into "record only": the span is recorded but not flagged
sampled, so downstream services keep following the decision. `KeepErrorsProcessor` then forwards to the
exporter every sampled span, and each unsampled one whose status is ERROR (a 5xx answer, a provider failure,
a handler that raised) re-flagged as sampled. What an unsampled trace keeps is its failing spans, not its
healthy ones. Recording every span is the price, which is why the ratio's default is 1 (nothing to add) and
`LT_TRACE_KEEP_ERRORS=false` makes unsampled spans free again.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.sampling import Decision, ParentBasedTraceIdRatio, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanContext, SpanKind, StatusCode, TraceFlags, TraceState
from opentelemetry.util.types import Attributes

__all__ = ["KeepErrorsProcessor", "KeepErrorsSampler", "make_sampler"]


class KeepErrorsSampler(Sampler):
    """`inner`'s decisions, with DROP turned into RECORD_ONLY."""

    def __init__(self, inner: Sampler) -> None:
        self._inner = inner

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Sequence[Link] | None = None,
        trace_state: TraceState | None = None,
    ) -> SamplingResult:
        """Ask `inner`; record what it drops."""
        result = self._inner.should_sample(
            parent_context, trace_id, name, kind, attributes, links, trace_state
        )
        if result.decision is Decision.DROP:
            return SamplingResult(Decision.RECORD_ONLY, result.attributes, result.trace_state)
        return result

    def get_description(self) -> str:
        """For the SDK's diagnostics."""
        return f"KeepErrors{{{self._inner.get_description()}}}"


def make_sampler(ratio: float, keep_errors: bool) -> Sampler:
    """Parent-based `ratio`; with `keep_errors` below 1, unsampled spans are recorded (see the module doc)."""
    sampler = ParentBasedTraceIdRatio(ratio)
    return KeepErrorsSampler(sampler) if keep_errors and ratio < 1.0 else sampler


def _as_sampled(span: ReadableSpan) -> ReadableSpan:
    ctx = span.context
    assert ctx is not None
    flagged = SpanContext(
        ctx.trace_id, ctx.span_id, ctx.is_remote, TraceFlags(TraceFlags.SAMPLED), ctx.trace_state
    )
    return ReadableSpan(
        name=span.name,
        context=flagged,
        parent=span.parent,
        resource=span.resource,
        attributes=span.attributes,
        events=span.events,
        links=span.links,
        kind=span.kind,
        status=span.status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


class KeepErrorsProcessor(SpanProcessor):
    """Forwards sampled spans to `inner`, and unsampled ones only when they failed."""

    def __init__(self, inner: SpanProcessor) -> None:
        self._inner = inner

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Nothing to do at the start."""
        self._inner.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        """Forward if sampled or failed."""
        ctx = span.context
        if ctx is None:
            return
        if ctx.trace_flags.sampled:
            self._inner.on_end(span)
        elif span.status.status_code is StatusCode.ERROR:
            self._inner.on_end(_as_sampled(span))

    def shutdown(self) -> None:
        """Shut `inner` down."""
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Flush `inner`."""
        return self._inner.force_flush(timeout_millis)
