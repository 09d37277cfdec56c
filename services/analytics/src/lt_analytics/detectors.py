"""Anomaly detectors, run inside the transaction that records a usage event.

Because they run only when the event is new (the request log is the inbox), a replayed topic detects
nothing twice. Detections are written to `anomalies` and announced through the outbox: `AnomalyDetected` on
`alerts` and, where configured, `RequestFreeze` on `quota.commands`.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Literal

import asyncpg

from leaky_common.events import AnomalyDetected, RequestFreeze, Topics, UsageRecorded
from leaky_common.outbox import write_outbox
from lt_analytics.detection import (
    GLOBAL,
    Detection,
    ThresholdOverrides,
    Thresholds,
    baseline_ratio,
)

__all__ = ["AnomalyDetector", "ThresholdStore", "window_tokens"]

logger = logging.getLogger(__name__)

_COLUMN = {"session": "session_id", "key": "key_id"}


class ThresholdStore:
    """Effective thresholds per org, cached for `ttl_s` seconds (so an API change applies within it)."""

    def __init__(self, defaults: Thresholds, ttl_s: float = 5.0) -> None:
        self._defaults = defaults
        self._ttl_s = ttl_s
        self._cache: dict[str, tuple[float, Thresholds]] = {}

    async def get(self, conn: asyncpg.Connection, org_id: str | None) -> Thresholds:
        """Defaults, then the global override row, then the org's row."""
        key = org_id or GLOBAL
        hit = self._cache.get(key)
        now = time.monotonic()
        if hit is not None and now - hit[0] < self._ttl_s:
            return hit[1]
        rows = await conn.fetch(
            "SELECT org_id, config::text AS config FROM anomaly_thresholds WHERE org_id = ANY($1::text[])",
            [GLOBAL, key],
        )
        by_org = {r["org_id"]: ThresholdOverrides.model_validate_json(r["config"]) for r in rows}
        effective = self._defaults.apply(by_org.get(GLOBAL))
        if key != GLOBAL:
            effective = effective.apply(by_org.get(key))
        self._cache[key] = (now, effective)
        return effective


