"""Recording usage: a batch of UsageRecorded is logged, aggregated and checked for anomalies in one
transaction, once per event id (the request log is the inbox)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, date, datetime
from enum import StrEnum

import asyncpg

# asyncpg's client-side "cannot encode this argument" error (not a PostgresError, unlike asyncpg.DataError).
from asyncpg.exceptions._base import DataError as ClientDataError

from leaky_common.events import UsageRecorded
from lt_analytics.adapters import repository
from lt_analytics.adapters.metrics import DETECTIONS, LAG
from lt_analytics.domain.detection import Detection
from lt_analytics.domain.rollups import Aggregates, aggregate, day_bucket
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
        analyze_after: int = 1000,
    ) -> None:
        self._pool = pool
        self._detector = detector
        self._retry_backoff_s = retry_backoff_s
        self._max_backoff_s = max_backoff_s
        # Events this process recorded per UTC day, until that day's partition has had its statistics checked.
        self._analyze_after = analyze_after
        self._day_counts: dict[date, int] = {}
        self._days_checked: set[date] = set()

    async def record(self, events: list[UsageRecorded], sums: Aggregates | None = None) -> dict[str, Outcome]:
        """Outcome per event id. Infrastructure errors are retried until they clear (usage is money: block the
        partition rather than skip an event); an event the database refuses (say a token count beyond 64 bits)
        is isolated from its batch and reported invalid instead of blocking it. `sums`: `aggregate(events)`,
        made ahead (see `record_batch`)."""
        delay = self._retry_backoff_s
        while True:
            try:
                new_ids = await self.record_batch(events, sums)
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

    async def record_batch(self, events: list[UsageRecorded], sums: Aggregates | None = None) -> set[str]:
        """Log events, add them to the aggregates and run the detectors, once per event id, in one transaction.

        Returns the ids of the events that were new; already recorded ones change nothing. `sums` is
        `aggregate(events)` made ahead, while the previous batch was being written (the worker does so): used
        when every event turns out new, as nearly always; otherwise the new events are summed again here.
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
            summed = sums if sums is not None and len(new) == len(events) else aggregate(new)
            await repository.add_aggregates(conn, summed)
            if self._detector is not None:
                detections = await self._detector.check(conn, new)
        _observe(new, detections)  # after the commit: what is counted happened
        await self._analyze_new_days(new)
        return new_ids

    async def _analyze_new_days(self, new: list[UsageRecorded]) -> None:
        """Once this process has recorded `analyze_after` events of a UTC day, make sure that day's partition
        has statistics (a new day's partition, or a new database's, has none until autovacuum comes by)."""
        for event in new:
            day = day_bucket(event.occurred_at)
            if day not in self._days_checked:
                self._day_counts[day] = self._day_counts.get(day, 0) + 1
        due = [d for d, n in self._day_counts.items() if n >= self._analyze_after]
        for day in due:
            del self._day_counts[day]
            self._days_checked.add(day)
            try:
                if await repository.analyze_if_never_analyzed(self._pool, day):
                    logger.info("analyzed the request log partition of %s (it had no statistics)", day)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                # The batch is recorded; autovacuum will analyze the partition in the end.
                logger.warning("could not analyze the request log partition of %s: %r", day, exc)


def _observe(new: list[UsageRecorded], detections: list[Detection]) -> None:
    """Lag of the newly recorded events behind their occurrence, and the detections announced."""
    now = datetime.now(UTC)
    for event in new:
        occurred = event.occurred_at if event.occurred_at.tzinfo else event.occurred_at.replace(tzinfo=UTC)
        LAG.observe(max((now - occurred).total_seconds(), 0.0))
    for detection in detections:
        DETECTIONS.labels(detection.kind).inc()
