"""Trace context across Kafka: the headers a message carries, and the links a batch span holds.

Everything here is a no-op (no allocation beyond an empty list) when no tracer provider is installed, which is
the default without `LT_OTLP_ENDPOINT`: the current span is then the invalid span, so there is nothing to
propagate and nothing to link.

A message published inside a request carries that request's `traceparent`, so its consumer continues the
trace: one message, one CONSUMER span whose parent is the producer. A batch handled at once (quota's
settlement, the analytics worker) cannot have every message as its parent; its one span carries a span link
to each message's context instead (OpenTelemetry's convention for batch receives).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager

from opentelemetry import propagate, trace
from opentelemetry.trace import Link, Span, SpanKind

__all__ = ["MAX_LINKS", "batch_span", "context_headers", "headers_carrier", "links_from_headers", "recording"]

# Links kept on one batch span (the SDK's own default limit is 128; a bigger batch links its first ones).
MAX_LINKS = 128

HeaderList = Sequence[tuple[str, bytes]]


def recording() -> bool:
    """Whether the current span records (a provider is installed and the trace is sampled or kept)."""
    return trace.get_current_span().is_recording()


def headers_carrier() -> dict[str, str]:
    """The W3C trace headers (`traceparent`, `tracestate`) of the current context; {} without one."""
    if not trace.get_current_span().get_span_context().is_valid:
        return {}
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier


def context_headers(extra: Mapping[str, str] | None = None) -> list[tuple[str, bytes]]:
    """Kafka headers: the current trace context (when there is one) plus `extra`."""
    carrier = headers_carrier()
    if extra:
        carrier.update(extra)
    return [(k, v.encode()) for k, v in carrier.items()]


def _carrier(headers: HeaderList | Mapping[str, bytes] | None) -> dict[str, str]:
    items = headers.items() if isinstance(headers, Mapping) else headers or ()
    out: dict[str, str] = {}
    for key, value in items:
        if key in ("traceparent", "tracestate"):
            out[key] = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    return out


def links_from_headers(headers: Iterable[HeaderList | Mapping[str, bytes] | None]) -> list[Link]:
    """A link to each message's trace context (messages without one are skipped; at most `MAX_LINKS`)."""
    links: list[Link] = []
    for one in headers:
        carrier = _carrier(one)
        if not carrier:
            continue
        ctx = trace.get_current_span(propagate.extract(carrier)).get_span_context()
        if ctx.is_valid:
            links.append(Link(ctx))
            if len(links) >= MAX_LINKS:
                break
    return links


@contextmanager
def batch_span(
    tracer: trace.Tracer, name: str, headers: Iterable[HeaderList | Mapping[str, bytes] | None], count: int
) -> Iterator[Span]:
    """A CONSUMER span for a batch of `count` messages, linked to each message's context (a new root).

    Without a tracer provider the links are not even parsed.
    """
    provider_on = not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    links = links_from_headers(headers) if provider_on else []
    with tracer.start_as_current_span(
        name,
        context=None,
        kind=SpanKind.CONSUMER,
        links=links,
        attributes={"messaging.batch.message_count": count},
    ) as span:
        yield span
