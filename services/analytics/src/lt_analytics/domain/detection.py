"""Anomaly rules (no I/O): what each detector finds, which detections freeze, severities, cool-downs."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

from leaky_common.events import UsageRecorded
from lt_analytics.domain.thresholds import Kind, Thresholds

__all__ = [
    "Detection",
    "Streak",
    "Target",
    "WindowStats",
    "baseline_detection",
    "baseline_ratio",
    "cooldown_s",
    "extend_run",
    "follow_loops",
    "target_of",
    "window_detections",
]

# A per-agent detector's target: (kind, org, id) of the session, or of the key when the request had no
# session. A session id is the client's, so it names a session only within its org.
Target = tuple[Literal["session", "key"], str, str]


@dataclass(frozen=True, slots=True)
class Detection:
    """One anomaly found for a target (a session, a key or an org)."""

    kind: Kind
    target_type: Literal["session", "key", "org"]
    target_id: str
    value: float
    threshold: float
    detail: str
    # False for detections that must fire every time they are found: a consecutive loop that freezes (after
    # an unfreeze, the agent's next full run freezes it again). One that only alerts cools down like the rest.
    cools_down: bool = True

    @property
    def severity(self) -> Literal["warning", "error", "critical"]:
        """Loops and spend are errors (an agent burning money), rate and baseline are warnings."""
        if self.kind == "spend_velocity":
            return "critical"
        return "error" if self.kind == "loop" else "warning"

    def freezes(self, thresholds: Thresholds) -> bool:
        """Whether this detection sends a freeze command (sessions and keys only, never a whole org)."""
        return self.kind in thresholds.freeze_on and self.target_type in ("session", "key")


def target_of(event: UsageRecorded) -> Target | None:
    """Per-agent detectors watch the session, or the key when the client sent no session id, within the
    request's org; a request of no org (unauthenticated: a bad key, an unknown model) is nobody's agent."""
    if not event.org_id:
        return None
    if event.session_id:
        return "session", event.org_id, event.session_id
    if event.key_id:
        return "key", event.org_id, event.key_id
    return None


def cooldown_s(kind: Kind, limits: Thresholds) -> int:
    """How long the same anomaly stays quiet for a target after it was raised (no alert storm)."""
    return {
        "loop": limits.loop_window_s,
        "request_rate": limits.rate_window_s,
        "spend_velocity": 60,
        "baseline_ratio": limits.baseline_window_minutes * 60,
    }[kind]


@dataclass(slots=True)
class Streak:
    """A target's current run of one prompt fingerprint; `last_at` is set once this batch extends it.

    `times` holds when the run's latest repeats happened (at most `loop_consecutive` of them): a key's run
    counts only the repeats within the loop window (see `extend_run`)."""

    fingerprint: str | None
    count: int
    last_at: datetime | None = None
    times: list[datetime] = field(default_factory=list)


def extend_run(streak: Streak, target_type: str, event: UsageRecorded, lim: Thresholds) -> None:
    """Add `event` to `streak`: a different prompt starts a new run.

    A session's run counts every consecutive repeat: a session is one agent's task, however slow. A request
    without a session is watched by its key, which lives for months: there consecutive repeats count only
    within `loop_window_s` of the latest one, so the same prompt sent once a day (a health check, a cron job)
    is never a loop, while a runaway agent repeating itself within the window still is."""
    if streak.fingerprint != event.prompt_fingerprint:
        streak.count, streak.times = 0, []
    at = event.occurred_at
    if at.tzinfo is None:  # a producer's naive time is UTC (as Postgres stores it); stored times are aware
        at = at.replace(tzinfo=UTC)
    streak.fingerprint, streak.last_at = event.prompt_fingerprint, at
    recent = [*streak.times, at][-lim.loop_consecutive :]
    if target_type == "key":
        window = timedelta(seconds=lim.loop_window_s)
        recent = [t for t in recent if at - t < window]
        streak.count = len(recent)
    else:
        streak.count += 1
    streak.times = recent


def follow_loops(
    runs: list[tuple[UsageRecorded, Target]],
    streaks: dict[Target, Streak],
    limits: dict[str | None, Thresholds],
) -> list[tuple[UsageRecorded, Detection]]:
    """Extend each target's streak event by event (updating `streaks`); a run of `loop_consecutive` fires."""
    found: list[tuple[UsageRecorded, Detection]] = []
    for event, target in runs:
        streak = streaks.setdefault(target, Streak(None, 0))
        lim = limits[event.org_id]
        extend_run(streak, target[0], event, lim)
        need = lim.loop_consecutive
        if streak.count >= need:
            within = f" within {lim.loop_window_s}s" if target[0] == "key" else ""
            detail = f"Loop detected: the same prompt {streak.count} times in a row{within}"
            # Alert only (no freeze): once per loop window per target, not once every `need` requests of a
            # loop that keeps running (an alert storm on every channel).
            freezes = "loop" in lim.freeze_on
            found.append(
                (
                    event,
                    Detection(
                        "loop", target[0], target[2], streak.count, need, detail, cools_down=not freezes
                    ),
                )
            )
            # Start counting afresh: after an unfreeze the agent gets a full run before the next freeze.
            streak.count, streak.times = 0, []
    return found


@dataclass(frozen=True, slots=True)
class WindowStats:
    """One target's recent requests, seen from its last event: the counts the windowed detectors judge."""

    requests: int  # within the rate window
    spend: int  # micro-dollars within the last 60 s
    repeats: int  # of the last event's fingerprint within the loop window


def window_detections(
    target: Target, event: UsageRecorded, stats: WindowStats, lim: Thresholds
) -> list[Detection]:
    """Loop-in-a-window (for the last event's fingerprint), request rate and spend velocity of one target."""
    target_type, _, target_id = target
    found: list[Detection] = []
    if event.prompt_fingerprint and stats.repeats >= lim.loop_window_count:
        detail = f"Loop detected: the same prompt {stats.repeats} times within {lim.loop_window_s}s"
        found.append(Detection("loop", target_type, target_id, stats.repeats, lim.loop_window_count, detail))
    if stats.requests > lim.rate_max_requests:
        detail = f"{stats.requests} requests within {lim.rate_window_s}s (limit {lim.rate_max_requests})"
        found.append(
            Detection("request_rate", target_type, target_id, stats.requests, lim.rate_max_requests, detail)
        )
    if stats.spend > lim.spend_max_usd_micros_per_minute:
        limit = lim.spend_max_usd_micros_per_minute
        detail = f"spent {stats.spend} micro-USD within 60s (limit {limit})"
        found.append(Detection("spend_velocity", target_type, target_id, stats.spend, limit, detail))
    return found


def baseline_ratio(current: int, previous: list[int]) -> tuple[float, float]:
    """(mean of the previous windows, current / mean); the ratio is 0 when there is no baseline."""
    if not previous:
        return 0.0, 0.0
    mean = sum(previous) / len(previous)
    return mean, (current / mean if mean > 0 else 0.0)


def baseline_detection(
    org_id: str, current: int, previous: list[int], limits: Thresholds
) -> Detection | None:
    """An org's token use of the current window against the mean of the windows before it."""
    mean, ratio = baseline_ratio(current, previous)
    if mean <= 0 or current < limits.baseline_min_tokens or ratio < limits.baseline_multiplier:
        return None
    return Detection(
        "baseline_ratio",
        "org",
        org_id,
        round(ratio, 4),
        limits.baseline_multiplier,
        f"{current} tokens in the last {limits.baseline_window_minutes} min is {ratio:.2f}x the mean"
        f" of the previous {limits.baseline_windows} windows ({mean:.0f})",
    )
