"""`lt approvals`: ask your team's managers for more quota, and decide others' requests."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer

from leaky_cli.client import seg
from leaky_cli.context import JsonOpt, api
from leaky_cli.output import Column, list_table, record_table, show, tokens

__all__ = ["APPROVAL_COLUMNS", "app", "register"]

app = typer.Typer(help="Quota requests: request, list, approve, reject.", no_args_is_help=True)

APPROVAL_COLUMNS: list[Column] = [
    ("id", "id"),
    ("status", "status"),
    ("requester", "requester_user_id"),
    ("team", "team_id"),
    ("requested", lambda a: tokens(a.get("requested_credits"))),
    ("approved", lambda a: tokens(a.get("approved_credits"))),
    ("unit", "unit"),
    ("priority", "priority"),
    ("reason", "reason"),
    ("decided by", "decided_by"),
    ("created", "created_at"),
]


class Priority(StrEnum):
    low = "low"
    normal = "normal"
    high = "high"
    critical = "critical"


IdArg = Annotated[str, typer.Argument(help="The approval's id.")]


def _one(data: Any) -> Any:
    return record_table(data, APPROVAL_COLUMNS)


@app.command()
def request(
    ctx: typer.Context,
    credits: Annotated[int, typer.Argument(min=1, help="Credits (tokens) you ask for.")],
    reason: Annotated[str, typer.Option(help="Why.")] = "",
    priority: Annotated[Priority, typer.Option()] = Priority.high,
    as_json: JsonOpt = False,
) -> None:
    """Ask the managers of your team for more quota."""
    body = {"requested_credits": credits, "reason": reason, "priority": priority.value}
    show(api(ctx).post("/v1/approvals", body), as_json, _one)


@app.command("list")
def list_approvals(
    ctx: typer.Context,
    pending: Annotated[
        bool,
        typer.Option("--pending", help="Requests waiting for you (managers: your teams; admins: the org)."),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Your requests, or with --pending those you may decide."""
    data = api(ctx).get("/v1/approvals/pending" if pending else "/v1/approvals")
    show(data, as_json, lambda d: list_table(d.get("data", []), APPROVAL_COLUMNS))


@app.command()
def approve(
    ctx: typer.Context,
    approval_id: IdArg,
    credits: Annotated[
        int | None, typer.Option(min=1, help="Grant this many instead of the request.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Approve a request (a manager of the requester's team or an admin); raises their personal pool."""
    body = {"approved_credits": credits} if credits is not None else None
    show(api(ctx).post(f"/v1/approvals/{seg(approval_id)}/approve", body), as_json, _one)


@app.command()
def reject(
    ctx: typer.Context,
    approval_id: IdArg,
    reason: Annotated[str, typer.Option(help="Why (shown to the requester).")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Reject a request."""
    show(api(ctx).post(f"/v1/approvals/{seg(approval_id)}/reject", {"reason": reason}), as_json, _one)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="approvals")
