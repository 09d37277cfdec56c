"""How answers are shown: the API's JSON as is (`--json`), else Rich tables. Pure formatting, no I/O except
writing to the consoles."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from rich.console import Console, RenderableType
from rich.table import Table
from rich.text import Text

__all__ = [
    "Column",
    "console",
    "emit_json",
    "err_console",
    "follow_terminal_width",
    "list_table",
    "record_table",
    "show",
    "text",
    "tokens",
    "usd",
]

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def follow_terminal_width() -> None:
    """Re-read `COLUMNS` (Rich reads it once, when the consoles are made): each run of the CLI in one process,
    say from a test's runner, gets the width its environment names, else the terminal's."""
    columns = os.environ.get("COLUMNS", "")
    for each in (console, err_console):
        each.width = int(columns) if columns.isdigit() and int(columns) > 0 else None  # type: ignore[assignment]


Column = tuple[str, str | Callable[[Mapping[str, Any]], str]]


def emit_json(data: Any) -> None:
    """The API's JSON body, unchanged (indented for reading)."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def usd(micros: int | None) -> str:
    """Micro-dollars as dollars, exactly (integer arithmetic): 1234567 -> "$1.234567"."""
    if micros is None:
        return "-"
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(int(micros)), 1_000_000)
    return f"{sign}${whole:,}.{frac:06d}"


def tokens(n: int | None) -> str:
    return "-" if n is None else f"{int(n):,}"


def text(value: Any) -> str:
    """A cell: `-` for nothing, lists joined, booleans as yes/no, the rest as str."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(text(v) for v in value) or "-"
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


def _cell(row: Mapping[str, Any], getter: str | Callable[[Mapping[str, Any]], str]) -> Text:
    # Text, not str: a value from the API is never read as Rich markup.
    return Text(getter(row) if callable(getter) else text(row.get(getter)))


def list_table(
    rows: Iterable[Mapping[str, Any]], columns: Sequence[Column], title: str | None = None
) -> RenderableType:
    """One row per item; an empty list says so instead of drawing an empty table."""
    items = list(rows)
    if not items:
        return f"[dim]{title + ': ' if title else ''}nothing to show[/dim]"
    table = Table(title=title, title_justify="left", header_style="bold")
    for header, _ in columns:
        table.add_column(header, overflow="fold")
    for row in items:
        table.add_row(*(_cell(row, getter) for _, getter in columns))
    return table


def record_table(
    record: Mapping[str, Any], fields: Sequence[Column] | None = None, title: str | None = None
) -> Table:
    """One item as field/value lines (every field when none are named)."""
    table = Table(title=title, title_justify="left", show_header=False, box=None, padding=(0, 2, 0, 0))
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for name, getter in fields or [(key, key) for key in record]:
        table.add_row(name, _cell(record, getter))
    return table


def show(data: Any, as_json: bool, render: Callable[[Any], RenderableType]) -> None:
    if as_json:
        emit_json(data)
    else:
        console.print(render(data))
