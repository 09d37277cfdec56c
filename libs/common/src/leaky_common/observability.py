"""JSON logs, OpenTelemetry tracing, Prometheus metrics and the /health, /ready, /metrics routes."""

from __future__ import annotations

import hmac
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from leaky_common import client_spans
from leaky_common.sampling import KeepErrorsProcessor, make_sampler
from leaky_common.settings import ServiceSettings

__all__ = ["JsonFormatter", "MetricsMiddleware", "add_ops_routes", "setup_logging", "setup_tracing"]

_RESERVED = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line; `extra=` fields are included; trace ids when a span is active."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "service": self._service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            out["trace_id"] = f"{span.trace_id:032x}"
            out["span_id"] = f"{span.span_id:016x}"
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


def setup_logging(settings: ServiceSettings) -> None:
    """Route all logging to stdout, as JSON unless `log_json` is off."""
    handler = logging.StreamHandler(sys.stdout)
    if settings.log_json:
        handler.setFormatter(JsonFormatter(settings.service_name))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    for noisy in ("aiokafka", "kafka", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def setup_tracing(settings: ServiceSettings) -> TracerProvider | None:
    """Install an SDK tracer provider exporting over OTLP/HTTP, only when `otlp_endpoint` is set.

    Without an endpoint nothing is installed: spans stay no-ops and FastAPI's native request telemetry stays
    off, which matters on the hot path (an SDK provider with nowhere to send spans still costs ~0.7 ms of CPU
    per request for the four spans FastAPI opens).
    Sampling is parent-based at `trace_sample_ratio`; with `trace_keep_errors`, failed spans of unsampled
    traces are exported too (`leaky_common.sampling`).
    """
    client_spans.configure(settings.trace_client_spans, settings.trace_client_span_ratio)
    if not settings.otlp_endpoint:
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.service_name}),
        sampler=make_sampler(settings.trace_sample_ratio, settings.trace_keep_errors),
    )
    endpoint = settings.otlp_endpoint.rstrip("/")
    if not endpoint.endswith("/v1/traces"):
        endpoint += "/v1/traces"
    provider.add_span_processor(KeepErrorsProcessor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint))))
    trace.set_tracer_provider(provider)
    return provider


HTTP_REQUESTS = Counter("lt_http_requests_total", "HTTP requests", ["service", "method", "route", "status"])
HTTP_LATENCY = Histogram(
    "lt_http_request_duration_seconds",
    "HTTP request duration",
    ["service", "route"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


class MetricsMiddleware:
    """Pure ASGI middleware (no per-request Request object) recording count and latency per route template."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            HTTP_REQUESTS.labels(self.service, scope["method"], path, str(status)).inc()
            HTTP_LATENCY.labels(self.service, path).observe(time.perf_counter() - start)


class Health(BaseModel):
    """`/health`: the process is alive."""

    status: Literal["ok"] = "ok"
    service: str


class Readiness(BaseModel):
    """`/ready`: whether every dependency answered (the body of both the 200 and the 503)."""

    status: Literal["ready", "not_ready"]
    service: str
    checks: dict[str, bool]


def metrics_allowed(authorization: str | None, token: str | None) -> bool:
    """Whether `Authorization` carries the scraper's bearer token (no token configured: nobody may read)."""
    if not token or not authorization or not authorization.startswith("Bearer "):
        return False
    return hmac.compare_digest(authorization.removeprefix("Bearer ").encode(), token.encode())


def add_ops_routes(
    app: FastAPI,
    service: str,
    ready: Callable[[], Awaitable[dict[str, bool]]],
    metrics_token: str | None = None,
) -> None:
    """`/health` (process alive), `/ready` (dependencies reachable, 503 if not) and `/metrics` (only with
    `Authorization: Bearer <metrics_token>`; 404 otherwise, so its existence is no hint)."""

    @app.get("/health", include_in_schema=True, tags=["ops"])
    async def health() -> Health:
        return Health(service=service)

    @app.get(
        "/ready",
        tags=["ops"],
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "A dependency is not reachable"}},
    )
    async def ready_route() -> Response:
        checks = await ready()
        ok = all(checks.values())
        body = {"status": "ready" if ok else "not_ready", "service": service, "checks": checks}
        return Response(orjson.dumps(body), status_code=200 if ok else 503, media_type="application/json")

    @app.get(
        "/metrics",
        tags=["ops"],
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
    )
    async def metrics(request: Request) -> Response:
        if not metrics_allowed(request.headers.get("authorization"), metrics_token):
            return Response(
                orjson.dumps(
                    {"error": {"message": "not found", "type": "not_found", "param": None, "code": None}}
                ),
                status_code=404,
                media_type="application/json",
            )
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
