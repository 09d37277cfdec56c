"""Request and response bodies of the analytics API (the OpenAPI document says what comes back)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from lt_analytics.domain.thresholds import ThresholdOverrides, Thresholds
from lt_analytics.domain.usage import DayTotals, ModelTotals, UsageSummary

__all__ = [
    "Anomaly",
    "AnomalyList",
    "Baseline",
    "Breakdown",
    "DayTotals",
    "Leaderboard",
    "LeaderboardEntry",
    "ModelTotals",
    "Point",
    "Report",
    "ThresholdOverrides",
    "ThresholdView",
    "Timeseries",
    "Totals",
    "UsageSummary",
]


class Totals(BaseModel):
    requests: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost_usd_micros: int


class Breakdown(Totals):
    name: str


class Report(BaseModel):
    """`GET /v1/analytics/report`: one org's or team's usage over the last `days` UTC days."""

    scope: Literal["org", "team"]
    id: str
    days: int
    totals: Totals
    by_model: list[Breakdown]
    by_provider: list[Breakdown]
    by_day: list[Breakdown]
    top_users: list[Breakdown]


class LeaderboardEntry(BaseModel):
    rank: int
    user_id: str
    requests: int
    total_tokens: int
    average_efficiency: float


class Leaderboard(BaseModel):
    period: Literal["daily", "weekly", "monthly"]
    org_id: str | None
    data: list[LeaderboardEntry]


class Anomaly(BaseModel):
    id: str
    kind: str
    severity: str
    target_type: str
    target_id: str
    org_id: str | None
    team_id: str | None
    user_id: str | None
    key_id: str | None
    session_id: str | None
    value: float
    threshold: float
    detail: str
    frozen: bool
    freeze_duration_s: int | None
    trigger_event_id: str
    detected_at: datetime


class AnomalyList(BaseModel):
    data: list[Anomaly]


class Baseline(BaseModel):
    """F40: tokens of the current window against the mean of the previous windows."""

    org_id: str
    window_minutes: int
    baseline_windows: int
    threshold_multiplier: float
    current_tokens: int
    baseline_average_tokens: float
    ratio: float
    anomaly: bool


class Point(BaseModel):
    bucket: datetime
    requests: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost_usd_micros: int


class Timeseries(BaseModel):
    """`GET /v1/analytics/timeseries`: one scope's usage per minute, hour or day."""

    scope: Literal["user", "team", "org", "key", "session"]
    id: str
    grain: Literal["minute", "hour", "day"]
    model: str | None
    provider: str | None
    data: list[Point]


class ThresholdView(BaseModel):
    org_id: str | None
    overrides: dict[str, Any]
    effective: Thresholds
