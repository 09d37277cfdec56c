"""Gateway app factory: the public OpenAI-compatible API and the management proxy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from leaky_common.api import service_app
from lt_gateway.adapters.providers import Provider
from lt_gateway.api import console, docs, management, probe, routes, signin
from lt_gateway.api.limits import ClientLimits
from lt_gateway.bootstrap import build_gateway
from lt_gateway.domain.client_address import AddressProof
from lt_gateway.settings import GatewaySettings

_CORS_HEADERS = (
    "authorization", "content-type", "x-api-key", "x-request-id", "x-session-id", "x-privacy-mode",
    "x-project-priority", "idempotency-key",
)  # fmt: skip


def address_proof(settings: GatewaySettings) -> AddressProof:
    """The key client addresses relayed by the console are proven with: derived from a secret every gateway
    instance shares (the internal signing key, else the fingerprint secret)."""
    secrets = (settings.internal_signing_key, settings.fingerprint_secret)
    return AddressProof.from_secrets(s.get_secret_value() if s else None for s in secrets)


def client_middleware(settings: GatewaySettings, proof: AddressProof | None = None) -> list[Middleware]:
    """CORS (only when origins are configured) and the per-address limits."""
    middleware = []
    if settings.cors_allow_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.cors_allow_origins,
                allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                allow_headers=list(_CORS_HEADERS),
                expose_headers=["x-request-id", "x-leaky-tokens-cost-usd", "retry-after"],
            )
        )
    middleware.append(
        Middleware(
            ClientLimits,
            management_rate_per_min=settings.management_rate_per_min,
            unauthenticated_rate_per_min=settings.unauthenticated_rate_per_min,
            proof=proof,
        )
    )
    return middleware


def create_app(settings: GatewaySettings, providers: dict[str, Provider] | None = None) -> FastAPI:
    """Build the gateway app; connections are opened in the lifespan."""
    gateway = build_gateway(settings, providers)
    proof = address_proof(settings)

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
        description=(
            "OpenAI-compatible, governed LLM gateway. Management paths are forwarded to their owners "
            "(quota, purchase-saga, analytics, notifier); their operations are listed here as the owners "
            "document them. Authenticate with an API key, or on management routes with a sign-in access "
            "token (`POST /v1/auth/login`)."
        ),
        lifespan=lifespan,
        ready=ready,
        # The chat endpoint skips FastAPI's routing layers (its route below stays for the docs).
        hot_route=("/v1/chat/completions", gateway.chat.handle),
        service="gateway",
        middleware=client_middleware(settings, proof),
    )
    app.state.address_proof = proof
    app.state.models = gateway.models
    app.state.quota = gateway.quota
    app.state.management = gateway.management
    app.state.probe = gateway.probe
    app.state.console = gateway.management_client
    # Order matters: the management catch-alls come last.
    app.include_router(routes.governed_router(gateway.chat))
    app.include_router(routes.models_router)
    app.include_router(probe.router)
    app.include_router(signin.router)
    app.include_router(console.router)
    app.include_router(management.router)
    docs.install_public_openapi(app)
    return app
