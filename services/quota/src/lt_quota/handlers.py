"""Kafka messages -> use cases: the one table of what quota does with each message it consumes. Other
message types on these topics are other consumers' business and are skipped."""

from __future__ import annotations

from leaky_common.dispatch import dispatcher
from leaky_common.events import CreditTokens, DebitTokens, RequestFreeze, UsageRecorded
from leaky_common.kafka import Handler
from lt_quota.usecases.freezes import Freezes
from lt_quota.usecases.settlement import Settlement
from lt_quota.usecases.topups import TopUps

__all__ = ["make_handler"]


def make_handler(settlement: Settlement, topups: TopUps, freezes: Freezes) -> Handler:
    """The consumer's handler over the use cases."""
    return dispatcher(
        {
            UsageRecorded: settlement.settle_usage,
            CreditTokens: topups.credit,
            DebitTokens: topups.debit,
            RequestFreeze: freezes.freeze,
        }
    )
