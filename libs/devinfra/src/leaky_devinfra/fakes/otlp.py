"""A fake OpenTelemetry collector: OTLP/HTTP with protobuf bodies (what `OTLPSpanExporter` sends), kept in memory.

Point a service at it with `LT_OTLP_ENDPOINT=<url>` (the service appends `/v1/traces`); each received span is
flattened into a `ReceivedSpan` with its service name, so a test can assert a trace's tree across processes.
Setting `OTEL_BSP_SCHEDULE_DELAY=100` in the services' environment makes them export within a fraction of a second.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

__all__ = ["FakeCollector", "ReceivedSpan"]

# The protobuf enum Span.SpanKind: 1 internal, 2 server, 3 client, 4 producer, 5 consumer.
KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


def _value(v: AnyValue) -> Any:
    which = v.WhichOneof("value")
    if which == "array_value":
        return [_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, which) if which else None


@dataclass(frozen=True)
class ReceivedSpan:
    """One exported span, ids as lowercase hex."""

    service: str
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]
    events: dict[str, dict[str, Any]]
    links: tuple[str, ...]  # the trace ids linked to
    error: bool


@dataclass
class FakeCollector:
    """Receives OTLP/HTTP trace exports on a free local port."""

    spans: list[ReceivedSpan] = field(default_factory=list)
    url: str = ""
    _runner: web.AppRunner | None = None

    async def start(self) -> str:
        """Listen on 127.0.0.1; returns the base URL (what `LT_OTLP_ENDPOINT` should be)."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/traces", self._traces)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def close(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()

    def named(self, name: str, service: str | None = None) -> list[ReceivedSpan]:
        """The spans called `name` (of `service` when given)."""
        return [s for s in self.spans if s.name == name and (service is None or s.service == service)]

    def in_trace(self, trace_id: str) -> list[ReceivedSpan]:
        """Every span of one trace."""
        return [s for s in self.spans if s.trace_id == trace_id]

    async def _traces(self, request: web.Request) -> web.Response:
        if request.content_type != "application/x-protobuf":
            return web.Response(status=415)
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        export = ExportTraceServiceRequest()
        export.ParseFromString(body)
        for resource_spans in export.resource_spans:
            resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
            service = str(resource.get("service.name", ""))
            for scope_spans in resource_spans.scope_spans:
                self.spans.extend(self._span(service, s) for s in scope_spans.spans)
        reply = ExportTraceServiceResponse().SerializeToString()
        return web.Response(body=reply, content_type="application/x-protobuf")

    @staticmethod
    def _span(service: str, s: Any) -> ReceivedSpan:
        return ReceivedSpan(
            service=service,
            name=s.name,
            kind=KINDS.get(s.kind, str(s.kind)),
            trace_id=s.trace_id.hex(),
            span_id=s.span_id.hex(),
            parent_id=s.parent_span_id.hex(),
            attributes={kv.key: _value(kv.value) for kv in s.attributes},
            events={e.name: {kv.key: _value(kv.value) for kv in e.attributes} for e in s.events},
            links=tuple(link.trace_id.hex() for link in s.links),
            error=s.status.code == 2,  # STATUS_CODE_ERROR
        )
