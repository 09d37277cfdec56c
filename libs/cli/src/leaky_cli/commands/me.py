"""The caller's own numbers: quota, usage, anomalies and the efficiency leaderboard."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.console import Group, RenderableType

from leaky_cli.context import JsonOpt, api
from leaky_cli.output import Column, list_table, show, text, tokens, usd

__all__ = ["POOL_COLUMNS", "amount", "register", "render_quota", "render_usage"]


class By(StrEnum):
    model = "model"
    day = "day"


class Period(StrEnum):
    daily = "daily"
    weekly = "weekly"
    monthly = "monthly"


class Kind(StrEnum):
    loop = "loop"
    request_rate = "request_rate"
    spend_velocity = "spend_velocity"
    baseline_ratio = "baseline_ratio"


def amount(pool: Mapping[str, Any], key: str) -> str:
    """A pool's figure in its unit: dollars for usd pools (micro-dollars in the API), else tokens."""
    value = pool.get(key)
    return usd(value) if pool.get("unit") == "usd" else tokens(value)


def _owner(pool: Mapping[str, Any]) -> str:
    scope = " ".join(x for x in (pool.get("provider"), pool.get("model")) if x)
    return str(pool.get("owner_type")) + (f" ({scope})" if scope else "")


POOL_COLUMNS: list[Column] = [
    ("pool", "id"),
    ("owner", _owner),
    ("unit", "unit"),
    ("period", "period"),
    ("limit", lambda p: amount(p, "limit")),
    ("used", lambda p: amount(p, "used")),
    ("reserved", lambda p: amount(p, "reserved")),
    ("remaining", lambda p: amount(p, "remaining")),
    ("resets", "resets_at"),
]


def render_quota(data: Mapping[str, Any]) -> RenderableType:
    summary = (
        f"status [bold]{data.get('status')}[/bold] · personal {tokens(data.get('personal_quota'))} · "
        f"used {tokens(data.get('used_tokens'))} · reserved {tokens(data.get('reserved_tokens'))} · "
        f"available [bold]{tokens(data.get('available_quota'))}[/bold] · "
        f"team pool {tokens(data.get('team_pool_available'))}"
    )
    return Group(list_table(data.get("pools", []), POOL_COLUMNS, title="Pools"), summary)


def render_usage(data: Mapping[str, Any], by: By = By.model) -> RenderableType:
    total = (
        f"{data.get('days')} day(s): {tokens(data.get('total_requests'))} requests · "
        f"{tokens(data.get('total_tokens'))} tokens ({tokens(data.get('prompt_tokens'))} prompt, "
        f"{tokens(data.get('completion_tokens'))} completion) · spend [bold]{usd(data.get('cost_usd_micros'))}[/bold]"
    )
    first: tuple[str, str] = ("model", "model") if by is By.model else ("day", "date")
    columns: list[Column] = [
        first,
        ("requests", lambda r: tokens(r.get("requests"))),
        ("tokens", lambda r: tokens(r.get("total_tokens"))),
        ("spend", lambda r: usd(r.get("cost_usd_micros"))),
    ]
    rows = data.get("by_model" if by is By.model else "by_day", [])
    return Group(total, list_table(rows, columns, title=f"By {by.value}"))


ANOMALY_COLUMNS: list[Column] = [
    ("detected", "detected_at"),
    ("kind", "kind"),
    ("severity", "severity"),
    ("target", lambda a: f"{a.get('target_type')} {a.get('target_id')}"),
    ("value / threshold", lambda a: f"{text(a.get('value'))} / {text(a.get('threshold'))}"),
    ("frozen", "frozen"),
    ("detail", "detail"),
]


def quota(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Every pool that applies to you, with limit, used, reserved, remaining and reset time."""
    show(api(ctx).get("/v1/users/me/quota"), as_json, render_quota)


def usage(
    ctx: typer.Context,
    days: Annotated[int, typer.Option(min=1, max=366, help="UTC days to cover.")] = 7,
    by: Annotated[By, typer.Option(help="Breakdown to show.")] = By.model,
    user: Annotated[str | None, typer.Option(help="Another user's usage (admins).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Your token use and spend over the last days, by model or by day."""
    data = api(ctx).get("/v1/analytics/usage", days=days, user_id=user)
    show(data, as_json, lambda d: render_usage(d, by))


def anomalies(
    ctx: typer.Context,
    kind: Annotated[Kind | None, typer.Option(help="Only this detector.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Detections you may see, newest first (yours; your teams' as a manager; the org's as an admin)."""
    data = api(ctx).get("/v1/analytics/anomalies", kind=kind.value if kind else None, limit=limit)
    show(data, as_json, lambda d: list_table(d.get("data", []), ANOMALY_COLUMNS, title="Anomalies"))


def leaderboard(
    ctx: typer.Context,
    period: Annotated[Period, typer.Option()] = Period.weekly,
    limit: Annotated[int, typer.Option(min=1, max=100)] = 10,
    as_json: JsonOpt = False,
) -> None:
    """Users of your org ranked by efficiency (completion/prompt tokens per request)."""
    data = api(ctx).get("/v1/analytics/leaderboard", period=period.value, limit=limit)
    columns: list[Column] = [
        ("rank", "rank"),
        ("user", "user_id"),
        ("requests", lambda r: tokens(r.get("requests"))),
        ("tokens", lambda r: tokens(r.get("total_tokens"))),
        ("efficiency", lambda r: f"{float(r.get('average_efficiency') or 0):.3f}"),
    ]
    show(
        data, as_json, lambda d: list_table(d.get("data", []), columns, title=f"Leaderboard ({period.value})")
    )


def register(app: typer.Typer) -> None:
    for command in (quota, usage, anomalies, leaderboard):
        app.command()(command)
