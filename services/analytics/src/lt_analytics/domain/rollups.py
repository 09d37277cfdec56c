"""Rollup keys: the buckets and scopes an event counts towards, per-request efficiency, and the sums a batch
of new events adds to each aggregate."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from leaky_common.events import UsageRecorded

__all__ = [
    "EFFICIENCY_SCALE",
    "Aggregates",
    "aggregate",
    "day_bucket",
    "efficiency",
    "grain_buckets",
    "mean_efficiency",
    "minute_bucket",
    "rollup_scopes",
]

# Per-request efficiency (completion / prompt) is kept as an integer in units of 1e-4 (4 decimal places).
EFFICIENCY_SCALE = 10_000


def day_bucket(at: datetime) -> date:
    """The UTC day an event counts towards."""
    return _utc(at).date()


def minute_bucket(at: datetime) -> datetime:
    """The UTC minute an event counts towards."""
    return _utc(at).replace(second=0, microsecond=0)


def grain_buckets(at: datetime) -> list[tuple[str, datetime]]:
    """The minute, hour and day buckets (UTC) an event counts towards."""
    return _grains(minute_bucket(at))


def _grains(minute: datetime) -> list[tuple[str, datetime]]:
    """The minute, hour and day buckets of a UTC minute."""
    hour = minute.replace(minute=0)
    return [("minute", minute), ("hour", hour), ("day", hour.replace(hour=0))]


def rollup_scopes(event: UsageRecorded) -> list[tuple[str, str]]:
    """(scope type, id) pairs an event is aggregated under: user, team, org, key and session when known. Every
    rollup row is its org's (a session id names a session only within its org), so a request of no org (an
    unauthenticated one) is aggregated under none."""
    return _scopes(event.user_id, event.team_id, event.org_id, event.key_id, event.session_id)


def _scopes(
    user: str | None, team: str | None, org: str | None, key: str | None, session: str | None
) -> list[tuple[str, str]]:
    """`rollup_scopes` from the ids themselves."""
    if not org:
        return []
    pairs = (("user", user), ("team", team), ("org", org), ("key", key), ("session", session))
    return [(kind, value) for kind, value in pairs if value]


def efficiency(prompt_tokens: int, completion_tokens: int) -> int:
    """completion / prompt in units of 1e-4, rounded half up; 0 when there was no prompt."""
    if prompt_tokens <= 0:
        return 0
    return (completion_tokens * EFFICIENCY_SCALE * 2 + prompt_tokens) // (prompt_tokens * 2)


def mean_efficiency(efficiency_sum: int, requests: int) -> float:
    """Mean per-request efficiency (4 decimal places) from a sum of scaled efficiencies; 0 without requests."""
    if not requests:
        return 0.0
    return round(efficiency_sum / requests / EFFICIENCY_SCALE, 4)


def _utc(at: datetime) -> datetime:
    # Contracts carry aware datetimes; a naive one is taken as UTC rather than local time.
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


Sums = dict[tuple[Any, ...], list[int]]


@dataclass
class Aggregates:
    """What a batch adds, per aggregate row key: [requests, then the measures that table keeps]."""

    daily: Sums = field(default_factory=dict)  # (user, model, day): requests, p, c, t, x
    minute: Sums = field(default_factory=dict)  # (org, minute): requests, t, x
    # (scope type, id, grain, bucket, model, provider, org): p, c, t, x, e
    rollup: Sums = field(default_factory=dict)


def aggregate(events: Iterable[UsageRecorded]) -> Aggregates:
    """Sum new events into the daily, per-org-minute and rollup rows they count towards. No key holds a None
    (an event of no user adds no daily row, one of no org nothing else), so keys sort as they are.

    Two steps: the events are first summed per (user, team, org, key, session, model, provider, minute), one
    dictionary update each; only those groups are then spread over the up to 15 rollup rows (5 scopes, 3
    grains) and the daily and minute rows. A batch's events mostly share a few such groups."""
    groups: dict[tuple[Any, ...], list[int]] = {}
    for e in events:  # the hot loop of a drain: one key and one update per event
        p, c = e.prompt_tokens, e.completion_tokens
        key = (e.user_id, e.team_id, e.org_id, e.key_id, e.session_id, e.model, e.provider,
               minute_bucket(e.occurred_at))  # fmt: skip
        sums = groups.get(key)
        if sums is None:
            groups[key] = [1, p, c, e.total_tokens, e.cost_usd_micros, efficiency(p, c)]
        else:
            sums[0] += 1
            sums[1] += p
            sums[2] += c
            sums[3] += e.total_tokens
            sums[4] += e.cost_usd_micros
            sums[5] += efficiency(p, c)
    acc = Aggregates()
    daily, minute_rows, rollup = acc.daily, acc.minute, acc.rollup
    for (user, team, org, key_id, session, model, provider, minute), (n, p, c, t, x, eff) in groups.items():
        grains = _grains(minute)
        if user is not None:
            _add(daily, (user, model, grains[2][1].date()), n, (p, c, t, x))
        if org is None:
            continue
        _add(minute_rows, (org, minute), n, (t, x))
        measures = (p, c, t, x, eff)
        for scope_type, scope_id in _scopes(user, team, org, key_id, session):
            for grain, bucket in grains:
                _add(rollup, (scope_type, scope_id, grain, bucket, model, provider, org), n, measures)
    return acc


def _add(acc: Sums, key: tuple[Any, ...], requests: int, measures: tuple[int, ...]) -> None:
    """Add `requests` requests and their summed measures to the sums under `key`."""
    sums = acc.get(key)
    if sums is None:
        acc[key] = [requests, *measures]
        return
    sums[0] += requests
    for i, value in enumerate(measures, start=1):
        sums[i] += value
