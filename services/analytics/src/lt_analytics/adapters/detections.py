"""SQL of the detectors: loop streaks, each target's recent requests, recent anomalies, org tokens per minute."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal

import asyncpg
import orjson

from leaky_common.events import AnomalyDetected
from lt_analytics.domain.detection import Detection, Streak, Target, WindowStats
from lt_analytics.domain.thresholds import Thresholds

__all__ = [
    "insert_anomaly",
    "load_streaks",
    "org_minute_tokens",
    "raised_within",
    "save_streaks",
    "window_stats",
]

_COLUMN = {"session": "session_id", "key": "key_id"}

_WINDOW_STATS = """
SELECT t.i, s.requests, s.spend, s.repeats
FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::float8[], $5::float8[], $6::bigint[],
            $7::bigint[], $8::bigint[], $9::int[], $10::text[])
    AS t (id, at, fp, rate_s, loop_s, max_requests, max_spend, need, i, org)
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE r.occurred_at > t.at - make_interval(secs => t.rate_s)) AS requests,
           coalesce(sum(r.cost_usd_micros)
               FILTER (WHERE r.occurred_at > t.at - interval '60 seconds'), 0) AS spend,
           count(*) FILTER (WHERE r.prompt_fingerprint = t.fp
               AND r.occurred_at > t.at - make_interval(secs => t.loop_s)) AS repeats
    FROM request_log r
    WHERE r.{column} = t.id AND r.org_id = t.org AND r.status <> 'blocked' AND r.occurred_at <= t.at
      AND r.occurred_at > t.at - make_interval(secs => greatest(t.rate_s, t.loop_s, 60))
) s
WHERE s.requests > t.max_requests OR s.spend > t.max_spend OR s.repeats >= t.need
"""


async def load_streaks(conn: asyncpg.Connection, targets: Sequence[Target]) -> dict[Target, Streak]:
    """The stored loop streaks of `targets` (targets without one are absent)."""
    rows = await conn.fetch(
        "SELECT scope_type, org_id, scope_id, fingerprint, count, times FROM loop_streaks"
        " WHERE (scope_type, org_id, scope_id) IN (SELECT * FROM unnest($1::text[], $2::text[], $3::text[]))",
        [t for t, _, _ in targets],
        [o for _, o, _ in targets],
        [i for _, _, i in targets],
    )
    return {
        (r["scope_type"], r["org_id"], r["scope_id"]): Streak(
            r["fingerprint"], r["count"], times=list(r["times"])
        )
        for r in rows
    }


async def save_streaks(conn: asyncpg.Connection, streaks: dict[Target, Streak]) -> None:
    """Store the streaks this batch extended (those with `last_at` set)."""
    changed = [(t, s) for t, s in streaks.items() if s.last_at is not None]
    await conn.execute(
        """
        INSERT INTO loop_streaks AS s (scope_type, org_id, scope_id, fingerprint, count, last_at, times)
        SELECT t.scope_type, t.org_id, t.scope_id, t.fingerprint, t.count, t.last_at,
               ARRAY(SELECT jsonb_array_elements_text(t.times)::timestamptz)
        FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::int[], $6::timestamptz[], $7::jsonb[])
            AS t (scope_type, org_id, scope_id, fingerprint, count, last_at, times)
        ON CONFLICT (scope_type, org_id, scope_id) DO UPDATE SET
            fingerprint = EXCLUDED.fingerprint, count = EXCLUDED.count, last_at = EXCLUDED.last_at,
            times = EXCLUDED.times
        """,
        [t[0] for t, _ in changed],
        [t[1] for t, _ in changed],
        [t[2] for t, _ in changed],
        [s.fingerprint for _, s in changed],
        [s.count for _, s in changed],
        [s.last_at for _, s in changed],
        # One array per row: unnest would flatten an array of arrays, so each travels as a JSON list.
        [orjson.dumps([t.isoformat() for t in s.times]).decode() for _, s in changed],
    )


async def window_stats(
    conn: asyncpg.Connection,
    target_type: Literal["session", "key"],
    last: Sequence[tuple[str, datetime, str | None, Thresholds]],
    orgs: Sequence[str],
) -> dict[int, WindowStats]:
    """One scan of each target's recent requests up to its last event (id, at, fingerprint, limits), counting
    only requests of the target's org (`orgs`, in the same order); only the targets over some limit come back,
    by their index in `last`."""
    rows = await conn.fetch(
        _WINDOW_STATS.format(column=_COLUMN[target_type]),
        [i for i, _, _, _ in last],
        [at for _, at, _, _ in last],
        [fp for _, _, fp, _ in last],
        [float(lim.rate_window_s) for *_, lim in last],
        [float(lim.loop_window_s) for *_, lim in last],
        [lim.rate_max_requests for *_, lim in last],
        [lim.spend_max_usd_micros_per_minute for *_, lim in last],
        [lim.loop_window_count for *_, lim in last],
        list(range(len(last))),
        list(orgs),
    )
    return {r["i"]: WindowStats(r["requests"], int(r["spend"]), r["repeats"]) for r in rows}


async def lock_anomaly_targets(conn: asyncpg.Connection, keys: Sequence[str]) -> None:
    """Transaction-scoped advisory locks on `keys` (anomaly kind and target), one at a time in the given
    order: concurrent batches finding the same anomaly check its cooldown and record it one after the other."""
    for key in keys:
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", key)


async def raised_within(
    conn: asyncpg.Connection, kind: str, target_type: str, target_id: str, window_s: int, org_id: str | None
) -> bool:
    """True when the same anomaly was already raised for this target of this org within `window_s` (another
    org's detection of the same session id does not silence this org's)."""
    return bool(
        await conn.fetchval(
            "SELECT 1 FROM anomalies WHERE kind = $1 AND target_type = $2 AND target_id = $3"
            " AND org_id IS NOT DISTINCT FROM $5"
            " AND detected_at > now() - make_interval(secs => $4) LIMIT 1",
            kind,
            target_type,
            target_id,
            float(window_s),
            org_id,
        )
    )


async def insert_anomaly(
    conn: asyncpg.Connection,
    alert: AnomalyDetected,
    detection: Detection,
    freeze_duration_s: int | None,
    trigger_event_id: str,
) -> None:
    """Store a detection (its id is the alert's event id)."""
    await conn.execute(
        """
        INSERT INTO anomalies (id, kind, severity, target_type, target_id, org_id, team_id, user_id, key_id,
            session_id, value, threshold, detail, frozen, freeze_duration_s, trigger_event_id)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
        """,
        alert.event_id,
        detection.kind,
        detection.severity,
        detection.target_type,
        detection.target_id,
        alert.org_id,
        alert.team_id,
        alert.user_id,
        alert.key_id,
        alert.session_id,
        alert.value,
        alert.threshold,
        detection.detail,
        alert.frozen,
        freeze_duration_s,
        trigger_event_id,
    )


async def org_minute_tokens(
    conn: asyncpg.Connection | asyncpg.Pool, org_id: str, since: datetime, until: datetime
) -> list[tuple[datetime, int]]:
    """An org's tokens per minute in (since, until]."""
    rows = await conn.fetch(
        "SELECT minute, total_tokens FROM org_usage_minute WHERE org_id = $1 AND minute > $2 AND minute <= $3",
        org_id,
        since,
        until,
    )
    return [(r["minute"], int(r["total_tokens"])) for r in rows]
