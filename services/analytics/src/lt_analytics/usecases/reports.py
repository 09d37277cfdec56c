"""What the API reads: who may see which usage, and the summaries, reports, rankings, anomalies, baseline and
thresholds it answers with (always within the caller's own org)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from leaky_common.auth import Principal
from leaky_common.errors import Forbidden, InvalidRequest, NotFound
from lt_analytics.adapters import repository
from lt_analytics.adapters.thresholds import set_threshold_overrides, threshold_overrides
from lt_analytics.domain.detection import baseline_ratio
from lt_analytics.domain.rollups import mean_efficiency
from lt_analytics.domain.thresholds import GLOBAL, ThresholdOverrides, Thresholds, effective_thresholds
from lt_analytics.domain.usage import UsageSummary, fold_report, summarise
from lt_analytics.domain.windows import PERIOD_DAYS, day_window_since
from lt_analytics.usecases.detect import window_tokens

__all__ = ["BaselineReading", "Reports", "ThresholdLevel", "own_org"]

_GRAIN_DEFAULT_HOURS = {"minute": 1, "hour": 24, "day": 24 * 30}


def own_org(caller: Principal, org_id: str | None) -> str:
    """The org a request reads: the caller's own; naming another org is a 403 `other_org`, for admins too."""
    if org_id is not None and org_id != caller.org_id:
        raise Forbidden(
            "you may only read or change your own org's analytics", param="org_id", code="other_org"
        )
    return caller.org_id


@dataclass(frozen=True, slots=True)
class BaselineReading:
    """An org's tokens of the current window against the mean of the previous windows."""

    org_id: str
    current_tokens: int
    mean: float
    ratio: float


@dataclass(frozen=True, slots=True)
class ThresholdLevel:
    """The overrides set at one level (global or an org) and the thresholds in force there."""

    org_id: str | None
    overrides: dict[str, Any]
    effective: Thresholds


