"""Delivers UsageRecorded events without putting the broker on the request path, and without losing any.

While the broker acknowledges, events wait a few milliseconds in memory for the background publisher.
When it does not (down at start-up, or a publish fails), events go to a durable local spool (SQLite, WAL)
instead, synchronously in `record`, and are published from there once the broker is back, oldest first;
a gateway restart meanwhile loses nothing. On shutdown, whatever is still in memory is spooled; a gateway
killed outright leaves its in-memory events in its crash journal (`UsageJournal`), which the next gateway to
start records again. Delivery is at-least-once (an event published just before a crash may be sent again); consumers dedupe on event_id.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections import deque
from pathlib import Path

from opentelemetry import trace
from prometheus_client import Counter, Gauge

from leaky_common.events import Topics, UsageRecorded
from leaky_common.kafka import EventPublisher
from leaky_common.tasks import cancel_and_wait
from leaky_common.tracing import headers_carrier
from lt_gateway.adapters.usage_journal import UsageJournal
from lt_gateway.adapters.usage_spool import Traced, UsageSpool

logger = logging.getLogger(__name__)

_HEADERS = [("type", b"UsageRecorded.v1")]

USAGE_QUEUED = Gauge("lt_gateway_usage_events_pending", "Usage events waiting for the broker (memory)")
USAGE_DROPPED = Counter(
    "lt_gateway_usage_events_dropped_total", "Usage events dropped because memory and spool were full"
)


class UsageSink:
    """Memory queue + durable spool + background publisher for usage events."""

    def __init__(
        self,
        publisher: EventPublisher,
        maxsize: int,
        *,
        spool_path: Path,
        batch: int = 256,
        linger_s: float = 0.02,
        publish_timeout_s: float = 2.0,
        journal: UsageJournal | None = None,
    ) -> None:
        self._publisher = publisher
        self.journal = journal
        # Events gather this long before a publish: one produce request per batch instead of per event
        # (on loopback each send costs as much CPU as serving a request).
        self._linger_s = linger_s
        # A publish not acknowledged this fast counts as failed and its events are spooled, which bounds how
        # long an event lives in memory only while the broker is dying. (If it is delivered after all, the
        # spooled copy is a duplicate with the same event_id, which consumers ignore.)
        self._publish_timeout_s = publish_timeout_s
        self._queue: deque[Traced] = deque()
        self._maxsize = maxsize
        self._batch = batch
        self._spool_path = spool_path
        self._spool: UsageSpool | None = None
        # True while the broker is not known to acknowledge: new events go straight to the spool.
        self._degraded = True
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    @staticmethod
    def _trace_headers(event: UsageRecorded) -> dict[str, str]:
        """The request's trace context for the event's headers ({} without tracing). A traced request gets a
        `publish usage.recorded` span event with the event id rather than a PRODUCER span: half the cost, and
        the consumers' links lead to the request span all the same."""
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event(f"publish {Topics.USAGE}", {"messaging.message.id": event.event_id})
        return headers_carrier()  # an unsampled trace still propagates its decision

    def record(self, event: UsageRecorded) -> None:
        """Queue an event with the current trace context; never waits for the broker."""
        traced = (event, self._trace_headers(event))
        if self._degraded and self._spool is not None:
            try:
                self._spool.append([traced])
            except sqlite3.Error:
                logger.exception("usage spool write failed; keeping the event in memory")
            else:
                self._idle.clear()
                self._wake.set()
                return
        if len(self._queue) >= self._maxsize:
            USAGE_DROPPED.inc()
            logger.error("usage queue full; dropping event", extra={"request_id": event.request_id})
            return
        self._queue.append(traced)
        if self.journal is not None:
            self.journal.event(event)
        self._idle.clear()
        USAGE_QUEUED.set(len(self._queue))
        self._wake.set()

    @property
    def pending(self) -> int:
        """Events not yet acknowledged by the broker (memory and spool)."""
        return len(self._queue) + (self._spool.count if self._spool is not None else 0)

    @property
    def in_memory(self) -> int:
        """Events waiting in memory (the spool has no practical bound)."""
        return len(self._queue)

    @property
    def degraded(self) -> bool:
        """True while events are being spooled because the broker is not acknowledging."""
        return self._degraded

    async def start(self) -> None:
        """Open the spool (publishing what a previous run left in it) and start the publishing task."""
        self._spool = UsageSpool(self._spool_path)
        if self.journal is not None:
            self._take_over(self.journal)
        if self._spool.count:
            logger.warning("%d usage events left in the spool; publishing them", self._spool.count)
            self._idle.clear()
        self._task = asyncio.create_task(self._run(), name="usage-sink")

    def _take_over(self, journal: UsageJournal) -> None:
        """Open this process's journal, and spool what killed gateways' journals still owed."""
        journal.open()
        owed, segments = journal.take_over()
        if owed:
            logger.warning("%d usage events owed by a gateway that was killed; recording them", len(owed))
            assert self._spool is not None
            self._spool.append([(event, {}) for event in owed])
        journal.forget(segments)

    async def drain(self, timeout: float) -> bool:
        """Wait until every event was published (or `timeout` passed)."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def stop(self, drain_timeout: float = 5.0) -> None:
        """Publish what is pending (up to `drain_timeout`), spool the rest, then stop."""
        await self.drain(drain_timeout)
        if self._task is not None:
            await cancel_and_wait(self._task)
        if self._spool is not None:
            if self._queue:
                self._spool.append(list(self._queue))
                self._acked(list(self._queue))
                self._queue.clear()
            if self._spool.count:
                logger.warning("stopping with %d usage events in the spool", self._spool.count)
            self._spool.close()
        if self.journal is not None:
            self.journal.close()
        await self._publisher.stop()

    async def _connect(self) -> None:
        # The gateway serves requests while the broker is down; events are spooled until it is reachable.
        backoff = 0.2
        while True:
            try:
                await self._publisher.start()
                return
            except Exception as exc:
                logger.warning("broker unreachable (%r); retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _publish(self, events: list[Traced]) -> list[bool]:
        # This background task has no request span; each event carries the trace headers of the request that
        # recorded it (captured in `record`). One record batch per partition, not one send per event.
        messages = [
            (
                e.model_dump_json().encode(),
                e.partition_key.encode(),
                [*_HEADERS, *((k, v.encode()) for k, v in t.items())] if t else _HEADERS,
            )
            for e, t in events
        ]
        try:
            errors = await asyncio.wait_for(
                self._publisher.publish_batch(Topics.USAGE, messages), self._publish_timeout_s
            )
        except TimeoutError:
            # Unknown which ones made it: spool them all (a delivered one is then a harmless duplicate).
            return [False] * len(events)
        except Exception as exc:  # (metadata, a closed producer) unknown which batches went: all are spooled
            logger.warning("publishing usage events failed: %r", exc)
            return [False] * len(events)
        return [error is None for error in errors]

    def _acked(self, events: list[Traced]) -> None:
        if self.journal is not None:
            self.journal.acked([event.event_id for event, _ in events])

    async def _run(self) -> None:
        assert self._spool is not None
        spool = self._spool
        await self._connect()
        backoff = 0.1
        while True:
            if spool.count:
                rows = spool.oldest(self._batch)
                ok = await self._publish([traced for _, traced in rows])
                spool.remove([seq for (seq, _), sent in zip(rows, ok, strict=True) if sent])
                failed = not all(ok)
            elif self._queue:
                if len(self._queue) < self._batch and self._linger_s:
                    await asyncio.sleep(self._linger_s)
                batch = [self._queue.popleft() for _ in range(min(self._batch, len(self._queue)))]
                ok = await self._publish(batch)
                unsent = [e for e, sent in zip(batch, ok, strict=True) if not sent]
                failed = bool(unsent)
                if unsent:
                    self._degraded = True
                    spool.append(unsent)
                self._acked(batch)  # published, or in the spool
                USAGE_QUEUED.set(len(self._queue))
            else:
                # Everything acknowledged: back to the in-memory fast path.
                self._degraded = False
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            if failed:
                self._degraded = True
                logger.warning("broker unavailable; %d usage events waiting", self.pending)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            else:
                backoff = 0.1
