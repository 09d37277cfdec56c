"""The delivery loop: POSTs queued webhook deliveries, retries with exponential backoff, gives up after N tries.

It runs as its own background task, never on the consumer path: a slow or dead receiver cannot hold up
Kafka consumption. Deliveries are claimed with a lease (next_attempt_at pushed out), so several notifier
instances never send the same delivery concurrently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp
import asyncpg

from lt_notifier.domain import backoff_s, sign
from lt_notifier.repository import DueDelivery, claim_due, mark_delivered, mark_failed
from lt_notifier.settings import NotifierSettings

__all__ = ["Deliverer"]

logger = logging.getLogger(__name__)


class Deliverer:
    """Background sender of pending deliveries; `wake()` after queueing new ones."""

    def __init__(self, pool: asyncpg.Pool, settings: NotifierSettings) -> None:
        self._pool = pool
        self._settings = settings
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._limit = asyncio.Semaphore(settings.delivery_concurrency)

    async def start(self) -> None:
        """Open the HTTP client and start the loop."""
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._settings.delivery_timeout_s),
            headers={"User-Agent": "leaky-tokens-notifier/0.1"},
        )
        self._task = asyncio.create_task(self._run(), name="webhook-deliveries")

    async def stop(self) -> None:
        """Stop the loop; claimed but unsent deliveries are retried when their lease runs out."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._session is not None:
            await self._session.close()

    def wake(self) -> None:
        """Look for due deliveries now instead of at the next poll."""
        self._wake.set()

    async def run_once(self) -> int:
        """Send one batch of due deliveries; returns how many were attempted."""
        lease = self._settings.delivery_timeout_s + 5
        due = await claim_due(self._pool, self._settings.delivery_batch, lease)
        await asyncio.gather(*(self._attempt(d) for d in due))
        return len(due)

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            try:
                if await self.run_once() == self._settings.delivery_batch:
                    continue
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("delivery loop failed; will retry")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._settings.delivery_poll_interval_s)

    async def _attempt(self, delivery: DueDelivery) -> None:
        async with self._limit:
            error = await self._post(delivery)
        if error is None:
            await mark_delivered(self._pool, delivery.id)
            logger.info(
                "webhook delivered", extra={"delivery_id": delivery.id, "event_type": delivery.event_type}
            )
            return
        attempts = delivery.attempts + 1
        s = self._settings
        await mark_failed(
            self._pool,
            delivery.id,
            error,
            s.delivery_max_attempts,
            backoff_s(attempts, s.delivery_backoff_base_s, s.delivery_backoff_max_s),
        )
        logger.warning(
            "webhook attempt failed",
            extra={"delivery_id": delivery.id, "attempts": attempts, "error": error},
        )

    async def _post(self, delivery: DueDelivery) -> str | None:
        """POST once; None on a 2xx, else what went wrong."""
        assert self._session is not None
        headers = {
            "Content-Type": "application/json",
            "X-LT-Event-Type": delivery.event_type,
            "X-LT-Delivery-Id": delivery.id,
        }
        if delivery.secret:
            headers["X-LT-Signature"] = sign(delivery.secret, delivery.body)
        try:
            async with self._session.post(
                delivery.url, data=delivery.body, headers=headers, allow_redirects=False
            ) as resp:
                if 200 <= resp.status < 300:
                    return None
                return f"HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return f"{type(exc).__name__}: {exc}"[:500]
