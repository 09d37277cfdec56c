"""One table from message type to handler: what a service's consumer does with each message it reads.

Types missing from the table are skipped: a topic carries other consumers' messages too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiokafka import ConsumerRecord

from leaky_common.events import AnyMessage
from leaky_common.kafka import Handler

__all__ = ["HandlerTable", "dispatcher"]

HandlerTable = Mapping[type[Any], Callable[[Any], Awaitable[None]]]


def dispatcher(table: HandlerTable) -> Handler:
    """An `EventConsumer` handler that calls `table[type(message)]` and skips types it does not list."""
    handlers = dict(table)

    async def handle(message: AnyMessage, _record: ConsumerRecord[bytes, bytes]) -> None:
        handler = handlers.get(type(message))
        if handler is None:  # a subclass of a listed type is handled as that type (isinstance semantics)
            handler = next((handlers[c] for c in type(message).__mro__[1:] if c in handlers), None)
        if handler is not None:
            await handler(message)

    return handle
