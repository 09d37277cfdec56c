"""`lt admin users|teams|orgs ...`: the people side of administration (admin keys; org creation needs a
platform admin). Pools, thresholds and notifications are in `admin_ops`."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Group, RenderableType

from leaky_cli.client import seg
from leaky_cli.commands import admin_ops
from leaky_cli.commands.keys import KEY_COLUMNS
from leaky_cli.commands.me import render_quota
from leaky_cli.context import JsonOpt, api
from leaky_cli.output import Column, list_table, record_table, show

__all__ = ["app"]

app = typer.Typer(
    help="Administration (admin keys): users, teams, orgs, pools, thresholds, channels, deliveries.",
    no_args_is_help=True,
)
users = typer.Typer(help="Users of your org: list, create, update, quota, keys.", no_args_is_help=True)
teams = typer.Typer(help="Teams: list, create, add-member, buckets.", no_args_is_help=True)
orgs = typer.Typer(
    help="Organisations: list, create (platform admins); show, update (your org).", no_args_is_help=True
)
app.add_typer(users, name="users")
app.add_typer(teams, name="teams")
app.add_typer(orgs, name="orgs")
admin_ops.register(app)

USER_COLUMNS: list[Column] = [
    ("id", "id"),
    ("email", "email"),
    ("name", "name"),
    ("role", "role"),
    ("status", "status"),
    ("team", "team_id"),
    ("tier", "tier"),
    ("priority", "default_priority"),
]
TEAM_COLUMNS: list[Column] = [
    ("id", "id"),
    ("name", "name"),
    ("members", "member_count"),
    ("created", "created_at"),
]
ORG_COLUMNS: list[Column] = [
    ("id", "id"),
    ("name", "name"),
    ("timezone", "timezone"),
    ("platform", "platform"),
    ("users", "user_count"),
    ("created", "created_at"),
]
UserArg = Annotated[str, typer.Argument(help="The user's id.")]


def _given(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


def _with_key(data: dict[str, Any]) -> RenderableType:
    """A new user (or a new org's admin): the key is shown this once."""
    holder = data.get("admin", data)
    return Group(
        record_table({k: v for k, v in data.items() if k not in ("api_key", "admin")}),
        f"\n[bold]API key of {holder.get('email')}:[/bold] {holder.get('api_key')}",
        "[yellow]Store it now: it is shown only this once.[/yellow]",
    )


@users.command("list")
def users_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Users of your org."""
    show(api(ctx).get("/v1/admin/users"), as_json, lambda d: list_table(d.get("data", []), USER_COLUMNS))


@users.command("create")
def users_create(
    ctx: typer.Context,
    email: Annotated[str, typer.Option(help="Their email (unique).")],
    name: Annotated[str, typer.Option(help="Their name.")],
    quota: Annotated[int | None, typer.Option(min=0, help="Personal pool size.")] = None,
    unit: Annotated[str | None, typer.Option(help="tokens or usd.")] = None,
    period: Annotated[str | None, typer.Option(help="Pool period (none, daily, monthly...).")] = None,
    team: Annotated[str | None, typer.Option(help="Team to join.")] = None,
    role: Annotated[str | None, typer.Option(help="user or admin.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a user with a personal pool; their API key is printed once."""
    body = _given(
        email=email, name=name, personal_quota=quota, unit=unit, period=period, team_id=team, role=role
    )
    show(api(ctx).post("/v1/admin/users", body), as_json, _with_key)


@users.command("update")
def users_update(
    ctx: typer.Context,
    user_id: UserArg,
    status: Annotated[str | None, typer.Option(help="active, on_vacation or suspended.")] = None,
    role: Annotated[str | None, typer.Option(help="user or admin.")] = None,
    default_priority: Annotated[str | None, typer.Option()] = None,
    allow_priority_bypass: Annotated[
        bool | None, typer.Option("--allow-priority-bypass/--no-priority-bypass")
    ] = None,
    privacy_default: Annotated[str | None, typer.Option(help="standard or strict.")] = None,
    tier: Annotated[str | None, typer.Option()] = None,
    as_json: JsonOpt = False,
) -> None:
    """Change a user's status, role, priority, privacy or tier."""
    body = _given(
        status=status,
        role=role,
        default_priority=default_priority,
        tier=tier,
        allow_priority_bypass=allow_priority_bypass,
        privacy_default=privacy_default,
    )
    if not body:
        raise typer.BadParameter("nothing to change: give at least one option")
    show(api(ctx).patch(f"/v1/admin/users/{seg(user_id)}", body), as_json, record_table)


@users.command("quota")
def users_quota(ctx: typer.Context, user_id: UserArg, as_json: JsonOpt = False) -> None:
    """A user's pools, as `lt quota` shows yours."""
    show(api(ctx).get(f"/v1/admin/users/{seg(user_id)}/quota"), as_json, render_quota)


@users.command("keys")
def users_keys(ctx: typer.Context, user_id: UserArg, as_json: JsonOpt = False) -> None:
    """A user's keys."""
    data = api(ctx).get(f"/v1/admin/users/{seg(user_id)}/keys")
    show(data, as_json, lambda d: list_table(d.get("data", []), KEY_COLUMNS))


@teams.command("list")
def teams_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Teams of your org."""
    show(api(ctx).get("/v1/admin/teams"), as_json, lambda d: list_table(d.get("data", []), TEAM_COLUMNS))


@teams.command("create")
def teams_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The team's name.")],
    pool: Annotated[int | None, typer.Option(min=0, help="Size of a team pool to create with it.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a team (optionally with a team pool)."""
    show(api(ctx).post("/v1/admin/teams", _given(name=name, pool=pool)), as_json, record_table)


@teams.command("add-member")
def teams_add_member(
    ctx: typer.Context,
    team_id: Annotated[str, typer.Argument(help="The team's id.")],
    user_id: UserArg,
    manager: Annotated[bool, typer.Option("--manager", help="As a manager of the team.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Add a user to a team (as a member or a manager)."""
    body = {"role": "manager" if manager else "member"}
    show(api(ctx).post(f"/v1/admin/teams/{seg(team_id)}/members/{seg(user_id)}", body), as_json, record_table)


@teams.command("buckets")
def teams_buckets(
    ctx: typer.Context,
    team_id: Annotated[str, typer.Argument(help="The team's id.")],
    key_requests: Annotated[int | None, typer.Option(min=1)] = None,
    key_tokens: Annotated[int | None, typer.Option(min=1)] = None,
    user_requests: Annotated[int | None, typer.Option(min=1)] = None,
    user_tokens: Annotated[int | None, typer.Option(min=1)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Set a team's bucket sizes (per key and per user, requests and tokens per period)."""
    body = _given(
        key_requests_per_period=key_requests,
        key_tokens_per_period=key_tokens,
        user_requests_per_period=user_requests,
        user_tokens_per_period=user_tokens,
    )
    if not body:
        raise typer.BadParameter("nothing to change: give at least one option")
    show(api(ctx).patch(f"/v1/admin/teams/{seg(team_id)}/buckets", body), as_json, record_table)


@orgs.command("list")
def orgs_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Every organisation (platform admins)."""
    show(api(ctx).get("/v1/admin/orgs"), as_json, lambda d: list_table(d.get("data", []), ORG_COLUMNS))


@orgs.command("create")
def orgs_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The org's name (unique).")],
    admin_email: Annotated[str, typer.Option(help="Email of its first admin.")],
    admin_name: Annotated[str | None, typer.Option()] = None,
    timezone: Annotated[str | None, typer.Option(help="IANA time zone (default UTC).")] = None,
    quota: Annotated[int | None, typer.Option(min=0, help="The first admin's personal pool.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an organisation and its first admin (platform admins); the admin's key is printed once."""
    body = _given(
        name=name, admin_email=admin_email, admin_name=admin_name, timezone=timezone, personal_quota=quota
    )
    show(api(ctx).post("/v1/admin/orgs", body), as_json, _with_key)


@orgs.command("show")
def orgs_show(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Your org's settings and bucket sizes."""
    show(api(ctx).get("/v1/admin/org"), as_json, record_table)


@orgs.command("update")
def orgs_update(
    ctx: typer.Context,
    timezone: Annotated[str | None, typer.Option()] = None,
    vacation_share_percent: Annotated[int | None, typer.Option(min=0, max=100)] = None,
    default_session_budget_usd_micros: Annotated[int | None, typer.Option(min=0)] = None,
    strict_sessions: Annotated[bool | None, typer.Option("--strict-sessions/--no-strict-sessions")] = None,
    privacy_strict: Annotated[bool | None, typer.Option("--privacy-strict/--no-privacy-strict")] = None,
    key_requests: Annotated[int | None, typer.Option(min=1)] = None,
    key_tokens: Annotated[int | None, typer.Option(min=1)] = None,
    user_requests: Annotated[int | None, typer.Option(min=1)] = None,
    user_tokens: Annotated[int | None, typer.Option(min=1)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Change your org's settings and bucket sizes."""
    body = _given(
        timezone=timezone,
        vacation_share_percent=vacation_share_percent,
        default_session_budget_usd_micros=default_session_budget_usd_micros,
        strict_sessions=strict_sessions,
        privacy_strict=privacy_strict,
        key_requests_per_period=key_requests,
        key_tokens_per_period=key_tokens,
        user_requests_per_period=user_requests,
        user_tokens_per_period=user_tokens,
    )
    if not body:
        raise typer.BadParameter("nothing to change: give at least one option")
    show(api(ctx).patch("/v1/admin/org", body), as_json, record_table)
