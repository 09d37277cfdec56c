"""Recording usage: a batch of UsageRecorded is logged, aggregated and checked for anomalies in one
transaction, once per event id (the request log is the inbox)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from enum import StrEnum

import asyncpg

# asyncpg's client-side "cannot encode this argument" error (not a PostgresError, unlike asyncpg.DataError).
from asyncpg.exceptions._base import DataError as ClientDataError

from leaky_common.events import UsageRecorded
from lt_analytics.adapters import repository
from lt_analytics.adapters.metrics import DETECTIONS, LAG
from lt_analytics.domain.detection import Detection
from lt_analytics.domain.rollups import aggregate
from lt_analytics.usecases.detect import AnomalyDetector

__all__ = ["Ingest", "Outcome"]

logger = logging.getLogger(__name__)


class Outcome(StrEnum):
    RECORDED = "recorded"
    DUPLICATE = "duplicate"
    IGNORED = "ignored"
    INVALID = "invalid"


class Ingest:
    """Records usage events and runs the detectors on the new ones; database trouble is retried."""

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

    async def record(self, events: list[UsageRecorded]) -> dict[str, Outcome]:
        """Outcome per event id. Infrastructure errors are retried until they clear (usage is money: block the
        partition rather than skip an event); an event the database refuses (say a token count beyond 64 bits)
        is isolated from its batch and reported invalid instead of blocking it."""
        delay = self._retry_backoff_s
        while True:
            try:
                new_ids = await self.record_batch(events)
            except (asyncpg.DataError, ClientDataError) as exc:
                if len(events) == 1:
                    logger.warning("usage event %s refused by the database: %s", events[0].event_id, exc)
                    return {events[0].event_id: Outcome.INVALID}
                status: dict[str, Outcome] = {}
                for event in events:
                    status.update(await self.record([event]))
                return status
            except (
                asyncpg.PostgresError,
                asyncpg.InterfaceError,
                asyncpg.InternalClientError,
                OSError,
                TimeoutError,
            ):
                # InternalClientError: a pooled connection PostgreSQL dropped mid-operation (PostgreSQL killed);
                # raised out of here it would crash the faust agent and drop the batch from analytics.
                logger.exception("recording %d usage events failed; retrying in %.1fs", len(events), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_backoff_s)
                continue
            return {
                e.event_id: Outcome.RECORDED if e.event_id in new_ids else Outcome.DUPLICATE for e in events
            }

    async def record_batch(self, events: list[UsageRecorded]) -> set[str]:
        """Log events, add them to the aggregates and run the detectors, once per event id, in one transaction.

        Returns the ids of the events that were new; already recorded ones change nothing.
        """
        unique: dict[str, UsageRecorded] = {}
        for e in events:  # the first copy of a redelivered event, in stream order (loops depend on it)
            unique.setdefault(e.event_id, e)
        detections: list[Detection] = []
        async with self._pool.acquire() as conn, conn.transaction():
            new_ids = await repository.log_requests(conn, list(unique.values()))
            new = [e for e in unique.values() if e.event_id in new_ids]
            if not new:
                return new_ids
            await repository.add_aggregates(conn, aggregate(new))
            if self._detector is not None:
                detections = await self._detector.check(conn, new)
        _observe(new, detections)  # after the commit: what is counted happened
        return new_ids


def _observe(new: list[UsageRecorded], detections: list[Detection]) -> None:
    """Lag of the newly recorded events behind their occurrence, and the detections announced."""
    now = datetime.now(UTC)
    for event in new:
        occurred = event.occurred_at if event.occurred_at.tzinfo else event.occurred_at.replace(tzinfo=UTC)
        LAG.observe(max((now - occurred).total_seconds(), 0.0))
    for detection in detections:
        DETECTIONS.labels(detection.kind).inc()
