"""Per-day charts as server-rendered SVG: no script, readable by a screen reader (title, description, and a
title on every bar), and always shown next to a table holding the same numbers."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from markupsafe import Markup, escape

WIDTH = 640
HEIGHT = 200
MARGIN_LEFT = 48
MARGIN_BOTTOM = 28
MARGIN_TOP = 12


def bar_chart(
    chart_id: str,
    title: str,
    description: str,
    labels: Sequence[str],
    values: Sequence[float | None],
    show: Callable[[float], str] = lambda v: f"{v:g}",
) -> Markup:
    """One bar per label; a missing value (no data that day) draws no bar and says "no data"."""
    present = [v for v in values if v is not None]
    top = max(present, default=0.0) or 1.0
    plot_w = WIDTH - MARGIN_LEFT - 8
    plot_h = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM
    slot = plot_w / max(1, len(labels))
    bar_w = max(2.0, slot * 0.7)
    parts = [
        f'<svg class="ins-chart" id="{escape(chart_id)}" role="img" viewBox="0 0 {WIDTH} {HEIGHT}"'
        f' aria-labelledby="{escape(chart_id)}-title {escape(chart_id)}-desc" focusable="false">',
        f'<title id="{escape(chart_id)}-title">{escape(title)}</title>',
        f'<desc id="{escape(chart_id)}-desc">{escape(description)}</desc>',
        f'<line class="ins-axis" x1="{MARGIN_LEFT}" y1="{MARGIN_TOP + plot_h}" x2="{WIDTH - 8}"'
        f' y2="{MARGIN_TOP + plot_h}"/>',
        f'<text class="ins-tick" x="{MARGIN_LEFT - 6}" y="{MARGIN_TOP + 10}" text-anchor="end">'
        f"{escape(show(top) if present else '')}</text>",
        f'<text class="ins-tick" x="{MARGIN_LEFT - 6}" y="{MARGIN_TOP + plot_h}" text-anchor="end">0</text>',
    ]
    # Label every day when they fit, else about ten of them.
    every = max(1, round(len(labels) / 10))
    for n, (label, value) in enumerate(zip(labels, values, strict=True)):
        x = MARGIN_LEFT + n * slot + (slot - bar_w) / 2
        spoken = f"{label}: {show(value) if value is not None else 'no data'}"
        if value is not None:
            height = max(1.0, plot_h * value / top) if value > 0 else 0.0
            parts.append(
                f'<rect class="ins-bar" x="{x:.1f}" y="{MARGIN_TOP + plot_h - height:.1f}" width="{bar_w:.1f}"'
                f' height="{height:.1f}"><title>{escape(spoken)}</title></rect>'
            )
        if n % every == 0:
            parts.append(
                f'<text class="ins-tick" x="{x + bar_w / 2:.1f}" y="{HEIGHT - 8}" text-anchor="middle">'
                f"{escape(label[5:] if len(label) == 10 else label)}</text>"
            )
    parts.append("</svg>")
    return Markup("".join(parts))
