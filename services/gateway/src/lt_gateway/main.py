"""Gateway app factory: the public OpenAI-compatible API and the management proxy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from leaky_common.api import install_openapi
from leaky_common.errors import install_error_handlers
from leaky_common.observability import MetricsMiddleware, add_ops_routes
from leaky_common.serve import HotRoute
from lt_gateway.adapters.providers import Provider
from lt_gateway.api import management, routes
from lt_gateway.bootstrap import build_gateway
from lt_gateway.settings import GatewaySettings


def create_app(settings: GatewaySettings, providers: dict[str, Provider] | None = None) -> FastAPI:
    """Build the gateway app; connections are opened in the lifespan."""
    gateway = build_gateway(settings, providers)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        app.state.usage = gateway.usage
        try:
            yield
        finally:
            await gateway.stop()

    app = FastAPI(
        title="Leaky Tokens gateway",
        version="0.1.0",
        description="OpenAI-compatible, governed LLM gateway. Management paths are forwarded to their owners.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.models = gateway.models
    app.state.quota = gateway.quota
    app.state.management = gateway.management
    install_error_handlers(app)
    install_openapi(app)
    # The chat endpoint skips FastAPI's routing layers (its route below stays for the docs).
    app.add_middleware(HotRoute, method="POST", path="/v1/chat/completions", endpoint=gateway.chat.handle)
    app.add_middleware(MetricsMiddleware, service="gateway")
    add_ops_routes(app, "gateway", gateway.ready)
    # Order matters: the management catch-alls come last.
    app.include_router(routes.governed_router(gateway.chat))
    app.include_router(routes.models_router)
    app.include_router(management.router)
    return app
