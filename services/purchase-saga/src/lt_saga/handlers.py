"""The consumer's table from message type to handler: quota's replies to the saga's commands.

Anything else on the replies topic is skipped.
"""

from __future__ import annotations

from leaky_common.dispatch import dispatcher
from leaky_common.events import TokensCredited, TokensDebited
from leaky_common.kafka import Handler
from lt_saga.usecases.replies import Replies

__all__ = ["handler"]


def handler(replies: Replies) -> Handler:
    """The `EventConsumer` handler of the replies topic."""
    return dispatcher({TokensCredited: replies.apply, TokensDebited: replies.apply})
