"""Notifier app factory: the admin API, with the running notifier (see `bootstrap`) in its lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from leaky_common.api import install_openapi
from leaky_common.db import ping
from leaky_common.errors import install_error_handlers
from leaky_common.observability import MetricsMiddleware, add_ops_routes
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
            yield

    app = FastAPI(title="Leaky Tokens notifier", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    install_error_handlers(app)
    install_openapi(app)
    app.add_middleware(MetricsMiddleware, service=settings.service_name)

    async def ready() -> dict[str, bool]:
        return {"postgres": await ping(getattr(app.state, "pool", None))}

    add_ops_routes(app, settings.service_name, ready)
    app.include_router(router)
    return app
