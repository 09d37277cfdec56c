"""Notifier app factory: the admin API, with the running notifier (see `bootstrap`) in its lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from leaky_common.api import service_app
from leaky_common.db import ping
from lt_notifier.api.alertmanager import router as alertmanager_router
from lt_notifier.api.routes import router
from lt_notifier.bootstrap import running_notifier
from lt_notifier.settings import NotifierSettings

__all__ = ["create_app"]


def create_app(settings: NotifierSettings) -> FastAPI:
    """The notifier HTTP app; resources live in its lifespan."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with running_notifier(settings) as notifier:
            app.state.pool = notifier.pool
            app.state.deliverer = notifier.deliverer
            app.state.subscriptions = notifier.subscriptions
            app.state.queue = notifier.queue
            yield

    async def ready(app: FastAPI) -> dict[str, bool]:
        return {"postgres": await ping(getattr(app.state, "pool", None))}

    app = service_app(settings, title="Leaky Tokens notifier", lifespan=lifespan, ready=ready)
    app.include_router(router)
    app.include_router(alertmanager_router)
    return app
