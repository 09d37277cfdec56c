"""`lt admin pools|thresholds|channels|deliveries ...`: pools, detector thresholds and notifications."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from leaky_cli.client import seg
from leaky_cli.commands.me import POOL_COLUMNS
from leaky_cli.context import JsonOpt, api
from leaky_cli.output import Column, list_table, record_table, show

__all__ = ["parse_pairs", "register"]

pools = typer.Typer(help="Pools: list, show, create, update, delete.", no_args_is_help=True)
thresholds = typer.Typer(help="Anomaly detector thresholds: show, set, clear.", no_args_is_help=True)
channels = typer.Typer(help="Alert channels: list, create, delete, test.", no_args_is_help=True)
deliveries = typer.Typer(help="Notification deliveries: list, retry.", no_args_is_help=True)

CHANNEL_COLUMNS: list[Column] = [
    ("id", "id"),
    ("channel", "channel"),
    ("name", "name"),
    ("url", "url"),
    ("events", "event_types"),
    ("min severity", "min_severity"),
    ("secrets", "secret_names"),
    ("active", "active"),
]
DELIVERY_COLUMNS: list[Column] = [
    ("id", "id"),
    ("event", "event_type"),
    ("channel", "channel"),
    ("severity", "severity"),
    ("status", "status"),
    ("attempts", "attempts"),
    ("last error", "last_error"),
    ("created", "created_at"),
]
PoolArg = Annotated[str, typer.Argument(help="The pool's id.")]
OrgOpt = Annotated[str | None, typer.Option("--org", help="Your org's id (none: the global level).")]


def parse_pairs(pairs: list[str] | None, *, numbers: bool = False) -> dict[str, Any]:
    """`KEY=VALUE` arguments as a dict (values as JSON numbers when `numbers`)."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"expected KEY=VALUE, got {pair!r}")
        if numbers:
            try:
                parsed = json.loads(value)
            except ValueError:
                parsed = None
            if isinstance(parsed, bool) or not isinstance(parsed, int | float):
                raise typer.BadParameter(f"{key}: expected a number, got {value!r}")
            out[key.strip()] = parsed
        else:
            out[key.strip()] = value
    return out


def _pool_table(data: Any) -> Any:
    return record_table(data, POOL_COLUMNS)


