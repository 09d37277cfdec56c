"""Announcing detections: alerts and freeze commands go through the outbox, in the caller's transaction."""

from __future__ import annotations

import asyncpg

from leaky_common.events import AnomalyDetected, RequestFreeze, Topics
from leaky_common.outbox import write_outbox

__all__ = ["announce"]


async def announce(
    conn: asyncpg.Connection, alert: AnomalyDetected, freeze: RequestFreeze | None, key: str
) -> None:
    """Queue the alert on `alerts` and the freeze (if any) on `quota.freeze-requests`, both keyed by the target."""
    await write_outbox(conn, Topics.ALERTS, alert, key=key)
    if freeze is not None:
        await write_outbox(conn, Topics.FREEZE_REQUESTS, freeze, key=key)
