"""Kafka messages -> use cases: the one table of what quota does with each message it consumes, and the one
topic each may come from. Other message types are other consumers' business and are skipped; a known type on
another topic (a CreditTokens on `usage.recorded`, say) is a forgery by that topic's producer: logged, skipped.
The broker's ACLs decide who may write each topic (docs/security.md).

Usage events and commands have separate consumers (and tasks): a freeze or a saga's credit never waits
behind a backlog of usage events. Usage events are settled a fetched batch at a time (`make_handler` is what
a failed batch falls back to, one message at a time)."""

from __future__ import annotations

import logging

from aiokafka import ConsumerRecord

from leaky_common.dispatch import dispatcher
from leaky_common.events import AnyMessage, CreditTokens, DebitTokens, RequestFreeze, Topics, UsageRecorded
from leaky_common.kafka import Handler
from leaky_common.kafka_batch import BatchHandler
from lt_quota.usecases.freezes import Freezes
from lt_quota.usecases.settlement import Settlement
from lt_quota.usecases.settlement_batch import BatchSettlement
from lt_quota.usecases.topups import TopUps

__all__ = ["SOURCES", "make_handler", "make_usage_batch_handler"]

logger = logging.getLogger(__name__)

# The only topic each handled type is accepted from.
SOURCES: dict[type[AnyMessage], str] = {
    UsageRecorded: Topics.USAGE,
    CreditTokens: Topics.QUOTA_COMMANDS,
    DebitTokens: Topics.QUOTA_COMMANDS,
    RequestFreeze: Topics.FREEZE_REQUESTS,
}


def make_handler(settlement: Settlement, topups: TopUps, freezes: Freezes) -> Handler:
    """The consumer's handler over the use cases."""
    dispatch = dispatcher(
        {
            UsageRecorded: settlement.settle_usage,
            CreditTokens: topups.credit,
            DebitTokens: topups.debit,
            RequestFreeze: freezes.freeze,
        }
    )

    async def handle(message: AnyMessage, record: ConsumerRecord[bytes, bytes]) -> None:
        source = SOURCES.get(type(message))
        if source is not None and record.topic != source:
            logger.warning(
                "skipped %s %s on %s: it is accepted only from %s",
                type(message).__name__,
                message.event_id,
                record.topic,
                source,
            )
            return
        await dispatch(message, record)

    return handle


def make_usage_batch_handler(batch: BatchSettlement) -> BatchHandler:
    """A fetched batch of `usage.recorded` at once: its usage events (any other type there is skipped, as
    `make_handler` skips a command on another producer's topic)."""

    async def handle(messages: list[AnyMessage]) -> None:
        usage = [m for m in messages if isinstance(m, UsageRecorded)]
        for m in messages:
            if not isinstance(m, UsageRecorded) and type(m) in SOURCES:
                logger.warning("skipped %s %s on %s", type(m).__name__, m.event_id, Topics.USAGE)
        await batch.settle(usage)

    return handle
