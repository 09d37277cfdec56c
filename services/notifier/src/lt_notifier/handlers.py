"""Kafka events -> queued webhook deliveries (inbox + deliveries in one transaction)."""

from __future__ import annotations

import asyncpg
from aiokafka import ConsumerRecord

from leaky_common.events import AnyMessage
from lt_notifier.delivery import Deliverer
from lt_notifier.domain import NOTIFIABLE_TYPES, event_type, webhook_payload
from lt_notifier.repository import record_event

__all__ = ["NotificationHandler"]


class NotificationHandler:
    """EventConsumer handler: queue one delivery per matching subscription, once per event id."""

    def __init__(self, pool: asyncpg.Pool, deliverer: Deliverer) -> None:
        self._pool = pool
        self._deliverer = deliverer

    async def __call__(self, message: AnyMessage, _record: ConsumerRecord[bytes, bytes]) -> None:
        type_ = event_type(message)
        if type_ not in NOTIFIABLE_TYPES:
            return
        queued = await record_event(self._pool, message.event_id, type_, webhook_payload(message))
        if queued:
            self._deliverer.wake()
