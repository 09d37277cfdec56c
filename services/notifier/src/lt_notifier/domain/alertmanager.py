"""Alertmanager's alerts as `PlatformAlert` events (no I/O).

Alertmanager posts the same alert again on every group change, repeat interval and retry: the event id is
derived from the alert's fingerprint, status and start, so the notifier's inbox queues one notification when an
alert fires and one when it resolves, however often it is posted.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime

from leaky_common.events import PlatformAlert

__all__ = ["platform_alert"]

_NAMESPACE = uuid.UUID("5b0c7d1e-6a1f-4d0e-9a57-3f0c2b7e8a11")


def _clip(text: str, limit: int) -> str:
    """Printable text of at most `limit` characters (control characters become spaces)."""
    cleaned = "".join(c if c.isprintable() else " " for c in text)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


def platform_alert(
    status: str,
    labels: Mapping[str, str],
    annotations: Mapping[str, str],
    starts_at: datetime | None,
    ends_at: datetime | None,
    fingerprint: str,
) -> PlatformAlert:
    """The event for one alert of an Alertmanager webhook (`status` is `firing` or `resolved`)."""
    identity = fingerprint or ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    start = starts_at.isoformat() if starts_at is not None else ""
    return PlatformAlert(
        event_id=uuid.uuid5(_NAMESPACE, f"{identity}|{status}|{start}").hex,
        producer="alertmanager",
        alertname=_clip(labels.get("alertname", "unnamed"), 200),
        status="resolved" if status == "resolved" else "firing",
        severity=_clip(labels.get("severity", ""), 50),
        summary=_clip(annotations.get("summary", ""), 1000),
        description=_clip(annotations.get("description", ""), 2000),
        labels={_clip(k, 100): _clip(v, 500) for k, v in labels.items()},
        starts_at=starts_at,
        ends_at=ends_at if status == "resolved" else None,
    )
