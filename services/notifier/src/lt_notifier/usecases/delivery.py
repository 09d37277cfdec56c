"""The delivery loop: sends queued deliveries over their channel (HTTP or SMTP), retries with exponential
backoff, and marks a delivery dead after N tries; also the immediate test send of a channel.

It runs as its own background task, never on the consumer path: a slow or dead receiver cannot hold up
Kafka consumption. Deliveries are claimed with a lease (next_attempt_at pushed out, FOR UPDATE SKIP LOCKED),
so several notifier instances never send the same delivery concurrently: a claimed delivery is sent only
while its lease still outlasts a whole send (one that waited too long behind the concurrency limit is left
to be claimed again when its lease runs out), so no other instance can claim it while it is being sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from pydantic import ValidationError

from leaky_common.sealing import SecretBox
from leaky_common.tasks import cancel_and_wait
from lt_notifier.adapters.deliveries import claim_due, mark_delivered, mark_failed
from lt_notifier.adapters.metrics import delivery_attempted
from lt_notifier.adapters.senders import ChannelSender
from lt_notifier.domain.channels import EmailOut, render
from lt_notifier.domain.delivery import DueDelivery, backoff_s, probe_notification, redact
from lt_notifier.domain.notification import Notification, describe
from lt_notifier.domain.subscriptions import Subscription
from lt_notifier.domain.webhook import message_from_payload
from lt_notifier.settings import NotifierSettings

__all__ = ["SEALED_SHUT", "Deliverer"]

# What a send records when the channel's sealed URL or secrets do not open (is the key that sealed them
# still in LT_CHANNEL_SECRET_KEYS?).
SEALED_SHUT = "channel secrets do not open"
# A claim's lease is the send timeout plus this: the time a claimed delivery may wait for a sending slot.
LEASE_MARGIN_S = 5.0

logger = logging.getLogger(__name__)
tracer = trace.get_tracer("lt_notifier.delivery")


class Deliverer:
    """Background sender of pending deliveries; `wake()` after queueing new ones."""

    def __init__(
        self, pool: asyncpg.Pool, settings: NotifierSettings, sender: ChannelSender, box: SecretBox
    ) -> None:
        self._pool = pool
        self._box = box
        self._settings = settings
        self._sender = sender
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._limit = asyncio.Semaphore(settings.delivery_concurrency)

    async def start(self) -> None:
        """Start the loop."""
        self._task = asyncio.create_task(self._run(), name="webhook-deliveries")

    async def stop(self) -> None:
        """Stop the loop; claimed but unsent deliveries are retried when their lease runs out."""
        if self._task is not None:
            await cancel_and_wait(self._task)

    def wake(self) -> None:
        """Look for due deliveries now instead of at the next poll."""
        self._wake.set()

    async def run_once(self) -> int:
        """Send one batch of due deliveries; returns how many were attempted."""
        lease = self._settings.delivery_timeout_s + LEASE_MARGIN_S
        due = await claim_due(self._pool, self._box, self._settings.delivery_batch, lease)
        # Our clock starts after the database's: the lease ends no earlier than this.
        lease_ends = time.monotonic() + lease
        await asyncio.gather(*(self._attempt(d, lease_ends) for d in due))
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

    async def _traced_send(self, delivery: DueDelivery) -> str | None:
        """Send in a span continuing the trace of the event that queued the delivery (no text on it: the
        error is redacted for the log, and the span only says that it failed)."""
        parent = propagate.extract({"traceparent": delivery.traceparent}) if delivery.traceparent else None
        with tracer.start_as_current_span(
            f"deliver {delivery.channel}",
            context=parent,
            kind=SpanKind.CLIENT,
            attributes={
                "lt.notifier.channel": delivery.channel,
                "lt.notifier.event_type": delivery.event_type,
                "lt.notifier.attempt": delivery.attempts + 1,
            },
            record_exception=False,
        ) as span:
            error = await self._send(delivery)
            if error is not None:
                span.set_attribute("error.type", "delivery_failed")
                span.set_status(Status(StatusCode.ERROR))
            return error

    async def _attempt(self, delivery: DueDelivery, lease_ends: float) -> None:
        log = {"delivery_id": delivery.id, "event_type": delivery.event_type, "channel": delivery.channel}
        async with self._limit:
            if lease_ends - time.monotonic() < self._settings.delivery_timeout_s + 1:
                # Waited too long for a sending slot: the lease could run out mid-send and another instance
                # claim it. Left alone; it is claimed again (by any instance) once the lease is over.
                logger.info("delivery lease too short to send; left for the next claim", extra=log)
                return
            error = await self._traced_send(delivery)
        if error is None:
            await mark_delivered(self._pool, delivery.id)
            delivery_attempted(delivery.channel, "delivered")
            logger.info("notification delivered", extra=log)
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
        delivery_attempted(delivery.channel, "dead" if attempts >= s.delivery_max_attempts else "retrying")
        logger.warning("delivery attempt failed", extra={**log, "attempts": attempts, "error": error})

    async def _send(self, delivery: DueDelivery) -> str | None:
        """Send once; None on success, else what went wrong (with every secret redacted)."""
        if delivery.sealed_shut:
            return SEALED_SHUT
        try:
            note = describe(message_from_payload(delivery.body))
        except ValidationError as exc:
            return f"cannot render: {type(exc).__name__}"
        if note is None:
            return "event type is not notifiable"
        return await self._transmit(
            delivery.channel,
            note,
            delivery.body,
            delivery.url,
            delivery.config,
            delivery.secrets,
            delivery.id,
        )

    async def send_test(self, subscription: Subscription) -> str | None:
        """Send a test notification to a subscription right away (not queued, not retried)."""
        note, body = probe_notification(f"test_{uuid.uuid4().hex}", subscription.channel, datetime.now(UTC))
        return await self._transmit(
            subscription.channel,
            note,
            body,
            subscription.url,
            subscription.config,
            subscription.secrets,
            note.event_id,
        )

    async def _transmit(
        self,
        channel: str,
        note: Notification,
        body: bytes,
        url: str | None,
        config: dict[str, Any],
        secrets: dict[str, str],
        delivery_id: str,
    ) -> str | None:
        try:
            out = render(channel, note, body, url, config, secrets, self._settings.endpoints, delivery_id)
        except (KeyError, ValueError, AssertionError) as exc:
            return f"cannot render: {type(exc).__name__}"
        if isinstance(out, EmailOut):
            return await self._sender.mail(out.message)
        return redact(await self._sender.post(out, delivery_id), out.redact)
