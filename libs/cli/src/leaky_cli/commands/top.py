"""`lt top`: a live view of spend, requests, pools, freezes and anomalies, refreshed every few seconds.

`snapshot` does the reading (each section on its own: a section the caller may not see shows why);
`render` is pure, so one frame can be tested (`--once`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.console import Group, RenderableType
from rich.live import Live
from rich.panel import Panel

from leaky_cli.client import ApiClient, ApiError
from leaky_cli.commands.me import ANOMALY_COLUMNS, amount
from leaky_cli.commands.sessions import FREEZE_COLUMNS
from leaky_cli.context import api
from leaky_cli.output import Column, console, emit_json, list_table, tokens, usd

__all__ = ["register", "render", "snapshot", "sparkline"]

_BARS = "▁▂▃▄▅▆▇█"


class Scope(StrEnum):
    user = "user"
    org = "org"


def sparkline(values: list[int]) -> str:
    """Values as block characters scaled to the largest (all-zero: the lowest block)."""
    top = max(values, default=0)
    if top <= 0:
        return _BARS[0] * len(values)
    return "".join(_BARS[min(len(_BARS) - 1, v * (len(_BARS) - 1) // top)] for v in values)


def _section(read: Callable[[], Any]) -> Any:
    try:
        return read()
    except ApiError as exc:
        if exc.status in (0, 401):
            raise
        return {"error": exc.message, "status": exc.status}


def snapshot(client: ApiClient, scope: Scope = Scope.user) -> dict[str, Any]:
    """Everything one frame shows, as the API answered it (errors per section)."""
    return {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "quota": _section(lambda: client.get("/v1/users/me/quota")),
        "usage": _section(lambda: client.get("/v1/analytics/usage", days=1)),
        "timeseries": _section(
            lambda: client.get("/v1/analytics/timeseries", scope=scope.value, grain="minute", hours=1)
        ),
        "freezes": _section(lambda: client.get("/v1/admin/freezes")),
        "anomalies": _section(lambda: client.get("/v1/analytics/anomalies", limit=10)),
    }


def _failed(part: Mapping[str, Any], what: str) -> RenderableType | None:
    if "error" in part and isinstance(part["error"], str):
        return f"[dim]{what}: not shown ({part['error']})[/dim]"
    return None


def _spend(usage: Mapping[str, Any], series: Mapping[str, Any]) -> RenderableType:
    lines = [
        _failed(usage, "usage")
        or (
            f"today: [bold]{usd(usage.get('cost_usd_micros'))}[/bold] · {tokens(usage.get('total_requests'))} requests · "
            f"{tokens(usage.get('total_tokens'))} tokens"
        )
    ]
    failed = _failed(series, "requests")
    if failed:
        lines.append(failed)
    else:
        points = series.get("data", [])
        per_minute = [int(p.get("requests", 0)) for p in points]
        spent = sum(int(p.get("cost_usd_micros", 0)) for p in points)
        lines.append(
            f"last hour ({series.get('scope')}): {sum(per_minute):,} requests, {usd(spent)}  "
            f"[cyan]{sparkline(per_minute[-60:])}[/cyan]"
        )
    return Group(*lines)


def _pools(quota: Mapping[str, Any]) -> RenderableType:
    columns: list[Column] = [
        ("pool", lambda p: f"{p.get('owner_type')} {p.get('unit')}"),
        ("used", lambda p: amount(p, "used")),
        ("reserved", lambda p: amount(p, "reserved")),
        ("remaining", lambda p: amount(p, "remaining")),
        ("of", lambda p: amount(p, "limit")),
        ("resets", "resets_at"),
    ]
    return _failed(quota, "pools") or list_table(quota.get("pools", []), columns)


def render(snap: Mapping[str, Any], interval: float | None = None) -> RenderableType:
    """One frame."""
    freezes, anomalies = snap["freezes"], snap["anomalies"]
    refresh = f" · every {interval:g}s, Ctrl-C to quit" if interval else ""
    return Group(
        Panel(
            _spend(snap["usage"], snap["timeseries"]),
            title=f"lt top · {snap['at']}{refresh}",
            title_align="left",
        ),
        Panel(_pools(snap["quota"]), title="Pools", title_align="left"),
        Panel(
            _failed(freezes, "freezes") or list_table(freezes.get("data", []), FREEZE_COLUMNS[:4]),
            title="Freezes",
            title_align="left",
        ),
        Panel(
            _failed(anomalies, "anomalies") or list_table(anomalies.get("data", []), ANOMALY_COLUMNS[:6]),
            title="Anomalies",
            title_align="left",
        ),
    )


def top(
    ctx: typer.Context,
    interval: Annotated[
        float, typer.Option("--interval", "-n", min=1, max=3600, help="Seconds between refreshes.")
    ] = 5.0,
    scope: Annotated[Scope, typer.Option(help="Requests of you or (admins) your org.")] = Scope.user,
    once: Annotated[bool, typer.Option("--once", help="Print one frame and exit.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="With --once: the frame's API answers as JSON.")
    ] = False,
) -> None:
    """A live view of spend, requests, pools, freezes and anomalies."""
    client = api(ctx)
    if once:
        snap = snapshot(client, scope)
        if as_json:
            emit_json(snap)
        else:
            console.print(render(snap))
        return
    try:
        with Live(render(snapshot(client, scope), interval), console=console, auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                live.update(render(snapshot(client, scope), interval), refresh=True)
    except KeyboardInterrupt:
        return


def register(root: typer.Typer) -> None:
    root.command()(top)
