"""The quota service's FastAPI app: `bootstrap.run_quota` composes everything in the lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from leaky_common.api import service_app
from leaky_common.db import ping
from leaky_common.link import LinkServer
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
            if settings.link_port is None:
                yield
                return
            # The internal link (the gateway's admissions and releases without HTTP), beside the HTTP port.
            link = LinkServer("quota", hot.link_ops(quota.admission, quota.settlement, app.state.verifier))
            app.state.link_port = await link.start(
                settings.host, settings.link_port, reuse_port=settings.reuse_port
            )
            try:
                yield
            finally:
                await link.stop()

    async def ready(app: FastAPI) -> dict[str, bool]:
        checks = {"postgres": False, "redis": False, "consumer": False}
        quota: Quota | None = getattr(app.state, "quota", None)
        if quota is None:
            return checks
        checks["postgres"] = await ping(quota.db)
        with contextlib.suppress(Exception):
            checks["redis"] = bool(await quota.state.redis.ping())
        checks["consumer"] = all(c is not None and c.running for c in (quota.consumer, quota.commands))
        return checks

    app = service_app(
        settings,
        title="Leaky Tokens quota",
        lifespan=lifespan,
        ready=ready,
        hot_route=[("/internal/admit", hot.admit), ("/internal/release", hot.release)],
    )
    app.include_router(internal_router)
    app.include_router(public_router)
    return app
