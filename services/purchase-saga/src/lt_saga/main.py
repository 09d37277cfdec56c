"""FastAPI app factory: the purchase API, with the running saga service (see `bootstrap`) in its lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from leaky_common.api import service_app
from leaky_common.db import ping
from leaky_common.kafka import broker_reachable
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

    async def ready(app: FastAPI) -> dict[str, bool]:
        return {
            "postgres": await ping(getattr(app.state, "pool", None), timeout=1.0),
            "broker": await broker_reachable(settings.kafka_bootstrap),
        }

    app = service_app(settings, title="Leaky Tokens purchase saga", lifespan=lifespan, ready=ready)
    app.include_router(router)
    return app
