"""Notifier app factory; the lifespan is the composition root (pool, migrations, consumer, delivery loop)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from leaky_common.db import apply_migrations, create_pool, ping
from leaky_common.errors import install_error_handlers
from leaky_common.kafka import EventConsumer, EventPublisher, ensure_topics
from leaky_common.observability import MetricsMiddleware, add_ops_routes
from lt_notifier.api import router
from lt_notifier.delivery import Deliverer
from lt_notifier.handlers import NotificationHandler
from lt_notifier.repository import MIGRATIONS, sync_default_channels
from lt_notifier.settings import DEFAULT_CHANNEL_IDS, NotifierSettings

__all__ = ["create_app"]


def create_app(settings: NotifierSettings) -> FastAPI:
    """The notifier HTTP app; resources live in its lifespan."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            pool = await create_pool(settings.database_url, max_size=settings.db_pool_max)
            stack.push_async_callback(pool.close)
            await apply_migrations(pool, MIGRATIONS)
            await sync_default_channels(pool, settings.default_channels(), DEFAULT_CHANNEL_IDS)
            app.state.pool = pool
            app.state.settings = settings

            deliverer = Deliverer(pool, settings)
            await deliverer.start()
            app.state.deliverer = deliverer
            stack.push_async_callback(deliverer.stop)

            await ensure_topics(settings, settings.topics)
            publisher = EventPublisher(settings)
            await publisher.start()
            stack.push_async_callback(publisher.stop)
            consumer = EventConsumer(
                settings,
                group_id=settings.consumer_group,
                topics=settings.topics,
                handler=NotificationHandler(pool, deliverer),
                publisher=publisher,
            )
            await consumer.start()
            # Stopped first (callbacks run in reverse): no event is handled while the pool closes.
            stack.push_async_callback(consumer.stop)
            yield

    app = FastAPI(title="Leaky Tokens notifier", version="0.1.0", lifespan=lifespan)
    install_error_handlers(app)
    app.add_middleware(MetricsMiddleware, service=settings.service_name)

    async def ready() -> dict[str, bool]:
        return {"postgres": await ping(getattr(app.state, "pool", None))}

    add_ops_routes(app, settings.service_name, ready)
    app.include_router(router)
    return app
