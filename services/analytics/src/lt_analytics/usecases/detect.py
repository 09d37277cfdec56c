"""Anomaly detection, run inside the transaction that records a batch of usage events.

Because it runs only on events that are new (the request log is the inbox), a replayed topic detects
nothing twice. Detections are written to `anomalies` and announced through the outbox: `AnomalyDetected` on
`alerts` and, where configured, `RequestFreeze` on `quota.freeze-requests`.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Literal

import asyncpg

from leaky_common.events import UsageRecorded
from lt_analytics.adapters import detections as sql
from lt_analytics.adapters.publisher import announce
from lt_analytics.adapters.thresholds import ThresholdStore
from lt_analytics.domain.alerts import anomaly_alert, freeze_command
from lt_analytics.domain.detection import (
    Detection,
    Target,
    baseline_detection,
    cooldown_s,
    follow_loops,
    target_of,
    window_detections,
)
from lt_analytics.domain.thresholds import Thresholds
from lt_analytics.domain.windows import baseline_since, window_sums

__all__ = ["AnomalyDetector", "window_tokens"]

logger = logging.getLogger(__name__)

Limits = dict[str | None, Thresholds]
Found = list[tuple[UsageRecorded, Detection]]


class AnomalyDetector:
    """Loop, request-rate, spend-velocity and baseline-ratio checks for a batch of newly recorded events.

    Consecutive loops are followed event by event. Windowed checks (the last event's prompt repeated within
    a window, request rate, spend velocity) are evaluated at the last event of each session/key in the
    batch, so a batch costs a few queries rather than a few per event.
    """

    def __init__(self, thresholds: ThresholdStore, *, baseline_check_interval_s: float = 10.0) -> None:
        self._thresholds = thresholds
        self._baseline_interval_s = baseline_check_interval_s
        self._baseline_checked: dict[str, float] = {}

    async def check(self, conn: asyncpg.Connection, events: list[UsageRecorded]) -> list[Detection]:
        """Run every detector for `events` (already in the request log, in order) and emit what they find."""
        # A refused request spent nothing; counting it would re-freeze a frozen agent forever.
        live = [e for e in events if e.status != "blocked"]
        if not live:
            return []
        limits = {org: await self._thresholds.get(conn, org) for org in {e.org_id for e in live}}
        found = await self._consecutive_loops(conn, live, limits)
        last: dict[Target, UsageRecorded] = {}
        for e in live:
            target = target_of(e)
            if target is not None:
                last[target] = e
        found += await self._windows(conn, last, limits)
        for org in sorted({e.org_id for e in live if e.org_id}):
            trigger = next(e for e in reversed(live) if e.org_id == org)
            found += [(trigger, d) for d in await self._baseline(conn, org, limits[org])]
        # Two workers can find the same org-wide anomaly at once (an org's sessions and keys are spread over
        # partitions, so over workers): the cooldown check and the insert are serialised per anomaly target by
        # transaction-scoped advisory locks, taken in one order so two batches cannot deadlock on them.
        await sql.lock_anomaly_targets(
            conn, sorted({_lock_key(d, e.org_id) for e, d in found if d.cools_down})
        )
        emitted: list[Detection] = []
        for event, detection in found:
            if await self._cooled(conn, detection, event.org_id, limits[event.org_id]):
                await _emit(conn, event, detection, limits[event.org_id])
                emitted.append(detection)
        return emitted

    async def _cooled(
        self, conn: asyncpg.Connection, d: Detection, org_id: str | None, limits: Thresholds
    ) -> bool:
        """Consecutive loops that freeze always fire (the run restarts after each); the rest once per window,
        per org."""
        if not d.cools_down:
            return True
        window = cooldown_s(d.kind, limits)
        return not await sql.raised_within(conn, d.kind, d.target_type, d.target_id, window, org_id)

    async def _consecutive_loops(
        self, conn: asyncpg.Connection, events: list[UsageRecorded], limits: Limits
    ) -> Found:
        runs = [(e, t) for e in events if e.prompt_fingerprint and (t := target_of(e)) is not None]
        if not runs:
            return []
        streaks = await sql.load_streaks(conn, sorted({t for _, t in runs}))
        found = follow_loops(runs, streaks, limits)
        await sql.save_streaks(conn, streaks)
        return found

    async def _windows(
        self, conn: asyncpg.Connection, last: dict[Target, UsageRecorded], limits: Limits
    ) -> Found:
        """Loop-in-a-window (for the fingerprint of each target's last event), request rate and spend
        velocity, from one scan of each target's recent requests."""
        found: Found = []
        target_types: tuple[Literal["session", "key"], ...] = ("session", "key")
        for target_type in target_types:
            targets = [(k, e) for k, e in last.items() if k[0] == target_type]
            if not targets:
                continue
            lims = [limits[e.org_id] for _, e in targets]
            scans = [
                (t[2], e.occurred_at, e.prompt_fingerprint, lim)
                for (t, e), lim in zip(targets, lims, strict=True)
            ]
            over = await sql.window_stats(conn, target_type, scans, [t[1] for t, _ in targets])
            for i, stats in over.items():
                target, event = targets[i]
                found += [(event, d) for d in window_detections(target, event, stats, lims[i])]
        return found

    async def _baseline(self, conn: asyncpg.Connection, org_id: str, limits: Thresholds) -> list[Detection]:
        now = time.monotonic()
        if now - self._baseline_checked.get(org_id, -1e9) < self._baseline_interval_s:
            return []
        self._baseline_checked[org_id] = now
        current, previous = await window_tokens(
            conn, org_id, datetime.now(UTC), limits.baseline_window_minutes, limits.baseline_windows
        )
        detection = baseline_detection(org_id, current, previous, limits)
        return [] if detection is None else [detection]


def _lock_key(d: Detection, org_id: str | None) -> str:
    return f"{d.kind}\x1f{d.target_type}\x1f{d.target_id}\x1f{org_id or ''}"


async def _emit(
    conn: asyncpg.Connection, event: UsageRecorded, detection: Detection, limits: Thresholds
) -> None:
    """Store a detection and queue its alert (and freeze command, if it freezes) in the same transaction."""
    alert = anomaly_alert(event, detection, limits)
    freeze = freeze_command(event, detection, alert, limits)
    duration = limits.freeze_duration_s if alert.frozen else None
    await sql.insert_anomaly(conn, alert, detection, duration, event.event_id)
    await announce(conn, alert, freeze, detection.target_id)
    logger.warning(
        "anomaly detected",
        extra={
            "kind": detection.kind,
            "target_type": detection.target_type,
            "target_id": detection.target_id,
            "frozen": alert.frozen,
            "trigger_event_id": event.event_id,
        },
    )


async def window_tokens(
    conn: asyncpg.Connection | asyncpg.Pool, org_id: str, now: datetime, window_minutes: int, windows: int
) -> tuple[int, list[int]]:
    """Tokens of `org_id` in the current window (ending at `now`) and in each of the `windows` before it."""
    since = baseline_since(now, window_minutes, windows)
    minutes = await sql.org_minute_tokens(conn, org_id, since, now)
    return window_sums(minutes, now, window_minutes, windows)
