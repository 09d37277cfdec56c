"""Analytics API app factory: usage, reports, leaderboard and anomalies read from what the worker maintains."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from leaky_common.api import service_app
from leaky_common.db import ping
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

    async def ready(app: FastAPI) -> dict[str, bool]:
        return {"postgres": await ping(getattr(app.state, "pool", None))}

    app = service_app(settings, title="Leaky Tokens analytics", lifespan=lifespan, ready=ready)
    app.include_router(router)
    return app
