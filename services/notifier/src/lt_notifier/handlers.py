"""Kafka events -> queued channel deliveries (inbox, dedup key and deliveries in one transaction)."""

from __future__ import annotations

import asyncpg
from aiokafka import ConsumerRecord

from leaky_common.events import AnyMessage
from lt_notifier.delivery import Deliverer
from lt_notifier.domain import webhook_payload
from lt_notifier.notification import describe
from lt_notifier.repository import record_event

__all__ = ["NotificationHandler"]


class NotificationHandler:
    """EventConsumer handler: queue one delivery per matching subscription, once per event id.

    It only writes to Postgres; sending happens in the `Deliverer`, so no receiver can slow consumption.
    """

    def __init__(self, pool: asyncpg.Pool, deliverer: Deliverer) -> None:
        self._pool = pool
        self._deliverer = deliverer

    async def __call__(self, message: AnyMessage, _record: ConsumerRecord[bytes, bytes]) -> None:
        note = describe(message)
        if note is None:
            return
        queued = await record_event(self._pool, note, webhook_payload(message))
        if queued:
            self._deliverer.wake()
