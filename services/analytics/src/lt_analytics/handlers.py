"""UsageRecorded -> request log and aggregates; shared by the faust agent and tests."""

from __future__ import annotations

import asyncio
import logging
from enum import StrEnum

import asyncpg
from pydantic import ValidationError

from leaky_common.events import UsageRecorded, parse_message
from lt_analytics.detectors import AnomalyDetector
from lt_analytics.repository import record_usage

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
        """Record one message; invalid ones are reported (for the DLQ), database trouble is retried."""
        try:
            message = parse_message(raw)
        except ValidationError as exc:
            logger.warning("unparseable usage message: %d errors", exc.error_count())
            return Outcome.INVALID
        if not isinstance(message, UsageRecorded):
            return Outcome.IGNORED
        delay = self._retry_backoff_s
        while True:
            try:
                recorded = await record_usage(self._pool, message, self._detector)
            except (asyncpg.PostgresError, OSError, TimeoutError):
                # Usage is money: block this partition and retry rather than skip an event.
                logger.exception("recording usage %s failed; retrying in %.1fs", message.event_id, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_backoff_s)
                continue
            return Outcome.RECORDED if recorded else Outcome.DUPLICATE
