"""The quota service's FastAPI app: `bootstrap.run_quota` composes everything in the lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from leaky_common.api import install_openapi
from leaky_common.errors import install_error_handlers
from leaky_common.observability import MetricsMiddleware, add_ops_routes
from leaky_common.serve import HotRoute
from lt_quota.api import hot
from lt_quota.api.routes import internal_router, public_router
from lt_quota.bootstrap import Quota, run_quota
from lt_quota.settings import QuotaSettings
from lt_quota.usecases.context import Clock

__all__ = ["create_app"]


def create_app(settings: QuotaSettings, *, clock: Clock | None = None) -> FastAPI:
    """Build the app; `clock` (ms since epoch) is injectable for tests."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with run_quota(settings, clock) as quota:
            app.state.quota = quota
            yield

    app = FastAPI(title="Leaky Tokens quota", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings  # read by leaky_common.api's principal dependencies
    app.add_middleware(HotRoute, method="POST", path="/internal/admit", endpoint=hot.admit)
    app.add_middleware(MetricsMiddleware, service=settings.service_name)
    install_error_handlers(app)
    install_openapi(app)
    app.include_router(internal_router)
    app.include_router(public_router)

    async def ready() -> dict[str, bool]:
        checks = {"postgres": False, "redis": False, "consumer": False}
        quota: Quota | None = getattr(app.state, "quota", None)
        if quota is None:
            return checks
        with contextlib.suppress(Exception):
            async with quota.db.acquire() as conn:
                checks["postgres"] = await conn.fetchval("SELECT 1") == 1
        with contextlib.suppress(Exception):
            checks["redis"] = bool(await quota.state.redis.ping())
        checks["consumer"] = quota.consumer is not None and quota.consumer.running
        return checks

    add_ops_routes(app, settings.service_name, ready)
    return app