class AnomalyDetector:
    """Loop, request-rate, spend-velocity and baseline-ratio checks for one recorded event."""

    def __init__(self, thresholds: ThresholdStore, *, baseline_check_interval_s: float = 10.0) -> None:
        self._thresholds = thresholds
        self._baseline_interval_s = baseline_check_interval_s
        self._baseline_checked: dict[str, float] = {}

    async def check(self, conn: asyncpg.Connection, event: UsageRecorded) -> list[Detection]:
        """Run every detector for `event` (already in the request log) and emit what they find."""
        if event.status == "blocked":
            # A refused request spent nothing; counting it would re-freeze a frozen agent forever.
            return []
        limits = await self._thresholds.get(conn, event.org_id)
        found: list[Detection] = []
        target = _target(event)
        if target is not None:
            found += await self._loops(conn, event, limits, *target)
            found += await self._rate_and_spend(conn, event, limits, *target)
        if event.org_id is not None:
            found += await self._baseline(conn, event.org_id, limits)
        for detection in found:
            await self._emit(conn, event, detection, limits)
        return found

    async def _loops(
        self,
        conn: asyncpg.Connection,
        event: UsageRecorded,
        limits: Thresholds,
        target_type: Literal["session", "key"],
        target_id: str,
    ) -> list[Detection]:
        fingerprint = event.prompt_fingerprint
        if not fingerprint:
            return []
        streak: int = await conn.fetchval(
            """
            INSERT INTO loop_streaks AS s (scope_type, scope_id, fingerprint, count, last_at)
            VALUES ($1, $2, $3, 1, $4)
            ON CONFLICT (scope_type, scope_id) DO UPDATE SET
                count = CASE WHEN s.fingerprint = EXCLUDED.fingerprint THEN s.count + 1 ELSE 1 END,
                fingerprint = EXCLUDED.fingerprint, last_at = EXCLUDED.last_at
            RETURNING count
            """,
            target_type,
            target_id,
            fingerprint,
            event.occurred_at,
        )
        if streak >= limits.loop_consecutive:
            # Start counting afresh: after an unfreeze the agent gets a full run before the next freeze.
            await conn.execute(
                "UPDATE loop_streaks SET count = 0 WHERE scope_type = $1 AND scope_id = $2",
                target_type,
                target_id,
            )
            return [
                Detection(
                    "loop",
                    target_type,
                    target_id,
                    streak,
                    limits.loop_consecutive,
                    f"Loop detected: the same prompt {streak} times in a row ({target_type} {target_id})",
                )
            ]
        column = _COLUMN[target_type]
        window = timedelta(seconds=limits.loop_window_s)
        repeats: int = await conn.fetchval(
            f"SELECT count(*) FROM request_log WHERE {column} = $1 AND prompt_fingerprint = $2"
            " AND occurred_at > $3 AND occurred_at <= $4 AND status <> 'blocked'",
            target_id,
            fingerprint,
            event.occurred_at - window,
            event.occurred_at,
        )
        if repeats >= limits.loop_window_count and not await _cooling(
            conn, "loop", target_type, target_id, limits.loop_window_s
        ):
            return [
                Detection(
                    "loop",
                    target_type,
                    target_id,
                    repeats,
                    limits.loop_window_count,
                    f"Loop detected: the same prompt {repeats} times within {limits.loop_window_s}s"
                    f" ({target_type} {target_id})",
                )
            ]
        return []

    async def _rate_and_spend(
        self,
        conn: asyncpg.Connection,
        event: UsageRecorded,
        limits: Thresholds,
        target_type: Literal["session", "key"],
        target_id: str,
    ) -> list[Detection]:
        column = _COLUMN[target_type]
        at = event.occurred_at
        rate_since = at - timedelta(seconds=limits.rate_window_s)
        spend_since = at - timedelta(seconds=60)
        row = await conn.fetchrow(
            f"""
            SELECT count(*) FILTER (WHERE occurred_at > $2) AS requests,
                   coalesce(sum(cost_usd_micros) FILTER (WHERE occurred_at > $3), 0) AS spend
            FROM request_log
            WHERE {column} = $1 AND occurred_at > least($2, $3) AND occurred_at <= $4 AND status <> 'blocked'
            """,
            target_id,
            rate_since,
            spend_since,
            at,
        )
        assert row is not None
        found: list[Detection] = []
        if row["requests"] > limits.rate_max_requests and not await _cooling(
            conn, "request_rate", target_type, target_id, limits.rate_window_s
        ):
            found.append(
                Detection(
                    "request_rate",
                    target_type,
                    target_id,
                    row["requests"],
                    limits.rate_max_requests,
                    f"{row['requests']} requests within {limits.rate_window_s}s"
                    f" (limit {limits.rate_max_requests}; {target_type} {target_id})",
                )
            )
        spend = int(row["spend"])
        if spend > limits.spend_max_usd_micros_per_minute and not await _cooling(
            conn, "spend_velocity", target_type, target_id, 60
        ):
            found.append(
                Detection(
                    "spend_velocity",
                    target_type,
                    target_id,
                    spend,
                    limits.spend_max_usd_micros_per_minute,
                    f"spent {spend} micro-USD within 60s (limit {limits.spend_max_usd_micros_per_minute};"
                    f" {target_type} {target_id})",
                )
            )
        return found

    async def _baseline(self, conn: asyncpg.Connection, org_id: str, limits: Thresholds) -> list[Detection]:
        now = time.monotonic()
        if now - self._baseline_checked.get(org_id, -1e9) < self._baseline_interval_s:
            return []
        self._baseline_checked[org_id] = now
        window_s = limits.baseline_window_minutes * 60
        current, previous = await window_tokens(
            conn, org_id, datetime.now(UTC), limits.baseline_window_minutes, limits.baseline_windows
        )
        mean, ratio = baseline_ratio(current, previous)
        if (
            mean <= 0
            or current < limits.baseline_min_tokens
            or ratio < limits.baseline_multiplier
            or await _cooling(conn, "baseline_ratio", "org", org_id, window_s)
        ):
            return []
        return [
            Detection(
                "baseline_ratio",
                "org",
                org_id,
                round(ratio, 4),
                limits.baseline_multiplier,
                f"{current} tokens in the last {limits.baseline_window_minutes} min is {ratio:.2f}x the mean"
                f" of the previous {limits.baseline_windows} windows ({mean:.0f})",
            )
        ]

    async def _emit(
        self, conn: asyncpg.Connection, event: UsageRecorded, detection: Detection, limits: Thresholds
    ) -> None:
        freeze = detection.freezes(limits)
        anomaly = AnomalyDetected(
            producer="analytics",
            causation_id=event.event_id,
            correlation_id=event.request_id,
            kind=detection.kind,
            severity=detection.severity,
            org_id=event.org_id,
            user_id=event.user_id if detection.target_type != "org" else None,
            key_id=event.key_id if detection.target_type != "org" else None,
            session_id=event.session_id if detection.target_type != "org" else None,
            value=float(detection.value),
            threshold=float(detection.threshold),
            detail=detection.detail,
            frozen=freeze,
        )
        await conn.execute(
            """
            INSERT INTO anomalies (id, kind, severity, target_type, target_id, org_id, team_id, user_id, key_id,
                session_id, value, threshold, detail, frozen, freeze_duration_s, trigger_event_id)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
            """,
            anomaly.event_id,
            detection.kind,
            detection.severity,
            detection.target_type,
            detection.target_id,
            event.org_id,
            event.team_id if detection.target_type != "org" else None,
            anomaly.user_id,
            anomaly.key_id,
            anomaly.session_id,
            anomaly.value,
            anomaly.threshold,
            detection.detail,
            freeze,
            limits.freeze_duration_s if freeze else None,
            event.event_id,
        )
        await write_outbox(conn, Topics.ALERTS, anomaly, key=detection.target_id)
        if freeze:
            assert detection.target_type in ("session", "key")
            command = RequestFreeze(
                producer="analytics",
                causation_id=anomaly.event_id,
                correlation_id=event.request_id,
                target_type=detection.target_type,
                target_id=detection.target_id,
                org_id=event.org_id,
                reason=detection.detail,
                duration_s=limits.freeze_duration_s,
            )
            await write_outbox(conn, Topics.QUOTA_COMMANDS, command, key=detection.target_id)
        logger.warning(
            "anomaly detected",
            extra={
                "kind": detection.kind,
                "target_type": detection.target_type,
                "target_id": detection.target_id,
                "frozen": freeze,
                "trigger_event_id": event.event_id,
            },
        )


