"""The consumer's table from message type to handler.

Every notifiable type goes to the one use case, `NotificationQueue.queue`: what each type says (severity,
text, dedup key) is the describer table in `lt_notifier.domain.notification`, so this table lists the same
types. Anything else on the topics (usage records, other consumers' messages) is skipped.
"""

from __future__ import annotations

from leaky_common.dispatch import dispatcher
from leaky_common.kafka import Handler
from lt_notifier.domain.notification import DESCRIBERS
from lt_notifier.usecases.queueing import NotificationQueue

__all__ = ["handler"]


def handler(queue: NotificationQueue) -> Handler:
    """The `EventConsumer` handler: each notifiable event is queued for its subscribers."""
    return dispatcher(dict.fromkeys(DESCRIBERS, queue.queue))
