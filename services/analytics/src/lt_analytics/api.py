"""Analytics routes beyond personal usage: org/team reports, time series, leaderboard, anomalies, baseline and
thresholds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from leaky_common.auth import INTERNAL_TOKEN_HEADER, PRINCIPAL_HEADER, Principal, principal_from_headers
from leaky_common.errors import Forbidden, InvalidRequest
from lt_analytics import repository
from lt_analytics.detection import EFFICIENCY_SCALE, GLOBAL, ThresholdOverrides, Thresholds, baseline_ratio
from lt_analytics.detectors import window_tokens
from lt_analytics.domain import window_start
from lt_analytics.settings import AnalyticsSettings

__all__ = ["ID_PATTERN", "router"]


async def _principal(request: Request) -> Principal:
    settings: AnalyticsSettings = request.app.state.settings
    return principal_from_headers(
        request.headers.get(PRINCIPAL_HEADER),
        request.headers.get(INTERNAL_TOKEN_HEADER),
        settings.internal_token,
    )


async def _admin(request: Request) -> Principal:
    settings: AnalyticsSettings = request.app.state.settings
    return principal_from_headers(
        request.headers.get(PRINCIPAL_HEADER),
        request.headers.get(INTERNAL_TOKEN_HEADER),
        settings.internal_token,
        admin=True,
    )


async def _pool(request: Request) -> asyncpg.Pool:
    pool: asyncpg.Pool = request.app.state.pool
    return pool


Caller = Annotated[Principal, Depends(_principal)]
Admin = Annotated[Principal, Depends(_admin)]
Pool = Annotated[asyncpg.Pool, Depends(_pool)]
# Identifiers: printable text only (a NUL byte cannot even be stored in PostgreSQL text).
ID_PATTERN = r"^[^\x00-\x1f\x7f]+$"
OrgParam = Annotated[str | None, Query(min_length=1, max_length=200, pattern=ID_PATTERN)]

router = APIRouter(tags=["analytics"])


def _own_org(caller: Principal, org_id: str | None) -> str:
    """The org a request reads: the caller's own; naming another org is a 403 `other_org`, for admins too."""
    if org_id is not None and org_id != caller.org_id:
        raise Forbidden(
            "you may only read or change your own org's analytics", param="org_id", code="other_org"
        )
    return caller.org_id


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


async def report(
    caller: Caller,
    pool: Pool,
    id: Annotated[str, Query(min_length=1, max_length=200, pattern=ID_PATTERN)],
    scope: Literal["org", "team"] = "org",
    days: Annotated[int, Query(ge=1, le=366)] = 7,
) -> Report:
    """Totals with breakdowns by model, provider, day and top users: an org's for its admins, a team's for
    the admins of its org and the team's managers. Only usage of the caller's org is ever counted."""
    await _check_report_access(caller, pool, scope, id)
    since = datetime.combine(window_start(datetime.now(UTC).date(), days), datetime.min.time(), UTC)
    parts = await repository.scope_report(pool, scope, id, caller.org_id, since)
    return Report(scope=scope, id=id, days=days, **parts)


async def _check_report_access(caller: Principal, pool: asyncpg.Pool, scope: str, scope_id: str) -> None:
    """403 unless the caller may read this org's or team's report."""
    if scope == "org":
        if not caller.is_admin:
            raise Forbidden("only admins may read an org report", param="scope", code="admin_required")
        if scope_id != caller.org_id:
            raise Forbidden("admins may only read their own org's report", param="id", code="other_org")
        return
    if not (caller.is_admin or caller.manages(scope_id)):
        raise Forbidden(
            "only the team's managers and admins may read a team report", param="id", code="not_team_manager"
        )
    if await repository.team_of_other_org(pool, scope_id, caller.org_id):
        raise Forbidden("this team belongs to another org", param="id", code="other_org")


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


_PERIOD_DAYS = {"daily": 1, "weekly": 7, "monthly": 30}


@router.get("/v1/analytics/leaderboard", response_model=Leaderboard)
async def leaderboard(
    caller: Caller,
    pool: Pool,
    period: Literal["daily", "weekly", "monthly"] = "weekly",
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
    org_id: OrgParam = None,
) -> Leaderboard:
    """Users of the caller's org ranked by average efficiency (completion/prompt per request); `org_id`, if
    given, must be the caller's own."""
    org = _own_org(caller, org_id)
    since = datetime.combine(
        window_start(datetime.now(UTC).date(), _PERIOD_DAYS[period]), datetime.min.time(), UTC
    )
    rows = await repository.efficiency_ranking(pool, org, since, limit)
    return Leaderboard(
        period=period,
        org_id=org,
        data=[
            LeaderboardEntry(
                rank=i + 1,
                user_id=r["user_id"],
                requests=r["requests"],
                total_tokens=r["total_tokens"],
                average_efficiency=round(r["efficiency_sum"] / r["requests"] / EFFICIENCY_SCALE, 4),
            )
            for i, r in enumerate(rows)
        ],
    )


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


async def anomalies(
    caller: Caller,
    pool: Pool,
    kind: Literal["loop", "request_rate", "spend_velocity", "baseline_ratio"] | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    org_id: OrgParam = None,
) -> AnomalyList:
    """Newest detections first, always within the caller's org: a user's own and, for a manager, those of the
    teams they manage; for admins every one of their org. `org_id`, if given, must be the caller's own."""
    user = None if caller.is_admin else caller.user_id
    org = _own_org(caller, org_id)
    teams = () if caller.is_admin else caller.managed_team_ids
    rows = await repository.list_anomalies(
        pool, user_id=user, org_id=org, kind=kind, limit=limit, team_ids=teams
    )
    return AnomalyList(data=[Anomaly.model_validate(r) for r in rows])


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


