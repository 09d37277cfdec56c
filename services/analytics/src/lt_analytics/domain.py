"""Usage aggregation rules: time buckets and the shape of a usage summary (no I/O)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from pydantic import BaseModel

from leaky_common.events import UsageRecorded

__all__ = [
    "DailyUsage",
    "DayTotals",
    "ModelTotals",
    "UsageSummary",
    "day_bucket",
    "grain_buckets",
    "minute_bucket",
    "rollup_scopes",
    "summarise",
    "window_start",
]


def day_bucket(at: datetime) -> date:
    """The UTC day an event counts towards."""
    return _utc(at).date()


def minute_bucket(at: datetime) -> datetime:
    """The UTC minute an event counts towards."""
    return _utc(at).replace(second=0, microsecond=0)


def grain_buckets(at: datetime) -> list[tuple[str, datetime]]:
    """The minute, hour and day buckets (UTC) an event counts towards."""
    minute = minute_bucket(at)
    hour = minute.replace(minute=0)
    return [("minute", minute), ("hour", hour), ("day", hour.replace(hour=0))]


def rollup_scopes(event: UsageRecorded) -> list[tuple[str, str]]:
    """(scope type, id) pairs an event is aggregated under: user, team, org, key and session when known."""
    pairs = (
        ("user", event.user_id),
        ("team", event.team_id),
        ("org", event.org_id),
        ("key", event.key_id),
        ("session", event.session_id),
    )
    return [(kind, value) for kind, value in pairs if value]


def window_start(today: date, days: int) -> date:
    """First day of a window of `days` days ending with (and including) `today`."""
    if days < 1:
        raise ValueError("days must be at least 1")
    return today - timedelta(days=days - 1)


def _utc(at: datetime) -> datetime:
    # Contracts carry aware datetimes; a naive one is taken as UTC rather than local time.
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class DailyUsage:
    """One per-(user, model, day) aggregate row."""

    day: date
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost_usd_micros: int


class ModelTotals(BaseModel):
    model: str
    requests: int
    total_tokens: int
    cost_usd_micros: int


class DayTotals(BaseModel):
    date: date
    requests: int
    total_tokens: int
    cost_usd_micros: int


class UsageSummary(BaseModel):
    """`GET /v1/analytics/usage` response."""

    user_id: str
    days: int
    total_requests: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost_usd_micros: int
    by_model: list[ModelTotals]
    by_day: list[DayTotals]
    # Mean of per-request completion/prompt ratios (4 decimal places).
    average_efficiency: float = 0.0


def summarise(user_id: str, days: int, rows: Iterable[DailyUsage]) -> UsageSummary:
    """Fold daily rows into totals, per model (most tokens first) and per day (oldest first, days with data)."""
    per_model: dict[str, list[int]] = {}
    per_day: dict[date, list[int]] = {}
    requests = prompt = completion = total = cost = 0
    for row in rows:
        requests += row.requests
        prompt += row.prompt_tokens
        completion += row.completion_tokens
        total += row.total_tokens
        cost += row.cost_usd_micros
        for bucket in (per_model.setdefault(row.model, [0, 0, 0]), per_day.setdefault(row.day, [0, 0, 0])):
            bucket[0] += row.requests
            bucket[1] += row.total_tokens
            bucket[2] += row.cost_usd_micros
    by_model = [
        ModelTotals(model=m, requests=r, total_tokens=t, cost_usd_micros=c)
        for m, (r, t, c) in sorted(per_model.items(), key=lambda kv: (-kv[1][1], kv[0]))
    ]
    by_day = [
        DayTotals(date=d, requests=r, total_tokens=t, cost_usd_micros=c)
        for d, (r, t, c) in sorted(per_day.items())
    ]
    return UsageSummary(
        user_id=user_id,
        days=days,
        total_requests=requests,
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=total,
        cost_usd_micros=cost,
        by_model=by_model,
        by_day=by_day,
    )
