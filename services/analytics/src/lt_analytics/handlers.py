"""The analytics consumer's table from message type to handler: raw usage messages in, per-message outcomes
out (the faust agent sends the invalid ones to the DLQ).

Not built with `leaky_common.dispatch.dispatcher`: that table calls one handler per message and returns
nothing, while analytics records a whole batch per transaction (thousands of events per second) and needs an
outcome per message for its DLQ. The table below has the same meaning for batches: each type's messages go to
its batch handler; types it does not list are ignored (the topic carries no others today).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from leaky_common.events import UsageRecorded, parse_message
from lt_analytics.domain.rollups import aggregate
from lt_analytics.usecases.ingest import Ingest, Outcome

__all__ = ["BatchHandler", "Outcome", "Prepared", "UsageHandler", "handler_table"]

logger = logging.getLogger(__name__)

# Messages of one type (each with its event id), and what `Ahead` made of them -> outcome per event id.
BatchHandler = Callable[[list[Any], Any], Awaitable[dict[str, Outcome]]]
# The part of a type's handling that needs no database, done as soon as a batch is taken.
Ahead = Callable[[list[Any]], Any]


def handler_table(ingest: Ingest) -> Mapping[type[Any], tuple[Ahead, BatchHandler]]:
    """Which use case handles each message type the usage topic carries, and what is done ahead for it."""
    return {UsageRecorded: (aggregate, ingest.record)}


@dataclass(frozen=True, slots=True)
class Prepared:
    """A batch parsed, and its work made ready: (handler, the first copy of each message, what was done ahead)."""

    parsed: list[Any | Outcome]
    work: list[tuple[BatchHandler, list[Any], Any]]


class UsageHandler:
    """Parses raw message values and hands the messages of each known type, as one batch, to its handler."""

    def __init__(self, ingest: Ingest) -> None:
        self._table = handler_table(ingest)

    async def handle(self, raw: bytes) -> Outcome:
        """Handle one message (see `handle_batch`)."""
        return (await self.handle_batch([raw]))[0]

    async def handle_batch(self, raws: list[bytes]) -> list[Outcome]:
        """An outcome per message, in order; unparseable ones are INVALID, types without a handler IGNORED,
        and a message redelivered within the batch is handled once (its first copy, in stream order)."""
        return await self.handle_prepared(self.prepare(raws))

    def prepare(self, raws: list[bytes]) -> Prepared:
        """What a batch's handling needs no database for (parsing; for usage, the sums): the worker does it as
        soon as it takes a batch, while the one before is still being written."""
        parsed: list[Any | Outcome] = [self._parse(raw) for raw in raws]
        work: list[tuple[BatchHandler, list[Any], Any]] = []
        for kind, (ahead, handler) in self._table.items():
            first_copies: dict[str, Any] = {}
            for m in parsed:
                if isinstance(m, kind):
                    first_copies.setdefault(m.event_id, m)
            if first_copies:
                messages = list(first_copies.values())
                work.append((handler, messages, ahead(messages)))
        return Prepared(parsed, work)

    async def handle_prepared(self, prepared: Prepared) -> list[Outcome]:
        """`handle_batch` for a batch `prepare` made ready."""
        status: dict[str, Outcome] = {}
        for handler, messages, made in prepared.work:
            status.update(await handler(messages, made))
        seen: set[str] = set()
        result: list[Outcome] = []
        for m in prepared.parsed:
            if isinstance(m, Outcome):
                result.append(m)
                continue
            result.append(Outcome.DUPLICATE if m.event_id in seen else status[m.event_id])
            seen.add(m.event_id)
        return result

    def _parse(self, raw: bytes) -> Any | Outcome:
        try:
            message = parse_message(raw)
        except ValidationError as exc:
            logger.warning("unparseable usage message: %d errors", exc.error_count())
            return Outcome.INVALID
        return message if type(message) in self._table else Outcome.IGNORED
