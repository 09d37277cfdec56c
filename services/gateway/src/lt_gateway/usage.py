"""Delivers UsageRecorded events without putting the broker on the request path.

Events go into a bounded in-memory queue drained by one background task that publishes in batches and
retries while the broker is unreachable. Publishing is at-least-once; consumers dedupe on event_id.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque

from prometheus_client import Counter, Gauge

from leaky_common.events import Topics, UsageRecorded
from leaky_common.kafka import EventPublisher

logger = logging.getLogger(__name__)

USAGE_QUEUED = Gauge("lt_gateway_usage_events_pending", "Usage events waiting for the broker")
USAGE_DROPPED = Counter(
    "lt_gateway_usage_events_dropped_total", "Usage events dropped because the queue was full"
)


class UsageSink:
    """Queue + background publisher for usage events."""

    def __init__(self, publisher: EventPublisher, maxsize: int, batch: int = 256) -> None:
        self._publisher = publisher
        self._queue: deque[UsageRecorded] = deque()
        self._maxsize = maxsize
        self._batch = batch
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    def record(self, event: UsageRecorded) -> None:
        """Queue an event; never blocks the caller."""
        if len(self._queue) >= self._maxsize:
            USAGE_DROPPED.inc()
            logger.error("usage queue full; dropping event", extra={"request_id": event.request_id})
            return
        self._queue.append(event)
        self._idle.clear()
        USAGE_QUEUED.set(len(self._queue))
        self._wake.set()

    @property
    def pending(self) -> int:
        """Events not yet acknowledged by the broker."""
        return len(self._queue)

    async def start(self) -> None:
        """Start the publishing task."""
        self._task = asyncio.create_task(self._run(), name="usage-sink")

    async def drain(self, timeout: float) -> bool:
        """Wait until every queued event was published (or `timeout` passed)."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def stop(self, drain_timeout: float = 5.0) -> None:
        """Publish what is queued (up to `drain_timeout`), then stop."""
        if not await self.drain(drain_timeout) and self._queue:
            logger.error("stopping with %d unpublished usage events", len(self._queue))
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._publisher.stop()

    async def _connect(self) -> None:
        # The gateway serves requests while the broker is down; events wait until it is reachable.
        backoff = 0.2
        while True:
            try:
                await self._publisher.start()
                return
            except Exception as exc:
                logger.warning("broker unreachable (%r); retrying in %.1fs", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    async def _run(self) -> None:
        await self._connect()
        backoff = 0.1
        while True:
            if not self._queue:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = [self._queue[i] for i in range(min(self._batch, len(self._queue)))]
            results = await asyncio.gather(
                *(self._publisher.publish(Topics.USAGE, e, key=e.user_id or e.request_id) for e in batch),
                return_exceptions=True,
            )
            failed = [e for e, r in zip(batch, results, strict=True) if isinstance(r, BaseException)]
            for _ in batch:
                self._queue.popleft()
            # Failed events go back to the front in their original order.
            self._queue.extendleft(reversed(failed))
            USAGE_QUEUED.set(len(self._queue))
            if failed:
                logger.warning("broker unavailable; %d usage events waiting", len(self._queue))
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            else:
                backoff = 0.1
