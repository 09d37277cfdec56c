"""Your teams (managers see members and team pools), team and org reports, and your own status."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.console import Group, RenderableType

from leaky_cli.commands.me import POOL_COLUMNS, amount
from leaky_cli.context import JsonOpt, api
from leaky_cli.output import Column, list_table, record_table, show, tokens, usd

__all__ = ["register", "render_report", "render_teams"]

MEMBER_COLUMNS: list[Column] = [
    ("member", "email"),
    ("name", "name"),
    ("role", "role"),
    ("status", "status"),
    ("used", lambda m: amount(m.get("personal_pool") or {}, "used")),
    ("remaining", lambda m: amount(m.get("personal_pool") or {}, "remaining")),
]
BREAKDOWN: list[Column] = [
    ("name", "name"),
    ("requests", lambda r: tokens(r.get("requests"))),
    ("tokens", lambda r: tokens(r.get("total_tokens"))),
    ("spend", lambda r: usd(r.get("cost_usd_micros"))),
]


class Scope(StrEnum):
    team = "team"
    org = "org"


class Status(StrEnum):
    active = "active"
    on_vacation = "on_vacation"


def render_teams(data: Mapping[str, Any]) -> RenderableType:
    parts: list[RenderableType] = []
    for team in data.get("data", []):
        parts.append(
            f"[bold]{team.get('name')}[/bold] ({team.get('id')}): you are {team.get('role')}, "
            f"{team.get('member_count')} member(s)"
        )
        if team.get("pools") is not None:
            parts.append(list_table(team["pools"], POOL_COLUMNS, title="Team pools"))
        if team.get("members") is not None:
            parts.append(list_table(team["members"], MEMBER_COLUMNS, title="Members"))
    return Group(*parts) if parts else "[dim]you are in no team[/dim]"


def render_report(data: Mapping[str, Any]) -> RenderableType:
    totals = data.get("totals", {})
    head = (
        f"{data.get('scope')} {data.get('id')}, {data.get('days')} day(s): {tokens(totals.get('requests'))} "
        f"requests · {tokens(totals.get('total_tokens'))} tokens · [bold]{usd(totals.get('cost_usd_micros'))}[/bold]"
    )
    tables = [
        list_table(data.get(key, []), BREAKDOWN, title=title)
        for key, title in (("by_model", "By model"), ("by_day", "By day"), ("top_users", "Top users"))
    ]
    return Group(head, *tables)


def teams(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Your teams; as a manager also the team pools and each member with their personal pool."""
    show(api(ctx).get("/v1/users/me/teams"), as_json, render_teams)


def report(
    ctx: typer.Context,
    scope: Annotated[Scope, typer.Option(help="team (its managers, admins) or org (admins).")] = Scope.team,
    id_: Annotated[
        str | None, typer.Option("--id", help="The team's or org's id (default: your team or org).")
    ] = None,
    days: Annotated[int, typer.Option(min=1, max=366)] = 7,
    as_json: JsonOpt = False,
) -> None:
    """Totals of a team or org by model, day and top users."""
    client = api(ctx)
    target = id_
    if target is None:
        me = client.get("/v1/users/me")
        target = me.get("org_id") if scope is Scope.org else me.get("team_id")
        if not target:
            raise typer.BadParameter("you are in no team: give --id", param_hint="--id")
    data = client.get("/v1/analytics/report", scope=scope.value, id=target, days=days)
    show(data, as_json, render_report)


def status(
    ctx: typer.Context,
    value: Annotated[Status, typer.Argument(help="active or on_vacation.")],
    until: Annotated[str | None, typer.Option(help="End of the vacation (ISO 8601).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Go on vacation (your unused quota can be shared) or come back."""
    body: dict[str, Any] = {"status": value.value}
    if until:
        body["until"] = until
    show(api(ctx).put("/v1/users/me/status", body), as_json, record_table)


def register(root: typer.Typer) -> None:
    for command in (teams, report, status):
        root.command()(command)
