"""Kafka messages -> use cases: the tables of what quota does with each message it consumes. Other message
types on these topics are other consumers' business and are skipped.

Usage events and commands have separate consumers (and tasks): a freeze or a saga's credit never waits
behind a backlog of usage events. Usage events are settled a fetched batch at a time."""

from __future__ import annotations

from leaky_common.dispatch import dispatcher
from leaky_common.events import AnyMessage, CreditTokens, DebitTokens, RequestFreeze, UsageRecorded
from leaky_common.kafka import Handler
from leaky_common.kafka_batch import BatchHandler
from lt_quota.usecases.freezes import Freezes
from lt_quota.usecases.settlement import Settlement
from lt_quota.usecases.settlement_batch import BatchSettlement
from lt_quota.usecases.topups import TopUps

__all__ = ["make_command_handler", "make_usage_batch_handler", "make_usage_handler"]


def make_usage_handler(settlement: Settlement) -> Handler:
    """One usage event at a time (what a failed batch falls back to)."""
    return dispatcher({UsageRecorded: settlement.settle_usage})


def make_usage_batch_handler(batch: BatchSettlement) -> BatchHandler:
    """A fetched batch of the usage topic at once."""

    async def handle(messages: list[AnyMessage]) -> None:
        await batch.settle([m for m in messages if isinstance(m, UsageRecorded)])

    return handle


def make_command_handler(topups: TopUps, freezes: Freezes) -> Handler:
    """Commands to quota: top-ups of the purchase saga and freezes."""
    return dispatcher(
        {
            CreditTokens: topups.credit,
            DebitTokens: topups.debit,
            RequestFreeze: freezes.freeze,
        }
    )
