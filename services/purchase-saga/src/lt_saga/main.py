"""FastAPI app factory; the lifespan is the composition root (pool, migrations, Kafka, outbox, runner)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
from fastapi import FastAPI

from leaky_common.db import apply_migrations, create_pool
from leaky_common.errors import install_error_handlers
from leaky_common.kafka import EventConsumer, EventPublisher, ensure_topics
from leaky_common.observability import MetricsMiddleware, add_ops_routes
from lt_saga.api import router
from lt_saga.payments import PaymentClient
from lt_saga.relay import ElectedRelay
from lt_saga.replies import ReplyHandler
from lt_saga.saga import SagaRunner
from lt_saga.settings import SagaSettings

__all__ = ["create_app"]

MIGRATIONS = Path(__file__).parent / "migrations"


async def _broker_reachable(bootstrap: str, timeout_s: float = 1.0) -> bool:
    for address in bootstrap.split(","):
        parts = urlsplit(f"//{address.strip()}")
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(parts.hostname, parts.port or 9092), timeout=timeout_s
            )
        except (OSError, TimeoutError):
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True
    return False


def create_app(settings: SagaSettings) -> FastAPI:
    """The purchase-saga HTTP app; resources live in its lifespan."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = await create_pool(settings.database_url, max_size=settings.db_pool_size)
        async with contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(pool.close)
            await apply_migrations(pool, MIGRATIONS)
            await ensure_topics(
                settings,
                [settings.quota_commands_topic, settings.saga_replies_topic, settings.purchase_events_topic],
            )
            publisher = EventPublisher(settings)
            await publisher.start()
            stack.push_async_callback(publisher.stop)
            relay = ElectedRelay(settings.database_url, pool, publisher)
            await relay.start()
            stack.push_async_callback(relay.stop)
            payments = PaymentClient(
                settings.payment_provider_url, settings.payment_api_key, settings.payment_timeout_s
            )
            await payments.start()
            stack.push_async_callback(payments.close)
            runner = SagaRunner(pool, payments, settings)
            # Replies get connections of their own: behind hundreds of running sagas in the shared pool they
            # would wait, and a reply handled late is a step that times out.
            reply_pool = await create_pool(settings.database_url, max_size=2)
            stack.push_async_callback(reply_pool.close)
            consumer = EventConsumer(
                settings,
                group_id=settings.consumer_group,
                topics=[settings.saga_replies_topic],
                handler=ReplyHandler(reply_pool, runner, settings),
                publisher=publisher,
            )
            await consumer.start()
            stack.push_async_callback(consumer.stop)
            # Stopped first (callbacks run in reverse): no saga step runs while its resources close.
            stack.push_async_callback(runner.stop)
            app.state.settings = settings
            app.state.pool = pool
            app.state.runner = runner
            app.state.relay = relay
            await runner.start_background()
            await runner.recover_once()
            yield

    app = FastAPI(title="Leaky Tokens purchase saga", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    install_error_handlers(app)
    app.add_middleware(MetricsMiddleware, service=settings.service_name)
    app.include_router(router)

    async def ready() -> dict[str, bool]:
        postgres = False
        pool = getattr(app.state, "pool", None)
        if pool is not None:
            try:
                async with pool.acquire(timeout=1.0) as conn:
                    postgres = await conn.fetchval("SELECT 1") == 1
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                postgres = False
        return {"postgres": postgres, "broker": await _broker_reachable(settings.kafka_bootstrap)}

    add_ops_routes(app, settings.service_name, ready)
    return app
