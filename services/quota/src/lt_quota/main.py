"""The quota service's FastAPI app: resources live in the lifespan (composition root)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
from fastapi import FastAPI
from redis.asyncio import BlockingConnectionPool, Redis

from leaky_common.api import install_openapi
from leaky_common.db import apply_migrations, create_database, create_pool, database_url_for
from leaky_common.errors import install_error_handlers
from leaky_common.events import Topics
from leaky_common.kafka import EventConsumer, EventPublisher, ensure_topics
from leaky_common.observability import MetricsMiddleware, add_ops_routes
from leaky_common.outbox import OutboxRelay
from leaky_common.serve import HotRoute
from lt_quota.adapters.redis_state import RedisState
from lt_quota.api import hot
from lt_quota.api.routes import internal_router, public_router
from lt_quota.governance import Governance
from lt_quota.handlers import make_handler
from lt_quota.service import Clock, QuotaService, system_clock
from lt_quota.settings import QuotaSettings

__all__ = ["create_app"]

logger = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"


async def _open_database(url: str, size: int) -> asyncpg.Pool:
    """Connect, creating the service's database on first start."""
    try:
        return await create_pool(url, max_size=size)
    except asyncpg.InvalidCatalogNameError:
        name = urlsplit(url).path.lstrip("/")
        await create_database(database_url_for(url, "postgres"), name)
        return await create_pool(url, max_size=size)


async def _sweep_forever(service: QuotaService, interval_s: float) -> None:
    while True:
        try:
            charged = await service.sweep_expired()
            if charged:
                logger.info("charged %d expired reservations", charged)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("reservation sweep failed; will retry")
        await asyncio.sleep(interval_s)


def create_app(settings: QuotaSettings, *, clock: Clock | None = None) -> FastAPI:
    """Build the app; `clock` (ms since epoch) is injectable for tests."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            db = await _open_database(settings.database_url, settings.db_pool_size)
            stack.push_async_callback(db.close)
            await apply_migrations(db, MIGRATIONS)

            # Bounded, waiting pool: a burst of admissions queues for a connection instead of opening hundreds.
            redis_pool: BlockingConnectionPool[Any] = BlockingConnectionPool.from_url(
                settings.redis_url,
                max_connections=settings.redis_max_connections,
                timeout=5,
                decode_responses=True,
            )
            redis: Redis[str] = Redis(connection_pool=redis_pool, decode_responses=True)
            stack.push_async_callback(redis_pool.aclose)  # type: ignore[attr-defined]  # stubs predate aclose
            service = QuotaService(
                settings, db, RedisState(redis, settings.redis_prefix), clock or system_clock
            )
            if settings.bootstrap_admin_key:
                await service.bootstrap_admin(settings.bootstrap_admin_key)
            loaded = await service.load_pools()
            frozen = await service.restore_freezes()
            logger.info("loaded %d pools and %d frozen targets into redis", loaded, frozen)

            await ensure_topics(
                settings, [Topics.USAGE, Topics.QUOTA_COMMANDS, Topics.SAGA_REPLIES, Topics.QUOTA_EVENTS]
            )
            publisher = EventPublisher(settings)
            await publisher.start()
            stack.push_async_callback(publisher.stop)
            relay = OutboxRelay(db, publisher)
            await relay.start()
            stack.push_async_callback(relay.stop)
            consumer = EventConsumer(
                settings,
                group_id=settings.consumer_group,
                topics=[Topics.USAGE, Topics.QUOTA_COMMANDS],
                handler=make_handler(service),
                publisher=publisher,
            )
            await consumer.start()
            stack.push_async_callback(consumer.stop)
            sweeper = asyncio.create_task(_sweep_forever(service, settings.sweep_interval_s), name="sweeper")

            async def stop_sweeper() -> None:
                sweeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sweeper

            stack.push_async_callback(stop_sweeper)

            app.state.service = service
            app.state.governance = Governance(service)
            app.state.consumer = consumer
            yield

    app = FastAPI(title="Leaky Tokens quota", version="0.1.0", lifespan=lifespan)
    app.add_middleware(HotRoute, method="POST", path="/internal/admit", endpoint=hot.admit)
    app.add_middleware(MetricsMiddleware, service=settings.service_name)
    install_error_handlers(app)
    install_openapi(app)
    app.include_router(internal_router)
    app.include_router(public_router)

    async def ready() -> dict[str, bool]:
        checks = {"postgres": False, "redis": False, "consumer": False}
        service: QuotaService | None = getattr(app.state, "service", None)
        if service is None:
            return checks
        with contextlib.suppress(Exception):
            async with service.db.acquire() as conn:
                checks["postgres"] = await conn.fetchval("SELECT 1") == 1
        with contextlib.suppress(Exception):
            checks["redis"] = bool(await service.state.redis.ping())
        consumer = getattr(app.state, "consumer", None)
        checks["consumer"] = consumer is not None and consumer.running
        return checks

    add_ops_routes(app, settings.service_name, ready)
    return app
