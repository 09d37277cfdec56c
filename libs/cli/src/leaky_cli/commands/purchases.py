"""`lt buy` (start a purchase, optionally wait for its end) and `lt purchases` (list or show)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Annotated, Any

import typer
from rich.console import Group, RenderableType

from leaky_cli.client import ApiClient, ApiError, seg
from leaky_cli.context import JsonOpt, api
from leaky_cli.output import Column, err_console, list_table, record_table, show, text, tokens, usd

__all__ = ["TERMINAL", "register", "render_purchase", "wait_for"]

TERMINAL = frozenset({"COMPLETED", "FAILED", "COMPENSATED"})

PURCHASE_COLUMNS: list[Column] = [
    ("id", "id"),
    ("status", "status"),
    ("amount", lambda p: usd(p.get("amount")) if p.get("unit") == "usd" else tokens(p.get("amount"))),
    ("unit", "unit"),
    ("price", lambda p: usd(p.get("price_usd_micros"))),
    ("pool", "pool_id"),
    ("reason", "reason"),
    ("created", "created_at"),
]


def render_purchase(data: Mapping[str, Any]) -> RenderableType:
    steps = [("step", "step"), ("status", "status"), ("at", "at"), ("detail", "detail")]
    parts: list[RenderableType] = [record_table(data, PURCHASE_COLUMNS)]
    if data.get("steps"):
        parts.append(list_table(data["steps"], steps, title="Steps"))
    return Group(*parts)


def wait_for(client: ApiClient, purchase_id: str, timeout: float, interval: float = 0.5) -> Any:
    """Poll the purchase until it reaches COMPLETED, FAILED or COMPENSATED, showing its status on stderr."""
    deadline = time.monotonic() + timeout
    path = f"/v1/purchases/{seg(purchase_id)}"
    with err_console.status(f"purchase {purchase_id}: starting") as status:
        while True:
            detail = client.get(path)
            status.update(f"purchase {purchase_id}: {detail.get('status')}")
            if detail.get("status") in TERMINAL:
                return detail
            if time.monotonic() >= deadline:
                raise ApiError(0, f"purchase {purchase_id} still {detail.get('status')} after {timeout:g}s")
            time.sleep(interval)


def buy(
    ctx: typer.Context,
    amount: Annotated[int, typer.Argument(min=1, help="Tokens to buy (micro-dollars with --usd).")],
    usd_: Annotated[bool, typer.Option("--usd", help="AMOUNT is micro-dollars for a usd pool.")] = False,
    pool: Annotated[str | None, typer.Option(help="Pool to raise (default: your personal pool).")] = None,
    payment_method: Annotated[
        str | None, typer.Option(help="Test payment method, e.g. pm_card_visa.")
    ] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Retry-safe key (default: a new one each call).")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for COMPLETED, FAILED or COMPENSATED.")] = False,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait at most.")] = 120.0,
    as_json: JsonOpt = False,
) -> None:
    """Buy tokens (or usd credit). With --wait, exits 0 only when the purchase is COMPLETED."""
    key = idempotency_key or str(uuid.uuid4())
    if len(key) > 100:
        raise typer.BadParameter("at most 100 characters", param_hint="--idempotency-key")
    body: dict[str, Any] = {"amount": amount, "unit": "usd" if usd_ else "tokens"}
    if pool:
        body["pool_id"] = pool
    if payment_method:
        body["payment_method"] = payment_method
    client = api(ctx)
    started = client.post("/v1/purchases", body, headers={"Idempotency-Key": key})
    if not wait:
        show(
            started,
            as_json,
            lambda d: f"Purchase {d.get('id')}: {d.get('status')} (price {usd(d.get('price_usd_micros'))})",
        )
        return
    final = wait_for(client, str(started["id"]), timeout)
    show(final, as_json, render_purchase)
    if final.get("status") != "COMPLETED":
        err_console.print(
            f"purchase {final.get('status')}: {text(final.get('reason'))}", soft_wrap=True, markup=False
        )
        raise typer.Exit(1)


def purchases(
    ctx: typer.Context,
    purchase_id: Annotated[str | None, typer.Argument(help="Show this purchase with its steps.")] = None,
    status: Annotated[str | None, typer.Option(help="Only purchases in this status.")] = None,
    user: Annotated[str | None, typer.Option(help="Admins: one user's purchases (implies --all).")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Admins: every purchase of the org.")] = False,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 100,
    as_json: JsonOpt = False,
) -> None:
    """Your purchases, newest first (an org's with --all), or one purchase with its steps."""
    client = api(ctx)
    if purchase_id:
        show(client.get(f"/v1/purchases/{seg(purchase_id)}"), as_json, render_purchase)
        return
    if all_ or user:
        data = client.get("/v1/admin/purchases", status=status, user_id=user, limit=limit)
    else:
        data = client.get("/v1/purchases", status=status, limit=limit)
    show(data, as_json, lambda d: list_table(d.get("data", []), PURCHASE_COLUMNS, title="Purchases"))


def register(root: typer.Typer) -> None:
    root.command()(buy)
    root.command()(purchases)
