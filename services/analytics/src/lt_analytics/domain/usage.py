"""Usage summaries and reports: how aggregate rows fold into totals and breakdowns (no I/O)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from pydantic import BaseModel

__all__ = [
    "DailyUsage",
    "DayTotals",
    "ModelTotals",
    "UsageSummary",
    "fold_report",
    "summarise",
]


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


_MEASURES = ("requests", "prompt_tokens", "completion_tokens", "total_tokens", "cost_usd_micros")


def fold_report(rows: Sequence[Mapping[str, Any]], users: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Daily rollup rows (model, provider, bucket, measures) and top-user rows into a report's totals and
    breakdowns: by model and provider most tokens first, by day oldest first."""

    def fold(key: str) -> list[dict[str, Any]]:
        acc: dict[str, list[int]] = {}
        for r in rows:
            name = r[key].date().isoformat() if key == "bucket" else r[key]
            sums = acc.setdefault(name, [0] * len(_MEASURES))
            for i, f in enumerate(_MEASURES):
                sums[i] += int(r[f])
        ordered = (
            sorted(acc.items()) if key == "bucket" else sorted(acc.items(), key=lambda kv: (-kv[1][3], kv[0]))
        )
        return [{"name": n, **dict(zip(_MEASURES, v, strict=True))} for n, v in ordered]

    return {
        "totals": {f: sum(int(r[f]) for r in rows) for f in _MEASURES},
        "by_model": fold("model"),
        "by_provider": fold("provider"),
        "by_day": fold("bucket"),
        "top_users": [{k: (v if k == "name" else int(v)) for k, v in dict(u).items()} for u in users],
    }
