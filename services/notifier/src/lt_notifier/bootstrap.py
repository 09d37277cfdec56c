"""The composition root: builds the pool, the channel senders, the deliverer, the use cases and the consumer
from settings, and tears them down in reverse."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from leaky_common.db import apply_migrations, create_pool
from leaky_common.kafka import EventConsumer, EventPublisher, ensure_topics
from leaky_common.sealing import SecretBox
from lt_notifier.adapters.senders import ChannelSender
from lt_notifier.adapters.subscriptions import reseal_subscriptions, sync_default_channels
from lt_notifier.handlers import handler
from lt_notifier.settings import DEFAULT_CHANNEL_IDS, NotifierSettings
from lt_notifier.usecases.admin import SubscriptionAdmin
from lt_notifier.usecases.delivery import Deliverer
from lt_notifier.usecases.queueing import NotificationQueue

__all__ = ["MIGRATIONS", "Notifier", "running_notifier"]

MIGRATIONS = Path(__file__).parent / "migrations"


@dataclass(frozen=True, slots=True)
class Notifier:
    """The running notifier's parts the HTTP app needs."""

    pool: asyncpg.Pool
    deliverer: Deliverer
    subscriptions: SubscriptionAdmin
    queue: NotificationQueue


@contextlib.asynccontextmanager
async def running_notifier(settings: NotifierSettings) -> AsyncIterator[Notifier]:
    """Migrate, sync the env-configured channels, start the delivery loop and the event consumer."""
    async with contextlib.AsyncExitStack() as stack:
        pool = await create_pool(settings.database_url, max_size=settings.db_pool_max)
        stack.push_async_callback(pool.close)
        await apply_migrations(pool, MIGRATIONS)
        box = SecretBox(settings.channel_secret_keys)
        defaults = settings.default_channels()
        if not box.configured and any(c.url is not None or c.secrets for c in defaults):
            raise RuntimeError("channels configured by environment need LT_CHANNEL_SECRET_KEYS to be stored")
        await sync_default_channels(pool, box, defaults, DEFAULT_CHANNEL_IDS)
        await reseal_subscriptions(pool, box)

        sender = ChannelSender(settings)
        await sender.start()
        stack.push_async_callback(sender.close)
        deliverer = Deliverer(pool, settings, sender, box)
        await deliverer.start()
        stack.push_async_callback(deliverer.stop)

        await ensure_topics(settings, settings.topics)
        publisher = EventPublisher(settings)
        await publisher.start()
        stack.push_async_callback(publisher.stop)
        queue = NotificationQueue(pool, deliverer)
        consumer = EventConsumer(
            settings,
            group_id=settings.consumer_group,
            topics=settings.topics,
            handler=handler(queue),
            publisher=publisher,
        )
        await consumer.start()
        # Stopped first (callbacks run in reverse): no event is handled while the pool closes.
        stack.push_async_callback(consumer.stop)
        yield Notifier(pool, deliverer, SubscriptionAdmin(pool, deliverer, settings, box), queue)