def _target(event: UsageRecorded) -> tuple[Literal["session", "key"], str] | None:
    """Per-agent detectors watch the session, or the key when the client sent no session id."""
    if event.session_id:
        return "session", event.session_id
    if event.key_id:
        return "key", event.key_id
    return None


async def _cooling(
    conn: asyncpg.Connection, kind: str, target_type: str, target_id: str, window_s: int
) -> bool:
    """True when the same anomaly was already raised for this target within `window_s` (no alert storm)."""
    return bool(
        await conn.fetchval(
            "SELECT 1 FROM anomalies WHERE kind = $1 AND target_type = $2 AND target_id = $3"
            " AND detected_at > now() - make_interval(secs => $4) LIMIT 1",
            kind,
            target_type,
            target_id,
            float(window_s),
        )
    )


async def window_tokens(
    conn: asyncpg.Connection | asyncpg.Pool, org_id: str, now: datetime, window_minutes: int, windows: int
) -> tuple[int, list[int]]:
    """Tokens of `org_id` in the current window (ending at `now`) and in each of the `windows` before it."""
    window = timedelta(minutes=window_minutes)
    since = now - window * (windows + 1)
    rows = await conn.fetch(
        "SELECT minute, total_tokens FROM org_usage_minute WHERE org_id = $1 AND minute > $2 AND minute <= $3",
        org_id,
        since,
        now,
    )
    sums = [0] * (windows + 1)
    for r in rows:
        index = int((now - r["minute"]) // window)
        if 0 <= index <= windows:
            sums[index] += int(r["total_tokens"])
    return sums[0], sums[1:]
