"""Gateway app factory: the public OpenAI-compatible API and the management proxy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from leaky_common.api import service_app
from lt_gateway.adapters.providers import Provider
from lt_gateway.api import management, probe, routes
from lt_gateway.bootstrap import build_gateway
from lt_gateway.settings import GatewaySettings


def create_app(settings: GatewaySettings, providers: dict[str, Provider] | None = None) -> FastAPI:
    """Build the gateway app; connections are opened in the lifespan."""
    gateway = build_gateway(settings, providers)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()

    async def ready(_: FastAPI) -> dict[str, bool]:
        return await gateway.ready()

    app = service_app(
        settings,
        title="Leaky Tokens gateway",
        description="OpenAI-compatible, governed LLM gateway. Management paths are forwarded to their owners.",
        lifespan=lifespan,
        ready=ready,
        # The chat endpoint skips FastAPI's routing layers (its route below stays for the docs).
        hot_route=("/v1/chat/completions", gateway.chat.handle),
        service="gateway",
    )
    app.state.models = gateway.models
    app.state.quota = gateway.quota
    app.state.management = gateway.management
    app.state.probe = gateway.probe
    # Order matters: the management catch-alls come last.
    app.include_router(routes.governed_router(gateway.chat))
    app.include_router(routes.models_router)
    app.include_router(probe.router)
    app.include_router(management.router)
    return app
