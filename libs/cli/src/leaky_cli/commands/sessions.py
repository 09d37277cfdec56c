"""`lt sessions` (budgets of `X-Session-ID` sessions) and `lt freeze` / `lt unfreeze` / `lt freezes`
(admins)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer

from leaky_cli.client import seg
from leaky_cli.context import JsonOpt, api
from leaky_cli.output import Column, list_table, record_table, show, usd

__all__ = ["FREEZE_COLUMNS", "SESSION_COLUMNS", "app", "register"]

app = typer.Typer(
    help="Sessions and their budgets (admins): list, show, budget, reset.", no_args_is_help=True
)

SESSION_COLUMNS: list[Column] = [
    ("session", "session_id"),
    ("budget", lambda s: usd(s.get("budget_usd_micros"))),
    ("spent", lambda s: usd(s.get("spent_usd_micros"))),
    ("reserved", lambda s: usd(s.get("reserved_usd_micros"))),
    ("remaining", lambda s: usd(s.get("remaining_usd_micros"))),
    ("pool", "pool_id"),
]
FREEZE_COLUMNS: list[Column] = [
    ("target", lambda f: f"{f.get('target_type')} {f.get('target_id')}"),
    ("reason", "reason"),
    ("source", "source"),
    ("user", "user_id"),
    ("since", "created_at"),
    ("until", lambda f: f.get("expires_at") or "lifted by hand"),
]


class Target(StrEnum):
    session = "session"
    key = "key"
    user = "user"


SessionArg = Annotated[str, typer.Argument(help="The session id (X-Session-ID).")]


@app.command("list")
def list_sessions(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Sessions of your org with budget, spent, reserved and remaining."""
    show(
        api(ctx).get("/v1/admin/sessions"), as_json, lambda d: list_table(d.get("data", []), SESSION_COLUMNS)
    )


@app.command("show")
def show_session(ctx: typer.Context, session_id: SessionArg, as_json: JsonOpt = False) -> None:
    """One session's budget and spend."""
    show(
        api(ctx).get(f"/v1/admin/sessions/{seg(session_id)}"),
        as_json,
        lambda d: record_table(d, SESSION_COLUMNS),
    )


@app.command()
def budget(
    ctx: typer.Context,
    session_id: SessionArg,
    usd_micros: Annotated[int, typer.Argument(min=0, help="New budget in micro-dollars (1000000 = $1).")],
    as_json: JsonOpt = False,
) -> None:
    """Set a session's budget."""
    data = api(ctx).put(f"/v1/admin/sessions/{seg(session_id)}/budget", {"budget_usd_micros": usd_micros})
    show(data, as_json, lambda d: record_table(d, SESSION_COLUMNS))


@app.command()
def reset(ctx: typer.Context, session_id: SessionArg, as_json: JsonOpt = False) -> None:
    """Reset a session's spend (a negative ledger row) and its budget to the default."""
    data = api(ctx).post(f"/v1/admin/sessions/{seg(session_id)}/reset")
    show(data, as_json, lambda d: record_table(d, SESSION_COLUMNS))


def freeze(
    ctx: typer.Context,
    target_type: Annotated[Target, typer.Argument(help="session, key or user")],
    target_id: Annotated[str, typer.Argument(help="Its id.")],
    reason: Annotated[str, typer.Option(help="Why (shown to the caller).")],
    duration: Annotated[int | None, typer.Option(min=1, help="Seconds; none = until unfrozen.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Freeze a session, key or user (admins): their requests get 403 until it ends or is lifted."""
    body: dict[str, Any] = {"target_type": target_type.value, "target_id": target_id, "reason": reason}
    if duration is not None:
        body["duration_s"] = duration
    show(api(ctx).post("/v1/admin/freezes", body), as_json, lambda d: record_table(d, FREEZE_COLUMNS))


def unfreeze(
    ctx: typer.Context,
    target_type: Annotated[Target, typer.Argument(help="session, key or user")],
    target_id: Annotated[str, typer.Argument(help="Its id.")],
    as_json: JsonOpt = False,
) -> None:
    """Lift every freeze of a session, key or user (admins)."""
    data = api(ctx).delete(f"/v1/admin/freezes/{target_type.value}/{seg(target_id)}")
    show(
        data,
        as_json,
        lambda d: f"{d.get('target_type')} {d.get('target_id')}: {d.get('lifted')} freeze(s) lifted.",
    )


def freezes(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Freezes in force in your org (admins)."""
    show(api(ctx).get("/v1/admin/freezes"), as_json, lambda d: list_table(d.get("data", []), FREEZE_COLUMNS))


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="sessions")
    for command in (freeze, unfreeze, freezes):
        root.command()(command)
