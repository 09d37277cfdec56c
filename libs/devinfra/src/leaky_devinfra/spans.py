"""Tests that look at spans: one in-process SDK tracer provider, sampling only while a test asks for spans.

OpenTelemetry lets a process set its global tracer provider once, and every module's tracer binds to it on
first use; so the provider is installed once per test session (on first demand), with a sampler that drops
everything unless a test holds `capture_spans()`. Other tests keep behaving as without tracing: their spans
are non-recording, and nothing is propagated as sampled.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind, TraceState
from opentelemetry.util.types import Attributes

__all__ = ["capture_spans", "spans_named"]


class _Switch(Sampler):
    """Samples everything while `on`, nothing otherwise."""

    on = False

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
        return (
            SamplingResult(Decision.RECORD_AND_SAMPLE, attributes)
            if self.on
            else SamplingResult(Decision.DROP)
        )

    def get_description(self) -> str:
        return "TestSwitch"


_SWITCH = _Switch()
_EXPORTER = InMemorySpanExporter()


_PROVIDER = TracerProvider(resource=Resource.create({"service.name": "tests"}), sampler=_SWITCH)
_PROVIDER.add_span_processor(SimpleSpanProcessor(_EXPORTER))


def _install() -> None:
    current = trace.get_tracer_provider()
    if current is _PROVIDER:
        return
    if isinstance(current, TracerProvider):  # set once per process: spans would silently go elsewhere
        raise RuntimeError("another tracer provider is installed in this test process")
    trace.set_tracer_provider(_PROVIDER)


@contextmanager
def capture_spans() -> Iterator[InMemorySpanExporter]:
    """Sample every span started inside the block; the exporter holds the finished ones."""
    _install()
    _EXPORTER.clear()
    _SWITCH.on = True
    try:
        yield _EXPORTER
    finally:
        _SWITCH.on = False


def spans_named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    """The finished spans called `name`."""
    return [s for s in exporter.get_finished_spans() if s.name == name]