@pools.command("list")
def pools_list(
    ctx: typer.Context,
    owner_type: Annotated[str | None, typer.Option(help="user, team, org or key.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Pools of your org."""
    data = api(ctx).get("/v1/admin/pools", owner_type=owner_type)
    show(data, as_json, lambda d: list_table(d.get("data", []), POOL_COLUMNS))


@pools.command("show")
def pools_show(ctx: typer.Context, pool_id: PoolArg, as_json: JsonOpt = False) -> None:
    """One pool."""
    show(api(ctx).get(f"/v1/admin/pools/{seg(pool_id)}"), as_json, _pool_table)


@pools.command("create")
def pools_create(
    ctx: typer.Context,
    owner_type: Annotated[str, typer.Option(help="user, team, org or key.")],
    limit: Annotated[int, typer.Option(min=0, help="Size (tokens, or micro-dollars for usd).")],
    owner_id: Annotated[str | None, typer.Option(help="The owner's id (org: yours by default).")] = None,
    unit: Annotated[str, typer.Option(help="tokens or usd.")] = "tokens",
    period: Annotated[str, typer.Option(help="none, daily, weekly, monthly...")] = "none",
    provider: Annotated[str | None, typer.Option()] = None,
    model: Annotated[str | None, typer.Option(help="Model or pattern the pool is for.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a pool."""
    body: dict[str, Any] = {"owner_type": owner_type, "unit": unit, "limit": limit, "period": period}
    body.update({k: v for k, v in {"owner_id": owner_id, "provider": provider, "model": model}.items() if v})
    show(api(ctx).post("/v1/admin/pools", body), as_json, _pool_table)


@pools.command("update")
def pools_update(
    ctx: typer.Context,
    pool_id: PoolArg,
    limit: Annotated[int | None, typer.Option(min=0)] = None,
    period: Annotated[str | None, typer.Option()] = None,
    as_json: JsonOpt = False,
) -> None:
    """Change a pool's limit or period."""
    body = {k: v for k, v in {"limit": limit, "period": period}.items() if v is not None}
    if not body:
        raise typer.BadParameter("nothing to change: give --limit and/or --period")
    show(api(ctx).patch(f"/v1/admin/pools/{seg(pool_id)}", body), as_json, _pool_table)


@pools.command("delete")
def pools_delete(ctx: typer.Context, pool_id: PoolArg, as_json: JsonOpt = False) -> None:
    """Delete a pool that was never charged."""
    show(
        api(ctx).delete(f"/v1/admin/pools/{seg(pool_id)}"), as_json, lambda d: f"Pool {d.get('id')} deleted."
    )


def _thresholds_view(data: Any) -> Any:
    return record_table(
        data.get("effective", {}), title=f"Effective thresholds (overrides: {data.get('overrides')})"
    )


@thresholds.command("show")
def thresholds_show(ctx: typer.Context, org: OrgOpt = None, as_json: JsonOpt = False) -> None:
    """Thresholds in force and the overrides set at that level."""
    show(api(ctx).get("/v1/analytics/thresholds", org_id=org), as_json, _thresholds_view)


@thresholds.command("set")
def thresholds_set(
    ctx: typer.Context,
    pairs: Annotated[list[str], typer.Argument(help="NAME=NUMBER, e.g. loop_consecutive=5.")],
    org: OrgOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Replace the overrides (your org's with --org; global ones need a platform admin)."""
    body = parse_pairs(pairs, numbers=True)
    show(
        api(ctx).request("PUT", "/v1/analytics/thresholds", params={"org_id": org}, json=body),
        as_json,
        _thresholds_view,
    )


@thresholds.command("clear")
def thresholds_clear(ctx: typer.Context, org: OrgOpt = None, as_json: JsonOpt = False) -> None:
    """Remove every override at that level."""
    show(
        api(ctx).request("PUT", "/v1/analytics/thresholds", params={"org_id": org}, json={}),
        as_json,
        _thresholds_view,
    )


@channels.command("list")
def channels_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Alert channels (secrets are never shown, only their names)."""
    data = api(ctx).get("/v1/admin/notifications/channels")
    show(data, as_json, lambda d: list_table(d.get("data", []), CHANNEL_COLUMNS))


@channels.command("create")
def channels_create(
    ctx: typer.Context,
    channel: Annotated[str, typer.Argument(help="webhook, slack, teams, telegram, whatsapp or email.")],
    name: Annotated[str | None, typer.Option()] = None,
    url: Annotated[str | None, typer.Option(help="Where to send (webhook, slack, teams).")] = None,
    config: Annotated[list[str] | None, typer.Option(help="KEY=VALUE setting (repeat).")] = None,
    secret: Annotated[
        list[str] | None, typer.Option(help="KEY=VALUE secret (repeat; stored sealed).")
    ] = None,
    event_type: Annotated[list[str] | None, typer.Option(help="Only these events (repeat).")] = None,
    min_severity: Annotated[str | None, typer.Option(help="info, warning, error or critical.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an alert channel for your org."""
    body: dict[str, Any] = {"channel": channel, "config": parse_pairs(config), "secrets": parse_pairs(secret)}
    body.update(
        {
            k: v
            for k, v in {
                "name": name,
                "url": url,
                "event_types": event_type or None,
                "min_severity": min_severity,
            }.items()
            if v is not None
        }
    )
    show(
        api(ctx).post("/v1/admin/notifications/channels", body),
        as_json,
        lambda d: record_table(d, CHANNEL_COLUMNS),
    )


@channels.command("delete")
def channels_delete(ctx: typer.Context, channel_id: Annotated[str, typer.Argument()]) -> None:
    """Delete an alert channel."""
    api(ctx).delete(f"/v1/admin/notifications/channels/{seg(channel_id)}")
    typer.echo(f"Channel {channel_id} deleted.")


@channels.command("test")
def channels_test(
    ctx: typer.Context, channel_id: Annotated[str, typer.Argument()], as_json: JsonOpt = False
) -> None:
    """Send a test notification through a channel."""
    show(api(ctx).post(f"/v1/admin/notifications/channels/{seg(channel_id)}/test"), as_json, record_table)


@deliveries.command("list")
def deliveries_list(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option(help="pending, delivered or dead.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Notification deliveries, newest first."""
    data = api(ctx).get("/v1/admin/notifications/deliveries", status=status)
    show(data, as_json, lambda d: list_table(d.get("data", []), DELIVERY_COLUMNS))


@deliveries.command("retry")
def deliveries_retry(
    ctx: typer.Context, delivery_id: Annotated[str, typer.Argument()], as_json: JsonOpt = False
) -> None:
    """Retry a delivery now."""
    data = api(ctx).post(f"/v1/admin/notifications/deliveries/{seg(delivery_id)}/retry")
    show(data, as_json, lambda d: record_table(d, DELIVERY_COLUMNS))


def register(admin: typer.Typer) -> None:
    admin.add_typer(pools, name="pools")
    admin.add_typer(thresholds, name="thresholds")
    admin.add_typer(channels, name="channels")
    admin.add_typer(deliveries, name="deliveries")