@router.get("/v1/analytics/baseline", response_model=Baseline)
async def baseline(
    caller: Caller,
    pool: Pool,
    window_minutes: Annotated[int, Query(ge=1, le=1440)] = 60,
    baseline_windows: Annotated[int, Query(ge=1, le=48)] = 4,
    threshold_multiplier: Annotated[float, Query(gt=1.0, le=1000)] = 2.0,
    org_id: OrgParam = None,
) -> Baseline:
    """The caller's org now versus its recent past; anomaly = baseline > 0 and ratio >= x. `org_id`, if given,
    must be the caller's own."""
    org = _own_org(caller, org_id)
    current, previous = await window_tokens(pool, org, datetime.now(UTC), window_minutes, baseline_windows)
    mean, ratio = baseline_ratio(current, previous)
    return Baseline(
        org_id=org,
        window_minutes=window_minutes,
        baseline_windows=baseline_windows,
        threshold_multiplier=threshold_multiplier,
        current_tokens=current,
        baseline_average_tokens=round(mean, 2),
        ratio=round(ratio, 4),
        anomaly=mean > 0 and ratio >= threshold_multiplier,
    )


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


_GRAIN_DEFAULT_HOURS = {"minute": 1, "hour": 24, "day": 24 * 30}


@router.get("/v1/analytics/timeseries", response_model=Timeseries)
async def timeseries(
    caller: Caller,
    pool: Pool,
    scope: Literal["user", "team", "org", "key", "session"] = "user",
    id: Annotated[str | None, Query(min_length=1, max_length=200, pattern=ID_PATTERN)] = None,
    grain: Literal["minute", "hour", "day"] = "hour",
    hours: Annotated[int | None, Query(ge=1, le=24 * 366)] = None,
    model: Annotated[str | None, Query(min_length=1, max_length=200, pattern=ID_PATTERN)] = None,
    provider: Annotated[str | None, Query(min_length=1, max_length=200, pattern=ID_PATTERN)] = None,
) -> Timeseries:
    """Usage of a user, team, org, key or session per bucket (oldest first), optionally for one model or
    provider. Users may read their own user and key, managers the teams they manage; admins any scope of their
    org. Only usage recorded under the caller's org is counted; naming another org is a 403 `other_org`."""
    own = {"user": caller.user_id, "key": caller.key_id}
    target = id or own.get(scope)
    if target is None:
        raise InvalidRequest(f"id is required for scope {scope!r}", param="id", code="missing_id")
    if scope == "org" and target != caller.org_id:
        raise Forbidden("you may only read your own org's usage", param="id", code="other_org")
    managed = scope == "team" and caller.manages(target)
    if not (caller.is_admin or managed) and own.get(scope) != target:
        raise Forbidden(
            "only admins (and a team's managers) may read another scope's usage",
            param="id",
            code="admin_required",
        )
    since = datetime.now(UTC) - timedelta(hours=hours or _GRAIN_DEFAULT_HOURS[grain])
    rows = await repository.timeseries(pool, scope, target, caller.org_id, grain, since, model, provider)
    return Timeseries(
        scope=scope, id=target, grain=grain, model=model, provider=provider, data=[Point(**r) for r in rows]
    )


class ThresholdView(BaseModel):
    org_id: str | None
    overrides: dict[str, Any]
    effective: Thresholds


async def _threshold_view(request: Request, pool: asyncpg.Pool, org_id: str | None) -> ThresholdView:
    settings: AnalyticsSettings = request.app.state.settings
    overrides = await repository.threshold_overrides(pool)
    effective = settings.anomaly_thresholds.apply(overrides.get(GLOBAL))
    if org_id is not None:
        effective = effective.apply(overrides.get(org_id))
    own = overrides.get(org_id or GLOBAL)
    return ThresholdView(
        org_id=org_id,
        overrides=own.model_dump(mode="json", exclude_unset=True) if own else {},
        effective=effective,
    )


@router.get("/v1/analytics/thresholds", response_model=ThresholdView)
async def get_thresholds(
    request: Request, admin: Admin, pool: Pool, org_id: OrgParam = None
) -> ThresholdView:
    """Detector thresholds in force globally (no `org_id`) or for the admin's own org, and the overrides set at
    that level. Another org's are a 403 `other_org`."""
    return await _threshold_view(request, pool, None if org_id is None else _own_org(admin, org_id))


@router.put("/v1/analytics/thresholds", response_model=ThresholdView)
async def put_thresholds(
    request: Request, body: ThresholdOverrides, admin: Admin, pool: Pool, org_id: OrgParam = None
) -> ThresholdView:
    """Replace the overrides of the admin's own org (`org_id`) or, for platform admins only, the global ones
    (no `org_id`); `{}` clears them. Applies within seconds."""
    if org_id is None and not admin.platform_admin:
        raise Forbidden(
            "only platform admins change the global thresholds; name your org with org_id",
            param="org_id",
            code="platform_admin_required",
        )
    org = None if org_id is None else _own_org(admin, org_id)
    await repository.set_threshold_overrides(pool, org or GLOBAL, body)
    return await _threshold_view(request, pool, org)


for path in ("/v1/analytics/report", "/api/v1/analytics/report"):
    router.add_api_route(
        path, report, methods=["GET"], response_model=Report, include_in_schema="/api/" not in path
    )
for path in ("/v1/analytics/anomalies", "/api/v1/analytics/anomalies"):
    router.add_api_route(
        path, anomalies, methods=["GET"], response_model=AnomalyList, include_in_schema="/api/" not in path
    )
