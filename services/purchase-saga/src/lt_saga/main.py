"""FastAPI app factory: the purchase API, with the running saga service (see `bootstrap`) in its lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from leaky_common.api import install_openapi
from leaky_common.errors import install_error_handlers
from leaky_common.observability import MetricsMiddleware, add_ops_routes
from lt_saga.adapters.probes import broker_reachable, postgres_ready
from lt_saga.api.routes import router
from lt_saga.bootstrap import running_saga
from lt_saga.settings import SagaSettings

__all__ = ["create_app"]


def create_app(settings: SagaSettings) -> FastAPI:
    """The purchase-saga HTTP app; resources live in its lifespan."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with running_saga(settings) as saga:
            app.state.pool = saga.pool
            app.state.runner = saga.runner
            app.state.relay = saga.relay
            app.state.purchases = saga.purchases
            yield

    app = FastAPI(title="Leaky Tokens purchase saga", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    install_error_handlers(app)
    install_openapi(app)
    app.add_middleware(MetricsMiddleware, service=settings.service_name)
    app.include_router(router)

    async def ready() -> dict[str, bool]:
        return {
            "postgres": await postgres_ready(getattr(app.state, "pool", None)),
            "broker": await broker_reachable(settings.kafka_bootstrap),
        }

    add_ops_routes(app, settings.service_name, ready)
    return app
