"""Analytics API app factory: usage, reports, leaderboard and anomalies read from what the worker maintains."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, FastAPI, Query, Request

from leaky_common.auth import INTERNAL_TOKEN_HEADER, PRINCIPAL_HEADER, principal_from_headers
from leaky_common.db import apply_migrations, create_pool, ping
from leaky_common.errors import Forbidden, install_error_handlers
from leaky_common.observability import MetricsMiddleware, add_ops_routes
from lt_analytics.api import ID_PATTERN
from lt_analytics.api import router as api_router
from lt_analytics.domain import UsageSummary, summarise, window_start
from lt_analytics.repository import MIGRATIONS, average_efficiency, daily_usage
from lt_analytics.settings import AnalyticsSettings

__all__ = ["create_app"]


def create_app(settings: AnalyticsSettings) -> FastAPI:
    """The analytics HTTP app; the pool and migrations live in its lifespan."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await create_pool(settings.database_url, max_size=settings.db_pool_max)
        try:
            await apply_migrations(pool, MIGRATIONS)
            app.state.pool = pool
            app.state.settings = settings
            yield
        finally:
            await pool.close()

    app = FastAPI(title="Leaky Tokens analytics", version="0.1.0", lifespan=lifespan)
    install_error_handlers(app)
    app.add_middleware(MetricsMiddleware, service=settings.service_name)

    async def ready() -> dict[str, bool]:
        return {"postgres": await ping(getattr(app.state, "pool", None))}

    add_ops_routes(app, settings.service_name, ready)

    router = APIRouter(tags=["analytics"])

    async def usage(
        request: Request,
        days: Annotated[int, Query(ge=1, le=366)] = 7,
        user_id: Annotated[str | None, Query(min_length=1, max_length=200, pattern=ID_PATTERN)] = None,
    ) -> UsageSummary:
        """Token use, cost and average efficiency of the caller (or, for admins, of `user_id`) over the last
        `days` UTC days, with breakdowns by model and day."""
        principal = principal_from_headers(
            request.headers.get(PRINCIPAL_HEADER),
            request.headers.get(INTERNAL_TOKEN_HEADER),
            settings.internal_token,
        )
        target = user_id or principal.user_id
        if target != principal.user_id and not principal.is_admin:
            raise Forbidden(
                "only admins may read another user's usage", param="user_id", code="admin_required"
            )
        since = window_start(datetime.now(UTC).date(), days)
        pool = request.app.state.pool
        summary = summarise(target, days, await daily_usage(pool, target, since))
        midnight = datetime.combine(since, datetime.min.time(), UTC)
        return summary.model_copy(
            update={"average_efficiency": await average_efficiency(pool, target, midnight)}
        )

    router.add_api_route("/v1/analytics/usage", usage, methods=["GET"], response_model=UsageSummary)
    router.add_api_route(
        "/api/v1/analytics/usage",
        usage,
        methods=["GET"],
        response_model=UsageSummary,
        include_in_schema=False,
    )
    app.include_router(router)
    app.include_router(api_router)
    return app
