"""`lt keys`: your API keys. A new or rotated key is printed once, never again."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import typer
from rich.console import Group, RenderableType

from leaky_cli.client import seg
from leaky_cli.context import JsonOpt, api
from leaky_cli.output import Column, list_table, record_table, show

__all__ = ["KEY_COLUMNS", "app", "register", "render_new_key"]

app = typer.Typer(help="Your API keys: list, create, revoke, rotate.", no_args_is_help=True)

KEY_COLUMNS: list[Column] = [
    ("id", "id"),
    ("name", "name"),
    ("prefix", "key_prefix"),
    ("created", "created_at"),
    ("expires", "expires_at"),
    ("revoked", "revoked_at"),
    ("models", "allowed_models"),
    ("req/period", "rate_limit_requests_per_period"),
    ("tokens/period", "rate_limit_tokens_per_period"),
]


def render_new_key(data: Mapping[str, Any]) -> RenderableType:
    fields = [(h, g) for h, g in KEY_COLUMNS if h not in ("revoked",)]
    if data.get("rotated_from"):
        fields.append(("rotated from", "rotated_from"))
    return Group(
        record_table(data, fields),
        f"\n[bold]API key:[/bold] {data.get('api_key')}",
        "[yellow]Store it now: it is shown only this once.[/yellow]",
    )


@app.command("list")
def list_keys(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Your keys (prefixes only; a key's secret is never shown again after it is made)."""
    show(api(ctx).get("/v1/users/me/keys"), as_json, lambda d: list_table(d.get("data", []), KEY_COLUMNS))


@app.command()
def create(
    ctx: typer.Context,
    name: Annotated[str, typer.Option(help="A label for the key.")] = "",
    expires_in_days: Annotated[int | None, typer.Option(min=1, max=3650)] = None,
    model: Annotated[
        list[str] | None, typer.Option(help="Allowed model (repeat; patterns like gpt-4o*).")
    ] = None,
    priority: Annotated[list[str] | None, typer.Option(help="Allowed priority (repeat).")] = None,
    max_tokens: Annotated[int | None, typer.Option(min=1, help="Token cap of the key.")] = None,
    max_usd_micros: Annotated[int | None, typer.Option(min=1, help="Spend cap in micro-dollars.")] = None,
    cap_period: Annotated[
        str | None, typer.Option(help="Period of the caps (none, daily, monthly...).")
    ] = None,
    rate_limit_requests: Annotated[
        int | None, typer.Option(min=1, help="Requests per bucket period.")
    ] = None,
    rate_limit_tokens: Annotated[int | None, typer.Option(min=1, help="Tokens per bucket period.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a key; its secret is printed once."""
    body: dict[str, Any] = {"name": name}
    optional = {
        "expires_in_days": expires_in_days,
        "allowed_models": model or None,
        "allowed_priorities": priority or None,
        "max_tokens": max_tokens,
        "max_usd_micros": max_usd_micros,
        "cap_period": cap_period,
        "rate_limit_requests_per_period": rate_limit_requests,
        "rate_limit_tokens_per_period": rate_limit_tokens,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    show(api(ctx).post("/v1/users/me/keys", body), as_json, render_new_key)


@app.command()
def revoke(
    ctx: typer.Context, key_id: Annotated[str, typer.Argument(help="The key's id.")], as_json: JsonOpt = False
) -> None:
    """Revoke a key at once."""
    data = api(ctx).delete(f"/v1/users/me/keys/{seg(key_id)}")
    show(data, as_json, lambda d: f"Key {d.get('id')} revoked.")


@app.command()
def rotate(
    ctx: typer.Context, key_id: Annotated[str, typer.Argument(help="The key's id.")], as_json: JsonOpt = False
) -> None:
    """Replace a key by a new one with the same settings (the old one is revoked); the new secret is printed
    once."""
    show(api(ctx).post(f"/v1/users/me/keys/{seg(key_id)}/rotate"), as_json, render_new_key)


@app.command()
def update(
    ctx: typer.Context,
    key_id: Annotated[str, typer.Argument(help="The key's id.")],
    rate_limit_requests: Annotated[int | None, typer.Option(min=1)] = None,
    rate_limit_tokens: Annotated[int | None, typer.Option(min=1)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Change a key's bucket sizes (at most the org's unless you are an admin)."""
    body = {
        k: v
        for k, v in {
            "rate_limit_requests_per_period": rate_limit_requests,
            "rate_limit_tokens_per_period": rate_limit_tokens,
        }.items()
        if v is not None
    }
    if not body:
        raise typer.BadParameter("give --rate-limit-requests and/or --rate-limit-tokens")
    show(api(ctx).patch(f"/v1/users/me/keys/{seg(key_id)}", body), as_json, record_table)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="keys")
