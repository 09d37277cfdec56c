"""Charts as inline SVG, made on the server: no chart library, nothing for the browser to run."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

PALETTE = ("#2563eb", "#db2777", "#16a34a", "#ea580c", "#7c3aed", "#0891b2")


@dataclass(frozen=True, slots=True)
class Series:
    """One line: a label and its values, one per bucket."""

    label: str
    values: list[float]


def line_chart(buckets: list[str], series: list[Series], *, title: str, unit: str = "") -> str:
    """An accessible SVG line chart (role=img with a title) of `series` over `buckets`; scales to its box."""
    width, height, pad_l, pad_b, pad_t = 640, 220, 56, 28, 12
    top = max([v for s in series for v in s.values] + [0.0])
    top = top if top > 0 else 1.0
    plot_w, plot_h = width - pad_l - 8, height - pad_b - pad_t
    n = max(len(buckets) - 1, 1)
    out = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}" '
        f'preserveAspectRatio="none"><title>{escape(title)}</title>'
    ]
    for i in range(5):
        y = pad_t + plot_h * i / 4
        label = top * (4 - i) / 4
        out.append(f'<line x1="{pad_l}" y1="{y:.1f}" x2="{width - 8}" y2="{y:.1f}" class="grid"/>')
        out.append(
            f'<text x="{pad_l - 6}" y="{y + 4:.1f}" text-anchor="end" class="axis">{_short(label)}{unit}</text>'
        )
    for idx in (0, len(buckets) - 1):
        if 0 <= idx < len(buckets):
            x = pad_l + plot_w * idx / n
            anchor = "start" if idx == 0 else "end"
            out.append(
                f'<text x="{x:.1f}" y="{height - 8}" text-anchor="{anchor}" class="axis">{escape(buckets[idx][5:16])}</text>'
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
    return f"{value:.2f}".rstrip("0").rstrip(".") if value else "0"
