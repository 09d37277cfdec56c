"""Serving glue: the process entrypoint (logs, tracing, uvicorn) and a fast path for hot endpoints."""

from __future__ import annotations

import asyncio
import ctypes
import gc
import socket
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import uvicorn
from fastapi import FastAPI
from opentelemetry import trace
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from leaky_common.observability import setup_logging, setup_tracing
from leaky_common.settings import ServiceSettings

__all__ = ["HotRoute", "freeze_start_up", "listening_socket", "serve", "trim_heap", "trim_when_quiet"]

S = TypeVar("S", bound=ServiceSettings)


def serve(settings: S, create_app: Callable[[S], FastAPI]) -> None:
    """Set up JSON logs and tracing for `settings`, build the app and serve it (uvloop, httptools).

    With `reuse_port`, the listening socket is bound with SO_REUSEPORT: several instances of the service
    listen on the same address and the kernel spreads incoming connections across them."""
    setup_logging(settings)
    setup_tracing(settings)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=10,
        timeout_keep_alive=settings.keep_alive_s,
    )
    server = uvicorn.Server(config)
    freeze_start_up(settings)
    if not settings.reuse_port:
        server.run()
        return
    sock = listening_socket(settings.host, settings.port, reuse_port=True)
    server.run(sockets=[sock])


def freeze_start_up(settings: ServiceSettings) -> None:
    """With `gc_freeze` (the default), move every object alive now out of the garbage collector's reach: its
    full passes then walk only what the process made since, not every module, class and setting."""
    if settings.gc_freeze:
        gc.collect()
        gc.freeze()


def trim_heap() -> bool:
    """Give the C heap's free pages back to the system (glibc's `malloc_trim`); True if any were.

    Start-up frees much of what it only needed while loading (the tokenizer's Python copy of its ranks, parsed
    files), but glibc keeps those pages mapped until asked: the gateway's idle RSS was 4-5 MB higher without
    this. Call it once start-up is over; elsewhere than glibc it does nothing."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return False
    return bool(trim(0))


async def trim_when_quiet(
    interval_s: float,
    *,
    cpu: Callable[[], float] = time.process_time,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Forever: after each quiet interval (the process used under 5% of a core), trim the heap (`trim_heap`).
    What a burst of work freed goes back to the system once the burst is over; under load nothing is trimmed
    (the pages would only be faulted in again). A trim with nothing to give back costs about 10 µs."""
    last = cpu()
    while True:
        await sleep(interval_s)
        now = cpu()
        quiet = now - last < 0.05 * interval_s
        last = now
        if quiet:
            trim_heap()


def listening_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """A TCP socket bound to `host:port` (SO_REUSEADDR, and SO_REUSEPORT when `reuse_port`), not yet
    listening: uvicorn listens on it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class HotRoute:
    """ASGI middleware serving one exact endpoint without FastAPI's per-request layers.

    Routing, dependency solving and request/response model validation cost more CPU than a hot endpoint's
    own work. Requests for `method path` go straight to `endpoint` (a plain Starlette endpoint that parses
    and renders its own JSON); everything else goes on to the app. Add it before MetricsMiddleware so it is
    still measured; unexpected exceptions still reach the app's error handler through ServerErrorMiddleware.
    A FastAPI route with the same path can stay for the OpenAPI docs. FastAPI's request span (opened outside
    the middleware) is named after the route template here, as FastAPI's router would have named it.
    """

    def __init__(
        self, app: ASGIApp, *, method: str, path: str, endpoint: Callable[[Request], Awaitable[Response]]
    ) -> None:
        self.app = app
        self.method = method
        self.path = path
        self.endpoint = endpoint
        self.route = Route(path, endpoint, methods=[method])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == self.path and scope["method"] == self.method:
            scope["route"] = self.route
            span = trace.get_current_span()
            if span.is_recording():
                span.update_name(f"{self.method} {self.path}")
                span.set_attribute("http.route", self.path)
            # Straight to the endpoint: Starlette's Route.handle would only add request_response and its
            # exception wrapper, which has no handlers out here (they are set inside, by ExceptionMiddleware), so
            # an unexpected error reaches ServerErrorMiddleware either way.
            response = await self.endpoint(Request(scope, receive, send))
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