class Reports:
    """Read side of analytics over the aggregates the worker maintains."""

    def __init__(self, pool: asyncpg.Pool, default_thresholds: Thresholds) -> None:
        self._pool = pool
        self._defaults = default_thresholds

    async def usage(self, caller: Principal, user_id: str | None, days: int) -> UsageSummary:
        """A user's usage over the last `days` UTC days: the caller's own, or for admins any user of their org
        (a user whose usage was recorded under another org: 404, for platform admins too)."""
        target = user_id or caller.user_id
        if target != caller.user_id and not caller.is_admin:
            raise Forbidden(
                "only admins may read another user's usage", param="user_id", code="admin_required"
            )
        if target != caller.user_id and await repository.user_of_other_org(self._pool, target, caller.org_id):
            raise NotFound(f"no user {target} in your org", param="user_id", code="user_not_found")
        since = day_window_since(datetime.now(UTC), days)
        # One snapshot: the days and the efficiency count the same requests.
        async with repository.snapshot(self._pool) as conn:
            summary = summarise(target, days, await repository.daily_usage(conn, target, since.date()))
            efficiency = mean_efficiency(
                *await repository.efficiency_sums(conn, target, caller.org_id, since)
            )
        return summary.model_copy(update={"average_efficiency": efficiency})

    async def report(self, caller: Principal, scope: str, scope_id: str, days: int) -> dict[str, Any]:
        """An org's or team's totals and breakdowns, once the caller may read them."""
        await self._check_report_access(caller, scope, scope_id)
        since = day_window_since(datetime.now(UTC), days)
        return fold_report(*await repository.scope_rows(self._pool, scope, scope_id, caller.org_id, since))

    async def _check_report_access(self, caller: Principal, scope: str, scope_id: str) -> None:
        """403 unless the caller may read this org's or team's report."""
        if scope == "org":
            if not caller.is_admin:
                raise Forbidden("only admins may read an org report", param="scope", code="admin_required")
            if scope_id != caller.org_id:
                raise Forbidden("admins may only read their own org's report", param="id", code="other_org")
            return
        if not (caller.is_admin or caller.manages(scope_id)):
            raise Forbidden(
                "only the team's managers and admins may read a team report",
                param="id",
                code="not_team_manager",
            )
        if await repository.team_of_other_org(self._pool, scope_id, caller.org_id):
            raise Forbidden("this team belongs to another org", param="id", code="other_org")

    async def leaderboard(
        self, caller: Principal, org_id: str | None, period: str, limit: int
    ) -> tuple[str, list[dict[str, Any]]]:
        """(the org, its users by average efficiency over the period, each with `average_efficiency`): the
        caller's org; `org_id`, if given, must be it."""
        org = own_org(caller, org_id)
        since = day_window_since(datetime.now(UTC), PERIOD_DAYS[period])
        rows = await repository.efficiency_ranking(self._pool, org, since, limit)
        return org, [
            {**r, "average_efficiency": mean_efficiency(r["efficiency_sum"], r["requests"])} for r in rows
        ]

    async def anomalies(
        self, caller: Principal, org_id: str | None, kind: str | None, limit: int
    ) -> list[dict[str, Any]]:
        """A user's own detections and those of the teams they manage; an admin's whole org (`org_id`, if
        given, must be the caller's)."""
        org = own_org(caller, org_id)
        user = None if caller.is_admin else caller.user_id
        teams = () if caller.is_admin else caller.managed_team_ids
        return await repository.list_anomalies(
            self._pool, user_id=user, org_id=org, kind=kind, limit=limit, team_ids=teams
        )

    async def baseline(
        self, caller: Principal, org_id: str | None, window_minutes: int, windows: int
    ) -> BaselineReading:
        """The caller's org's current window against its recent past (`org_id`, if given, must be it)."""
        org = own_org(caller, org_id)
        current, previous = await window_tokens(self._pool, org, datetime.now(UTC), window_minutes, windows)
        mean, ratio = baseline_ratio(current, previous)
        return BaselineReading(org, current, mean, ratio)

    async def timeseries(
        self,
        caller: Principal,
        scope: str,
        scope_id: str | None,
        *,
        grain: str,
        hours: int | None,
        model: str | None,
        provider: str | None,
    ) -> tuple[str, list[dict[str, Any]]]:
        """(target id, per-bucket totals) of a scope the caller may read, optionally for one model/provider."""
        own = {"user": caller.user_id, "key": caller.key_id}
        target = scope_id or own.get(scope)
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
        rows = await repository.timeseries(
            self._pool, scope, target, caller.org_id, grain, since, model, provider
        )
        return target, rows

    async def thresholds(self, admin: Principal, org_id: str | None) -> ThresholdLevel:
        """Thresholds in force globally (None) or for the admin's own org, and the overrides set there."""
        return await self._thresholds(None if org_id is None else own_org(admin, org_id))

    async def _thresholds(self, org_id: str | None) -> ThresholdLevel:
        overrides = await threshold_overrides(self._pool)
        own = overrides.get(org_id or GLOBAL)
        return ThresholdLevel(
            org_id=org_id,
            overrides=own.model_dump(mode="json", exclude_unset=True) if own else {},
            effective=effective_thresholds(self._defaults, overrides, org_id),
        )

    async def set_thresholds(
        self, admin: Principal, org_id: str | None, body: ThresholdOverrides
    ) -> ThresholdLevel:
        """Replace an org's overrides (the admin's own) or, for platform admins, the global ones."""
        if org_id is None and not admin.platform_admin:
            raise Forbidden(
                "only platform admins change the global thresholds; name your org with org_id",
                param="org_id",
                code="platform_admin_required",
            )
        org = None if org_id is None else own_org(admin, org_id)
        await set_threshold_overrides(self._pool, org or GLOBAL, body)
        return await self._thresholds(org)
