"""The composition root: builds the pools, the publisher and its elected outbox relay, the payment client,
the saga runner, the use cases and the replies consumer from settings, and tears them down in reverse."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from leaky_common.db import apply_migrations, create_pool
from leaky_common.kafka import EventConsumer, EventPublisher, ensure_topics
from leaky_common.outbox import ElectedRelay
from lt_saga.adapters.payments import PaymentClient
from lt_saga.handlers import handler
from lt_saga.settings import SagaSettings
from lt_saga.usecases.purchases import Purchases
from lt_saga.usecases.replies import Replies
from lt_saga.usecases.runner import SagaRunner
from lt_saga.usecases.steps import SagaSteps

__all__ = ["MIGRATIONS", "Saga", "running_saga"]

MIGRATIONS = Path(__file__).parent / "migrations"


@dataclass(frozen=True, slots=True)
class Saga:
    """The running saga service's parts the HTTP app needs."""

    pool: asyncpg.Pool
    runner: SagaRunner
    relay: ElectedRelay
    purchases: Purchases


async def _payments(settings: SagaSettings, stack: contextlib.AsyncExitStack) -> PaymentClient:
    payments = PaymentClient(
        settings.payment_provider_url, settings.payment_api_key, settings.payment_timeout_s
    )
    await payments.start()
    stack.push_async_callback(payments.close)
    return payments


@contextlib.asynccontextmanager
async def running_saga(settings: SagaSettings) -> AsyncIterator[Saga]:
    """Migrate, start the publisher, the relay election, the runner and the replies consumer; resume
    unfinished sagas."""
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
        runner = SagaRunner(pool, SagaSteps(pool, await _payments(settings, stack), settings), settings)
        # Replies get connections of their own: behind hundreds of running sagas in the shared pool they
        # would wait, and a reply handled late is a step that times out.
        reply_pool = await create_pool(settings.database_url, max_size=2, name="replies")
        stack.push_async_callback(reply_pool.close)
        consumer = EventConsumer(
            settings,
            group_id=settings.consumer_group,
            topics=[settings.saga_replies_topic],
            handler=handler(Replies(reply_pool, runner, settings)),
            publisher=publisher,
        )
        await consumer.start()
        stack.push_async_callback(consumer.stop)
        # Stopped first (callbacks run in reverse): no saga step runs while its resources close.
        stack.push_async_callback(runner.stop)
        saga = Saga(pool, runner, relay, Purchases(pool, runner, settings))
        await runner.start_background()
        await runner.recover_once()
        yield saga
