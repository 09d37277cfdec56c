"""UsageRecorded -> request log and aggregates; shared by the faust agent and tests."""

from __future__ import annotations

import asyncio
import logging
from enum import StrEnum

import asyncpg

# asyncpg's client-side "cannot encode this argument" error (not a PostgresError, unlike asyncpg.DataError).
from asyncpg.exceptions._base import DataError as ClientDataError
from pydantic import ValidationError

from leaky_common.events import UsageRecorded, parse_message
from lt_analytics.detectors import AnomalyDetector
from lt_analytics.repository import record_batch

__all__ = ["Outcome", "UsageHandler"]

logger = logging.getLogger(__name__)


class Outcome(StrEnum):
    RECORDED = "recorded"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"
    INVALID = "invalid"


class UsageHandler:
    """Parses a raw message value, records it effectively-once (the request log is the inbox) and runs the
    anomaly detectors on new events."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        detector: AnomalyDetector | None = None,
        *,
        retry_backoff_s: float = 0.5,
        max_backoff_s: float = 10.0,
    ) -> None:
        self._pool = pool
        self._detector = detector
        self._retry_backoff_s = retry_backoff_s
        self._max_backoff_s = max_backoff_s

    async def handle(self, raw: bytes) -> Outcome:
        """Record one message (see `handle_batch`)."""
        return (await self.handle_batch([raw]))[0]

    async def handle_batch(self, raws: list[bytes]) -> list[Outcome]:
        """Record messages in one transaction; invalid ones are reported (for the DLQ), database trouble is
        retried until it clears (usage is money: block the partition rather than skip an event)."""
        outcomes: list[Outcome | None] = []
        events: list[UsageRecorded] = []
        for raw in raws:
            try:
                message = parse_message(raw)
            except ValidationError as exc:
                logger.warning("unparseable usage message: %d errors", exc.error_count())
                outcomes.append(Outcome.INVALID)
                continue
            if not isinstance(message, UsageRecorded):
                outcomes.append(Outcome.IGNORED)
                continue
            outcomes.append(None)
            events.append(message)
        # A message redelivered within the batch is handled once (its first copy, in stream order).
        first_copies: dict[str, UsageRecorded] = {}
        for e in events:
            first_copies.setdefault(e.event_id, e)
        status = await self._record(list(first_copies.values())) if first_copies else {}
        pending = iter(events)
        seen: set[str] = set()
        result: list[Outcome] = []
        for outcome in outcomes:
            if outcome is not None:
                result.append(outcome)
                continue
            event_id = next(pending).event_id
            result.append(Outcome.DUPLICATE if event_id in seen else status[event_id])
            seen.add(event_id)
        return result

    async def _record(self, events: list[UsageRecorded]) -> dict[str, Outcome]:
        """Outcome per event id. Infrastructure errors are retried; an event the database refuses (say a
        token count beyond 64 bits) is isolated from its batch and reported invalid instead of blocking it."""
        delay = self._retry_backoff_s
        while True:
            try:
                new_ids = await record_batch(self._pool, events, self._detector)
            except (asyncpg.DataError, ClientDataError) as exc:
                if len(events) == 1:
                    logger.warning("usage event %s refused by the database: %s", events[0].event_id, exc)
                    return {events[0].event_id: Outcome.INVALID}
                status: dict[str, Outcome] = {}
                for event in events:
                    status.update(await self._record([event]))
                return status
            except (asyncpg.PostgresError, OSError, TimeoutError):
                logger.exception("recording %d usage events failed; retrying in %.1fs", len(events), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_backoff_s)
                continue
            return {
                e.event_id: Outcome.RECORDED if e.event_id in new_ids else Outcome.DUPLICATE for e in events
            }
