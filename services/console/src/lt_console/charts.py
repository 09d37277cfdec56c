"""Charts as inline SVG, made on the server: no chart library, nothing for the browser to run."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html import escape
from typing import Any

PALETTE = ("#2563eb", "#db2777", "#16a34a", "#ea580c", "#7c3aed", "#0891b2")


@dataclass(frozen=True, slots=True)
class Series:
    """One line: a label and its values, one per bucket."""

    label: str
    values: list[float]


def hourly(
    points: list[dict[str, Any]], field: str, hours: int, now: datetime
) -> tuple[list[str], list[float]]:
    """The last `hours` whole hours up to `now` (UTC labels) and `field` of the points in each; 0 where none."""
    end = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    slots = [end - timedelta(hours=hours - 1 - i) for i in range(hours)]
    by_hour: dict[datetime, float] = {}
    for point in points:
        try:
            at = (
                datetime.fromisoformat(str(point["bucket"]))
                .astimezone(UTC)
                .replace(minute=0, second=0, microsecond=0)
            )
        except (KeyError, ValueError):
            continue
        by_hour[at] = by_hour.get(at, 0.0) + float(point.get(field) or 0)
    return [s.strftime("%d %b %H:00") for s in slots], [by_hour.get(s, 0.0) for s in slots]


def line_chart(buckets: list[str], series: list[Series], *, title: str, unit: str = "") -> str:
    """An accessible SVG line chart (role=img with a title) of `series` over `buckets`; scales to its box."""
    width, height, pad_l, pad_b, pad_t = 640, 240, 84, 28, 12
    top = max([v for s in series for v in s.values] + [0.0])
    top = top if top > 0 else 1.0
    plot_w, plot_h = width - pad_l - 8, height - pad_b - pad_t
    n = max(len(buckets) - 1, 1)
    out = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">'
        f"<title>{escape(title)}</title>"
    ]
    for i in range(5):
        y = pad_t + plot_h * i / 4
        label = top * (4 - i) / 4
        out.append(f'<line x1="{pad_l}" y1="{y:.1f}" x2="{width - 8}" y2="{y:.1f}" class="grid"/>')
        out.append(
            f'<text x="{pad_l - 6}" y="{y + 4:.1f}" text-anchor="end" class="axis">{unit}{_short(label)}</text>'
        )
    for idx in (0, len(buckets) - 1):
        if 0 <= idx < len(buckets):
            x = pad_l + plot_w * idx / n
            anchor = "start" if idx == 0 else "end"
            out.append(
                f'<text x="{x:.1f}" y="{height - 8}" text-anchor="{anchor}" class="axis">{escape(buckets[idx])}</text>'
            )
    for k, s in enumerate(series):
        points = " ".join(
            f"{pad_l + plot_w * i / n:.1f},{pad_t + plot_h * (1 - v / top):.1f}"
            for i, v in enumerate(s.values)
        )
        out.append(
            f'<polyline fill="none" stroke="{PALETTE[k % len(PALETTE)]}" stroke-width="2" points="{points}"/>'
        )
    out.append("</svg>")
    return "".join(out)


def _short(value: float) -> str:
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.1f}{suffix}"
    if not value:
        return "0"
    # Small amounts (fractions of a cent) keep their first digits, never in scientific notation.
    decimals = 2 if abs(value) >= 0.01 else 6
    return f"{value:.{decimals}f}".rstrip("0").rstrip(".")
