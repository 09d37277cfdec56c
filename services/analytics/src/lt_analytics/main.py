"""Analytics API app factory: usage, reports, leaderboard and anomalies read from what the worker maintains."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from leaky_common.api import install_openapi
from leaky_common.db import ping
from leaky_common.errors import install_error_handlers
from leaky_common.observability import MetricsMiddleware, add_ops_routes
from lt_analytics.api.routes import router
from lt_analytics.bootstrap import open_analytics
from lt_analytics.settings import AnalyticsSettings

__all__ = ["create_app"]


def create_app(settings: AnalyticsSettings) -> FastAPI:
    """The analytics HTTP app; the pool, migrations and use cases are built in its lifespan."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        analytics = await open_analytics(settings)
        try:
            app.state.pool = analytics.pool
            app.state.reports = analytics.reports
            yield
        finally:
            await analytics.close()

    app = FastAPI(title="Leaky Tokens analytics", version="0.1.0", lifespan=lifespan)
    # The principal dependencies read the internal token from here.
    app.state.settings = settings
    install_error_handlers(app)
    install_openapi(app)
    app.add_middleware(MetricsMiddleware, service=settings.service_name)

    async def ready() -> dict[str, bool]:
        return {"postgres": await ping(getattr(app.state, "pool", None))}

    add_ops_routes(app, settings.service_name, ready)
    app.include_router(router)
    return app
