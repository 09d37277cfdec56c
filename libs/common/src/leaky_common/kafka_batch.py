"""A consumer that hands each fetched batch of a partition to one handler call: many events per database
transaction and per cache round trip, for topics whose handler can settle a batch at once.

The batch handler must be idempotent per message, as every handler is (an inbox claimed per event id, also
for duplicates inside one batch). Infrastructure errors are retried on the whole batch; any other failure falls
back to handling the batch's messages one at a time with the per-message handler, its retries and its DLQ, so
one poison message never holds the rest.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from aiokafka import ConsumerRecord
from opentelemetry import trace
from pydantic import ValidationError

from leaky_common.events import AnyMessage, parse_message
from leaky_common.kafka import EventConsumer, EventPublisher, Handler, transient_errors
from leaky_common.settings import ServiceSettings
from leaky_common.tracing import batch_span

__all__ = ["BatchEventConsumer", "BatchHandler"]

logger = logging.getLogger(__name__)
tracer = trace.get_tracer("leaky_common.kafka")

BatchHandler = Callable[[list[AnyMessage]], Awaitable[None]]


class BatchEventConsumer(EventConsumer):
    """`EventConsumer` that handles each fetched partition batch with one `batch_handler` call."""

    def __init__(
        self,
        settings: ServiceSettings,
        *,
        group_id: str,
        topics: Sequence[str],
        handler: Handler,
        batch_handler: BatchHandler,
        publisher: EventPublisher,
    ) -> None:
        super().__init__(settings, group_id=group_id, topics=topics, handler=handler, publisher=publisher)
        self._batch_handler = batch_handler
        self.batches = 0

    async def _process_records(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        messages: list[AnyMessage] = []
        parsed: list[ConsumerRecord[bytes, bytes]] = []
        for record in records:
            try:
                messages.append(parse_message(record.value or b""))
            except ValidationError as exc:
                await self._dead_letter(record, f"unparseable: {exc.error_count()} errors")
                continue
            parsed.append(record)
        if not messages:
            return
        delay = self._retry_backoff_s
        while True:
            try:
                # One span for the batch, linked to each message's trace (the request that published it).
                with batch_span(
                    tracer, f"consume {records[0].topic} batch", (r.headers for r in parsed), len(messages)
                ):
                    await self._batch_handler(messages)
            except asyncio.CancelledError:
                raise
            except transient_errors() as exc:
                logger.warning("batch handler hit %r; retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            except Exception:
                logger.exception("batch of %d failed; handling its messages one at a time", len(messages))
                for record in parsed:
                    await self._process(record)
                return
            self.processed += len(messages)
            self.batches += 1
            return
