"""Delivery rules (no I/O): what a claimed delivery carries, retry timing, redaction, the test notification."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from lt_notifier.domain.notification import Notification

__all__ = ["DueDelivery", "backoff_s", "probe_notification", "redact"]


@dataclass(frozen=True, slots=True)
class DueDelivery:
    """A claimed delivery with what it takes to send it."""

    id: str
    event_type: str
    channel: str
    body: bytes
    attempts: int
    url: str | None
    config: dict[str, Any]
    secrets: dict[str, str]
    # The channel's sealed URL or secrets did not open (key missing or retired too early, row tampered).
    sealed_shut: bool = False
    # The W3C traceparent of the event's consumer span (None without tracing): the send continues its trace.
    traceparent: str | None = None


def backoff_s(attempts: int, base_s: float, max_s: float) -> float:
    """Wait before the next try after `attempts` failed tries: base, 2*base, 4*base, ... capped at max."""
    return float(min(base_s * 2 ** max(attempts - 1, 0), max_s))


def redact(error: str | None, secrets: tuple[str, ...]) -> str | None:
    """Never let a token (in a URL or a header) reach the delivery log or the logs."""
    if error is None:
        return None
    for secret in secrets:
        error = error.replace(secret, "***")
    return error


def probe_notification(event_id: str, channel: str, at: datetime) -> tuple[Notification, bytes]:
    """The notification and webhook body of a test send to a `channel` subscription."""
    note = Notification(
        event_id=event_id,
        event_type="Test",
        severity="info",
        title="Leaky Tokens test notification",
        text="If you can read this, notifications reach this channel.",
        facts=[("Channel", channel)],
    )
    body = orjson.dumps(
        {"id": note.event_id, "type": note.event_type, "occurred_at": at.isoformat(), "data": {}}
    )
    return note, body
