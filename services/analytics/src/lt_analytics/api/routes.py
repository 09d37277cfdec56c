"""Analytics routes: personal usage, org/team reports, time series, leaderboard, anomalies, baseline and
thresholds. Each checks who may read what through the `Reports` use case."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from leaky_common.api import AdminPrincipal, CurrentPrincipal, error_responses
from lt_analytics.api.deps import IdParam, OptionalId, ReportsDep
from lt_analytics.api.schemas import (
    Anomaly,
    AnomalyList,
    Baseline,
    Leaderboard,
    LeaderboardEntry,
    Point,
    Report,
    ThresholdOverrides,
    ThresholdView,
    Timeseries,
    UsageSummary,
)
from lt_analytics.usecases.reports import ThresholdLevel

__all__ = ["router"]

router = APIRouter(tags=["analytics"], responses=error_responses(403))

AnomalyKind = Literal["loop", "request_rate", "spend_velocity", "baseline_ratio"]
Days = Annotated[int, Query(ge=1, le=366)]


async def usage(
    caller: CurrentPrincipal, reports: ReportsDep, days: Days = 7, user_id: OptionalId = None
) -> UsageSummary:
    """Token use, cost and average efficiency of the caller (or, for admins, of `user_id` of their org; a user
    of another org is a 404) over the last `days` UTC days, with breakdowns by model and day."""
    return await reports.usage(caller, user_id, days)


async def report(
    caller: CurrentPrincipal,
    reports: ReportsDep,
    id: IdParam,
    scope: Literal["org", "team"] = "org",
    days: Days = 7,
) -> Report:
    """Totals with breakdowns by model, provider, day and top users: an org's for its admins, a team's for
    the admins of its org and the team's managers. Only usage of the caller's org is ever counted."""
    parts = await reports.report(caller, scope, id, days)
    return Report(scope=scope, id=id, days=days, **parts)


@router.get("/v1/analytics/leaderboard", response_model=Leaderboard)
async def leaderboard(
    caller: CurrentPrincipal,
    reports: ReportsDep,
    period: Literal["daily", "weekly", "monthly"] = "weekly",
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
    org_id: OptionalId = None,
) -> Leaderboard:
    """Users of the caller's org ranked by average efficiency (completion/prompt per request); `org_id`, if
    given, must be the caller's own."""
    org, rows = await reports.leaderboard(caller, org_id, period, limit)
    return Leaderboard(
        period=period,
        org_id=org,
        data=[
            LeaderboardEntry(
                rank=i + 1,
                user_id=r["user_id"],
                requests=r["requests"],
                total_tokens=r["total_tokens"],
                average_efficiency=r["average_efficiency"],
            )
            for i, r in enumerate(rows)
        ],
    )


async def anomalies(
    caller: CurrentPrincipal,
    reports: ReportsDep,
    kind: AnomalyKind | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    org_id: OptionalId = None,
) -> AnomalyList:
    """Newest detections first, always within the caller's org: a user's own and, for a manager, those of the
    teams they manage; for admins every one of their org. `org_id`, if given, must be the caller's own."""
    rows = await reports.anomalies(caller, org_id, kind, limit)
    return AnomalyList(data=[Anomaly.model_validate(r) for r in rows])


@router.get("/v1/analytics/baseline", response_model=Baseline)
async def baseline(
    caller: CurrentPrincipal,
    reports: ReportsDep,
    window_minutes: Annotated[int, Query(ge=1, le=1440)] = 60,
    baseline_windows: Annotated[int, Query(ge=1, le=48)] = 4,
    threshold_multiplier: Annotated[float, Query(gt=1.0, le=1000)] = 2.0,
    org_id: OptionalId = None,
) -> Baseline:
    """The caller's org now versus its recent past; anomaly = baseline > 0 and ratio >= x. `org_id`, if given,
    must be the caller's own."""
    reading = await reports.baseline(caller, org_id, window_minutes, baseline_windows)
    return Baseline(
        org_id=reading.org_id,
        window_minutes=window_minutes,
        baseline_windows=baseline_windows,
        threshold_multiplier=threshold_multiplier,
        current_tokens=reading.current_tokens,
        baseline_average_tokens=round(reading.mean, 2),
        ratio=round(reading.ratio, 4),
        anomaly=reading.mean > 0 and reading.ratio >= threshold_multiplier,
    )


@router.get("/v1/analytics/timeseries", response_model=Timeseries, responses=error_responses(400))
async def timeseries(
    caller: CurrentPrincipal,
    reports: ReportsDep,
    scope: Literal["user", "team", "org", "key", "session"] = "user",
    id: OptionalId = None,
    grain: Literal["minute", "hour", "day"] = "hour",
    hours: Annotated[int | None, Query(ge=1, le=24 * 366)] = None,
    model: OptionalId = None,
    provider: OptionalId = None,
) -> Timeseries:
    """Usage of a user, team, org, key or session per bucket (oldest first), optionally for one model or
    provider. Users may read their own user and key, managers the teams they manage; admins any scope of their
    org. Only usage recorded under the caller's org is counted; naming another org is a 403 `other_org`."""
    target, rows = await reports.timeseries(
        caller, scope, id, grain=grain, hours=hours, model=model, provider=provider
    )
    return Timeseries(
        scope=scope, id=target, grain=grain, model=model, provider=provider, data=[Point(**r) for r in rows]
    )


def _view(level: ThresholdLevel) -> ThresholdView:
    return ThresholdView(org_id=level.org_id, overrides=level.overrides, effective=level.effective)


@router.get("/v1/analytics/thresholds", response_model=ThresholdView)
async def get_thresholds(
    admin: AdminPrincipal, reports: ReportsDep, org_id: OptionalId = None
) -> ThresholdView:
    """Detector thresholds in force globally (no `org_id`) or for the admin's own org, and the overrides set at
    that level. Another org's are a 403 `other_org`."""
    return _view(await reports.thresholds(admin, org_id))


@router.put("/v1/analytics/thresholds", response_model=ThresholdView)
async def put_thresholds(
    body: ThresholdOverrides, admin: AdminPrincipal, reports: ReportsDep, org_id: OptionalId = None
) -> ThresholdView:
    """Replace the overrides of the admin's own org (`org_id`) or, for platform admins only, the global ones
    (no `org_id`); `{}` clears them. Applies within seconds."""
    return _view(await reports.set_thresholds(admin, org_id, body))


for path in ("/v1/analytics/usage", "/api/v1/analytics/usage"):
    router.add_api_route(
        path,
        usage,
        methods=["GET"],
        response_model=UsageSummary,
        include_in_schema="/api/" not in path,
        responses=error_responses(404),
    )
for path in ("/v1/analytics/report", "/api/v1/analytics/report"):
    router.add_api_route(
        path, report, methods=["GET"], response_model=Report, include_in_schema="/api/" not in path
    )
for path in ("/v1/analytics/anomalies", "/api/v1/analytics/anomalies"):
    router.add_api_route(
        path, anomalies, methods=["GET"], response_model=AnomalyList, include_in_schema="/api/" not in path
    )
