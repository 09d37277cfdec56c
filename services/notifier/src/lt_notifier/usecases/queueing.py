"""Queueing notifications from consumed events: describe the event, then inbox it and queue one delivery per
matching subscription in one transaction. Nothing is sent here: the `Deliverer` sends, so no receiver can
slow consumption."""

from __future__ import annotations

import asyncpg

from leaky_common.events import Message
from lt_notifier.adapters.deliveries import record_event
from lt_notifier.domain.notification import describe
from lt_notifier.domain.webhook import webhook_payload
from lt_notifier.usecases.delivery import Deliverer

__all__ = ["NotificationQueue"]


class NotificationQueue:
    """Queues the deliveries of one event, once per event id, and wakes the deliverer."""

    def __init__(self, pool: asyncpg.Pool, deliverer: Deliverer) -> None:
        self._pool = pool
        self._deliverer = deliverer

    async def queue(self, message: Message) -> None:
        """Queue a delivery per subscription the event matches (none for events nobody is told about)."""
        await self.notify(message)

    async def notify(self, message: Message) -> bool:
        """`queue`, returning whether the event was new (False: already handled, or nobody is told about it)."""
        note = describe(message)
        if note is None:
            return False
        queued = await record_event(self._pool, note, webhook_payload(message))
        if queued:
            self._deliverer.wake()
        return queued is not None
