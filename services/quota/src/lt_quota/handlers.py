"""Kafka messages -> use cases. Unknown message types on our topics are ignored (other consumers' business)."""

from __future__ import annotations

from aiokafka import ConsumerRecord

from leaky_common.events import AnyMessage, CreditTokens, DebitTokens, RequestFreeze, UsageRecorded
from leaky_common.kafka import Handler
from lt_quota.service import QuotaService

__all__ = ["make_handler"]


def make_handler(service: QuotaService) -> Handler:
    """The consumer's handler over `service`."""

    async def handle(message: AnyMessage, _record: ConsumerRecord[bytes, bytes]) -> None:
        if isinstance(message, UsageRecorded):
            await service.settle_usage(message)
        elif isinstance(message, CreditTokens | DebitTokens):
            await service.adjust_limit(message)
        elif isinstance(message, RequestFreeze):
            await service.freeze(message)

    return handle
