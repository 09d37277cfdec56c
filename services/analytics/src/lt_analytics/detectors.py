"""Anomaly detectors, run inside the transaction that records a batch of usage events.

Because they run only on events that are new (the request log is the inbox), a replayed topic detects
nothing twice. Detections are written to `anomalies` and announced through the outbox: `AnomalyDetected` on
`alerts` and, where configured, `RequestFreeze` on `quota.commands`.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

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
        found: list[tuple[UsageRecorded, Detection]] = []
        found += await self._consecutive_loops(conn, live, limits)
        last: dict[tuple[Literal["session", "key"], str], UsageRecorded] = {}
        for e in live:
            target = _target(e)
            if target is not None:
                last[target] = e
        found += await self._windows(conn, last, limits)
        for org in sorted({e.org_id for e in live if e.org_id}):
            trigger = next(e for e in reversed(live) if e.org_id == org)
            found += [(trigger, d) for d in await self._baseline(conn, org, limits[org])]
        emitted: list[Detection] = []
        for event, detection in found:
            if await self._cooled(conn, detection, limits[event.org_id]):
                await self._emit(conn, event, detection, limits[event.org_id])
                emitted.append(detection)
        return emitted

    async def _cooled(self, conn: asyncpg.Connection, d: Detection, limits: Thresholds) -> bool:
        """Consecutive loops always fire (the run restarts after each); the others once per window."""
        if not d.cools_down:
            return True
        window = {
            "loop": limits.loop_window_s,
            "request_rate": limits.rate_window_s,
            "spend_velocity": 60,
            "baseline_ratio": limits.baseline_window_minutes * 60,
        }[d.kind]
        return not await _cooling(conn, d.kind, d.target_type, d.target_id, window)

    async def _consecutive_loops(
        self, conn: asyncpg.Connection, events: list[UsageRecorded], limits: dict[str | None, Thresholds]
    ) -> list[tuple[UsageRecorded, Detection]]:
        runs = [(e, t) for e in events if e.prompt_fingerprint and (t := _target(e)) is not None]
        if not runs:
            return []
        targets = sorted({t for _, t in runs})
        rows = await conn.fetch(
            "SELECT scope_type, scope_id, fingerprint, count FROM loop_streaks"
            " WHERE (scope_type, scope_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
            [t for t, _ in targets],
            [i for _, i in targets],
        )
        streaks: dict[tuple[str, str], list[Any]] = {
            (r["scope_type"], r["scope_id"]): [r["fingerprint"], r["count"], None] for r in rows
        }
        found: list[tuple[UsageRecorded, Detection]] = []
        for event, target in runs:
            state = streaks.setdefault(target, [None, 0, None])
            state[1] = state[1] + 1 if state[0] == event.prompt_fingerprint else 1
            state[0], state[2] = event.prompt_fingerprint, event.occurred_at
            need = limits[event.org_id].loop_consecutive
            if state[1] >= need:
                found.append(
                    (
                        event,
                        Detection(
                            "loop",
                            target[0],
                            target[1],
                            state[1],
                            need,
                            f"Loop detected: the same prompt {state[1]} times in a row",
                            cools_down=False,
                        ),
                    )
                )
                # Start counting afresh: after an unfreeze the agent gets a full run before the next freeze.
                state[1] = 0
        changed = [(t, v) for t, v in streaks.items() if v[2] is not None]
        await conn.execute(
            """
            INSERT INTO loop_streaks AS s (scope_type, scope_id, fingerprint, count, last_at)
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::timestamptz[])
            ON CONFLICT (scope_type, scope_id) DO UPDATE SET
                fingerprint = EXCLUDED.fingerprint, count = EXCLUDED.count, last_at = EXCLUDED.last_at
            """,
            [t[0] for t, _ in changed],
            [t[1] for t, _ in changed],
            [v[0] for _, v in changed],
            [v[1] for _, v in changed],
            [v[2] for _, v in changed],
        )
        return found

    async def _windows(
        self,
        conn: asyncpg.Connection,
        last: dict[tuple[Literal["session", "key"], str], UsageRecorded],
        limits: dict[str | None, Thresholds],
    ) -> list[tuple[UsageRecorded, Detection]]:
        """Loop-in-a-window (for the fingerprint of each target's last event), request rate and spend
        velocity, from one scan of each target's recent requests."""
        found: list[tuple[UsageRecorded, Detection]] = []
        for target_type in ("session", "key"):
            targets = [(k[1], e) for k, e in last.items() if k[0] == target_type]
            if not targets:
                continue
            lims = [limits[e.org_id] for _, e in targets]
            rows = await conn.fetch(
                f"""
                SELECT t.i, s.requests, s.spend, s.repeats
                FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::float8[], $5::float8[], $6::bigint[],
                            $7::bigint[], $8::bigint[], $9::int[])
                    AS t (id, at, fp, rate_s, loop_s, max_requests, max_spend, need, i)
                CROSS JOIN LATERAL (
                    SELECT count(*) FILTER (WHERE r.occurred_at > t.at - make_interval(secs => t.rate_s)) AS requests,
                           coalesce(sum(r.cost_usd_micros)
                               FILTER (WHERE r.occurred_at > t.at - interval '60 seconds'), 0) AS spend,
                           count(*) FILTER (WHERE r.prompt_fingerprint = t.fp
                               AND r.occurred_at > t.at - make_interval(secs => t.loop_s)) AS repeats
                    FROM request_log r
                    WHERE r.{_COLUMN[target_type]} = t.id AND r.status <> 'blocked' AND r.occurred_at <= t.at
                      AND r.occurred_at > t.at - make_interval(secs => greatest(t.rate_s, t.loop_s, 60))
                ) s
                WHERE s.requests > t.max_requests OR s.spend > t.max_spend OR s.repeats >= t.need
                """,
                [i for i, _ in targets],
                [e.occurred_at for _, e in targets],
                [e.prompt_fingerprint for _, e in targets],
                [float(lim.rate_window_s) for lim in lims],
                [float(lim.loop_window_s) for lim in lims],
                [lim.rate_max_requests for lim in lims],
                [lim.spend_max_usd_micros_per_minute for lim in lims],
                [lim.loop_window_count for lim in lims],
                list(range(len(targets))),
            )
            for r in rows:
                target_id, event = targets[r["i"]]
                lim = lims[r["i"]]
                detections: list[Detection] = []
                if event.prompt_fingerprint and r["repeats"] >= lim.loop_window_count:
                    detections.append(
                        Detection(
                            "loop",
                            target_type,
                            target_id,
                            r["repeats"],
                            lim.loop_window_count,
                            f"Loop detected: the same prompt {r['repeats']} times within {lim.loop_window_s}s",
                        )
                    )
                if r["requests"] > lim.rate_max_requests:
                    detections.append(
                        Detection(
                            "request_rate",
                            target_type,
                            target_id,
                            r["requests"],
                            lim.rate_max_requests,
                            f"{r['requests']} requests within {lim.rate_window_s}s (limit {lim.rate_max_requests})",
                        )
                    )
                spend = int(r["spend"])
                if spend > lim.spend_max_usd_micros_per_minute:
                    detections.append(
                        Detection(
                            "spend_velocity",
                            target_type,
                            target_id,
                            spend,
                            lim.spend_max_usd_micros_per_minute,
                            f"spent {spend} micro-USD within 60s (limit {lim.spend_max_usd_micros_per_minute})",
                        )
                    )
                found += [(event, d) for d in detections]
        return found

    async def _baseline(self, conn: asyncpg.Connection, org_id: str, limits: Thresholds) -> list[Detection]:
        now = time.monotonic()
        if now - self._baseline_checked.get(org_id, -1e9) < self._baseline_interval_s:
            return []
        self._baseline_checked[org_id] = now
        current, previous = await window_tokens(
            conn, org_id, datetime.now(UTC), limits.baseline_window_minutes, limits.baseline_windows
        )
        mean, ratio = baseline_ratio(current, previous)
        if mean <= 0 or current < limits.baseline_min_tokens or ratio < limits.baseline_multiplier:
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
            team_id=event.team_id if detection.target_type != "org" else None,
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
            anomaly.team_id,
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
